"""Issue 25 #15: configs/release/tiny.yaml is documented for the tiny configs (docs/release.md); its red-team suite
must fit their context. The gate failed with "prompt has 402 tokens; the model's context is 128".
(tests/release/test_release_tiny.py runs that red-team for real on tiny_lora as shipped.)"""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config", ["tiny_lora.yaml", "tiny_full.yaml"])
def test_every_red_team_prompt_of_the_tiny_policy_fits_the_tiny_models(config):
    from zeropoint.models.llm import arch_config
    from zeropoint.models.registry import load_tokenizer
    from zeropoint.recipes import load_config
    from zeropoint.release.policy import load_release_policy
    from zeropoint.safety.runner import suite_probes
    cfg, _ = load_config(REPO / "configs" / "llm" / config)
    pol, _, _ = load_release_policy(REPO / "configs" / "release" / "tiny.yaml")
    ctx = arch_config(cfg.model).max_seq_len
    tok = load_tokenizer(cfg.model.tokenizer)
    probes, settings = suite_probes(pol.redteam.suite)
    need = pol.redteam.max_tokens or settings["max_tokens"]
    too_long = []
    for p in probes:
        ids = tok.encode(p.raw) if p.raw is not None else \
            tok.encode(tok.apply_chat_template(list(p.messages), add_generation_prompt=True))
        if len(ids) + need > ctx:
            too_long.append(f"{p.id}: {len(ids)} + {need} tokens")
    assert not too_long, f"{config} has a context of {ctx}; tiny.yaml's {pol.redteam.suite!r} suite needs more: {too_long}"
