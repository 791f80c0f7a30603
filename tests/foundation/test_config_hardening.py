"""Issue 25 #10 and #11: hostile and nonsense configs are clean errors naming the file and the key - never a hang,
a blow-up or a traceback. Each case runs under the fuzz guard (10 s, 1 GiB)."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.fuzz.guard import failures, run_guarded

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "llm" / "tiny_lora.yaml"


def billion_laughs() -> str:
    lines = ['l0: &l0 "lol"']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    body = TINY.read_text().replace("datasets: [sotu]", "datasets: *l9")
    return "\n".join(lines) + "\n" + body


def _with_nan_override() -> dict:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["model"].setdefault("overrides", {})["rope_theta"] = float("nan")
    return cfg


def hostile_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must mention)."""
    cases = {
        "billion_laughs": (billion_laughs().encode(), "expand"),
        "recipe_list": (b"recipe: [a, b]\n", "recipe"),
        "binary": (bytes(range(256)) * 64, "UTF-8"),
        "latin1": ("recipe: llm_finetune\ndescription: caf\u00e9 cr\u00e8me\n".encode("latin-1"), "UTF-8"),
        "deep_flow": (b"recipe: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested"),
        "deep_block": ("".join(" " * i + f"k{i}:\n" for i in range(1000)).encode(), "nested"),
        "list_8mb": (b"recipe: llm_finetune\nx: [" + b"1, " * (8 << 20 >> 3) + b"1]\n", "at most"),
        "recursive_alias": (b"a: &a [*a]\nrecipe: llm_finetune\n", "alias"),
        "not_a_mapping": (b"- recipe\n- llm_finetune\n", "mapping"),
        "huge_int": (b"recipe: llm_finetune\nx: " + b"9" * 5000 + b"\n", "digits"),
        "nan_in_untyped_dict": (yaml.safe_dump(_with_nan_override()).encode(), "model.overrides.rope_theta"),
    }
    out = {}
    for name, (data, want) in cases.items():
        p = d / f"{name}.yaml"
        p.write_bytes(data)
        out[name] = (p, want)
    return out


def test_hostile_yaml_configs_are_clean_errors(tmp_path):
    from zeropoint.recipes import load_config
    files = hostile_files(tmp_path)
    names = list(files)
    outcomes = run_guarded(lambda name: load_config(files[name][0]), names)
    assert not failures(outcomes, names), failures(outcomes, names)
    for o in outcomes:
        path, want = files[names[o.index]]
        assert o.kind == "clean" and str(path) in o.detail and want in o.detail, (names[o.index], o.detail)


def _model_info(args: list[str]):
    from typer.testing import CliRunner
    from zeropoint.cli.main import app
    r = CliRunner().invoke(app, ["model", "info", str(TINY), "--json", *args])
    return r.exit_code, r.output, repr(r.exception) if r.exception and not isinstance(r.exception, SystemExit) else None


def test_model_info_refuses_nonsense_numbers_naming_the_key():
    cases = [(["--set", "data.seq_len=-32"], "data.seq_len"), (["--set", "train.steps=-5"], "train.steps"),
             (["--set", "train.lr=.nan"], "train.lr"), (["--set", "train.lr=nan"], "train.lr"),
             (["--set", "train.micro_batch_size=1e12"], "train.micro_batch_size"),
             (["--set", "train.micro_batch_size=1000000000000"], "train.micro_batch_size"),
             (["--set", "train.micro_batch_size=0"], "train.micro_batch_size"),
             (["--set", "model.overrides.n_layers=1000000000"], "n_layers"),
             (["--set", "model.overrides.n_heads=0"], "n_heads"), (["--set", "recipe=[a, b]"], "recipe")]
    import zeropoint.cli.main  # noqa: F401  imported once here, inherited by the guard's forked child
    import zeropoint.recipes.llm_finetune  # noqa: F401
    outcomes = run_guarded(lambda c: _model_info(c[0]), cases + [([], None)])
    assert not failures(outcomes), failures(outcomes)
    *bad, ok = outcomes
    for o in bad:
        code, output, exc = o.detail
        args, key = cases[o.index]
        assert code == 2 and exc is None and key in output and "Traceback" not in output, (args, code, output, exc)
    assert ok.kind == "ok" and ok.detail[0] == 0, ok.detail


SHARED_TRAIN_NONSENSE = {"micro_batch_size": 0, "grad_accum": 0, "lr": -1, "warmup_steps": -1, "min_lr_ratio": 2,
                         "weight_decay": -1, "betas": (0.9, 1.5), "eps": 0, "grad_clip": float("nan"), "loss_scale": 0,
                         "growth_interval": 0, "ckpt_every": -1, "keep_ckpts": 0, "seed": -1}
OWN_TRAIN_NONSENSE = {"steps": 0, "epochs": 0, "eval_every": -1, "label_smoothing": 1}


def test_every_recipes_train_section_keeps_the_shared_ranges():
    """The shared TrainSection's number types hold in every recipe's `train:` section, including the fields a
    recipe redeclares with its own default (a redeclared annotation replaces the base one, range and all)."""
    import pytest
    from pydantic import ValidationError

    from zeropoint.recipes import RECIPES
    for recipe, (cfg_cls, _) in RECIPES.items():
        train = cfg_cls.model_fields["train"].annotation
        train()   # the defaults are valid
        nonsense = SHARED_TRAIN_NONSENSE | {k: v for k, v in OWN_TRAIN_NONSENSE.items() if k in train.model_fields}
        for key, value in nonsense.items():
            with pytest.raises(ValidationError, match=key):
                train(**{key: value})
