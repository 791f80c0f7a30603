"""Foundation acceptance on real compute commands: mocks refused, bad configs refused, nothing written."""

import pytest

from tests.helpers import REPO, zpctl

TINY = REPO / "configs" / "llm" / "tiny_full.yaml"


def _runs(home):
    d = home / "runs"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("args", [
    ("train", TINY),
    ("generate", "smollm2-135m", "--prompt", "hi", "--max-tokens", "1"),
])
def test_compute_commands_refuse_mock_flag(zp_home, args):
    r = zpctl(*args, env={"ZP_MOCK": "1"})
    assert r.returncode != 0
    assert "ZP_MOCK" in r.stderr and "--allow-simulated" in r.stderr
    assert _runs(zp_home) == []


def test_train_refuses_simulated_device(zp_home):
    r = zpctl("train", TINY, env={"DEV": "NULL"})
    assert r.returncode != 0 and "NULL" in r.stderr and "simulated" in r.stderr
    assert _runs(zp_home) == []


def test_misspelt_key_names_key_and_writes_nothing(zp_home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("warmup_steps", "warmup_stpes"))
    r = zpctl("train", bad)
    assert r.returncode == 2
    assert "train.warmup_stpes" in r.stderr and "did you mean 'warmup_steps'" in r.stderr and str(bad) in r.stderr
    assert _runs(zp_home) == []
    r = zpctl("train", TINY, "--set", "train.stepz=3")
    assert r.returncode == 2 and "train.stepz" in r.stderr
    assert _runs(zp_home) == []


def test_config_show_resolves_overrides():
    r = zpctl("config", "show", TINY, "--set", "train.steps=5")
    assert r.returncode == 0 and "steps: 5" in r.stdout and "# sha256:" in r.stdout
