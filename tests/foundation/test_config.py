from typing import Literal

import pytest

from zeropoint.config import StrictModel, apply_overrides, config_hash, validate
from zeropoint.errors import ConfigError


class Optim(StrictModel):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


class Demo(StrictModel):
    recipe: Literal["demo"] = "demo"
    steps: int
    optim: Optim = Optim()


def test_unknown_key_named_with_hint():
    with pytest.raises(ConfigError) as e:
        validate(Demo, {"steps": 3, "optim": {"lrr": 0.1}}, "cfg.yaml")
    msg = str(e.value)
    assert "cfg.yaml" in msg and "optim.lrr" in msg and "did you mean 'lr'" in msg


def test_wrong_type_named():
    with pytest.raises(ConfigError, match=r"steps: .*'many'"):
        validate(Demo, {"steps": "many"}, "cfg.yaml")


def test_missing_key_named():
    with pytest.raises(ConfigError, match="missing required key 'steps'"):
        validate(Demo, {}, "cfg.yaml")


def test_overrides_typed_and_checked():
    raw = apply_overrides({"steps": 3}, ["optim.lr=3e-4", "steps=7"])
    cfg = validate(Demo, raw)
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.steps == 7
    with pytest.raises(ConfigError, match="optim.nope"):
        validate(Demo, apply_overrides({"steps": 3}, ["optim.nope=1"]))
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["steps"])


def test_hash_changes_with_content():
    a, b = Demo(steps=1), Demo(steps=2)
    assert config_hash(a) == config_hash(Demo(steps=1)) != config_hash(b)
