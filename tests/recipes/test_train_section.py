"""The shared `train:` section: every engine setting is reachable from each recipe's YAML, one vocabulary across
recipes, and the old spellings still load for one release with a deprecation message."""
from dataclasses import fields

import pytest

from zeropoint.config import config_dict
from zeropoint.engine import EngineConfig
from zeropoint.engine.train_section import TrainSection
from zeropoint.recipes import RECIPES, load_config

from tests.helpers import REPO

YAMLS = {"llm_finetune": "configs/llm/tiny_lora.yaml", "vit_classify": "configs/vision/vit-micro_digits.yaml",
         "clip_contrastive": "configs/vision/clip-tiny_emoji.yaml", "vlm_finetune": "configs/vlm/tiny_emoji.yaml"}
# a value unlike every recipe's default for each EngineConfig field but total_steps (which steps/epochs set)
SETTINGS = {"lr": 0.0123, "warmup_steps": 7, "min_lr_ratio": 0.33, "weight_decay": 0.011, "betas": [0.8, 0.95],
            "eps": 1e-6, "grad_clip": 0.25, "grad_accum": 3, "precision": "fp16", "loss_scale": 1024.0,
            "growth_interval": 50, "jit": False, "devices": 2, "shard_optimizer": True}


def test_the_settings_cover_every_engine_field():
    assert set(SETTINGS) == {f.name for f in fields(EngineConfig)} - {"total_steps"}
    assert set(SETTINGS) <= set(TrainSection.model_fields)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_engine_setting_is_set_from_the_recipe_yaml(recipe):
    assert set(YAMLS) == set(RECIPES)
    cfg, _ = load_config(REPO / YAMLS[recipe], [f"train.{k}={v}" for k, v in SETTINGS.items()])
    assert isinstance(cfg.train, TrainSection)
    ecfg = cfg.train.engine_config(total_steps=11)
    for k, v in SETTINGS.items():
        got = getattr(ecfg, k)
        assert (list(got) if k == "betas" else got) == v, (recipe, k, got)
    assert ecfg.total_steps == 11


def test_one_vocabulary_across_recipes():
    for recipe, path in YAMLS.items():
        cfg, _ = load_config(REPO / path)
        assert isinstance(cfg.data.datasets, list) and cfg.data.datasets, recipe
        assert {"micro_batch_size", "grad_accum"} <= set(type(cfg.train).model_fields), recipe
        assert ("steps" in type(cfg.train).model_fields) != ("epochs" in type(cfg.train).model_fields), recipe


def test_old_spellings_load_with_a_deprecation_message_and_are_stored_in_the_new_ones(tmp_path):
    old = tmp_path / "old.yaml"      # a clip config as written before the vocabulary was unified
    old.write_text("recipe: clip_contrastive\nmodel: {config: clip-micro, vision: {depth: 1}}\n"
                   "data: {dataset: emoji-mini, format: caption_jsonl}\ntrain: {epochs: 1, batch_size: 8}\n")
    with pytest.warns(FutureWarning) as got:
        cfg, _ = load_config(old)
    msgs = " | ".join(str(w.message) for w in got)
    for old, new in (("data.dataset", "data.datasets"), ("train.batch_size", "train.micro_batch_size"),
                     ("model.vision", "model.overrides.vision")):
        assert f"config key {old} is deprecated; write {new}" in msgs
    d = config_dict(cfg)
    assert d["data"]["datasets"] == ["emoji-mini"] and d["train"]["micro_batch_size"] == 8
    assert d["model"]["overrides"] == {"vision": {"depth": 1}}
    assert "dataset" not in d["data"] and "batch_size" not in d["train"] and "vision" not in d["model"]


def test_old_and_new_spelling_together_is_an_error():
    from zeropoint.errors import ConfigError
    with pytest.raises(ConfigError, match="same setting"):
        load_config(REPO / YAMLS["vit_classify"], ["train.batch_size=8"])
