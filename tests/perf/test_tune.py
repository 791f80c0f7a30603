"""`zpctl tune` on a very small model: the record says what was searched, what was kept and why, and is reused."""
import json

import pytest
from typer.testing import CliRunner

from zeropoint.cli.main import app

TINY = """recipe: llm_finetune
model: {config: tiny-untied, weights: null, tokenizer: bytes,
        overrides: {dim: 64, n_layers: 1, n_heads: 2, n_kv_heads: 1, hidden_dim: 128, vocab_size: 257, max_seq_len: 32}}
method: full
data: {datasets: [none], seq_len: 32}
train: {steps: 10, micro_batch_size: 4, grad_accum: 1, lr: 1.0e-2, warmup_steps: 0, precision: fp32, grad_clip: 1.0, seed: 0}
"""


@pytest.mark.slow
def test_tune_record_bounded_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    args = ["tune", str(cfg), "--budget", "10", "--kernel-timeout", "8", "--coverage", "0.3", "--steps", "1", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["searched_now"] and rec["kernels_in_step"] > 10 and 1 <= rec["searched"] == len(rec["kernels"])
    assert rec["search_s"] < 10 + 8 + 10                      # the budget and the per-kernel timeout hold
    shares = [r["share_of_kernel_time"] for r in rec["kernels"]]
    assert shares == sorted(shares, reverse=True)               # heaviest first
    for r in rec["kernels"]:
        assert r["calls_per_step"] >= 1 and r["default_us"] > 0 and r["search_s"] <= 8 + 5
        assert r["kept"] == (r.get("speedup") is not None and r["speedup"] >= 1.05), r
        assert r["kept"] or r["why_not_kept"]
    assert rec["kept"] == len(list((tmp_path / "cache" / "tuned").glob("*/*/manifest.json")))
    assert rec["step"]["untuned_tokens_per_s"] > 0 and rec["step"]["tuned_tokens_per_s"] > 0
    assert json.loads((tmp_path / "cache" / "tune" / f"{rec['key']}.json").read_text())["kernels"] == rec["kernels"]
    again = json.loads(CliRunner().invoke(app, args).stdout)   # a record for this machine: no second search
    assert again["searched_now"] is False and again["kernels"] == rec["kernels"]
