"""zpctl bench end to end on a very small model: both frameworks, same weights, same losses, a ratio."""
import json

import pytest
from typer.testing import CliRunner

from zeropoint.cli.main import app

TINY = """recipe: llm_finetune
model: {config: tiny-untied, weights: null, tokenizer: bytes,
        overrides: {dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 1, hidden_dim: 64, vocab_size: 257, max_seq_len: 16}}
method: %s
lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj]}
data: {datasets: [none], seq_len: 8}
train: {steps: 10, micro_batch_size: 2, grad_accum: 2, lr: 1.0e-2, warmup_steps: 0, precision: fp32, grad_clip: 1.0,
        weight_decay: 0.1, seed: 0}
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_bench_compare_torch_same_model(tmp_path, monkeypatch, zp_home, method):
    pytest.importorskip("torch")
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    import zeropoint.perf.peak as P
    monkeypatch.setattr(P, "calibrate_cpu", lambda: 1e9)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY % method)
    threads = ["--torch-threads", "1"] if method == "full" else []
    startup = ["--startup"] if method == "lora" else []
    res = CliRunner().invoke(app, ["bench", str(cfg), "--compare", "torch", "--steps", "1", "--repeats", "2", "--json",
                                   *threads, *startup])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    if threads:
        assert rec["torch"]["threads"] == 1
    # same weights, same batches, same AdamW (clipping, decoupled decay, accumulation): the loss curves agree
    tg, th = rec["tinygrad"]["losses"], rec["torch"]["losses"]
    assert len(tg) == len(th) == 4
    assert rec["first_loss"]["abs_diff"] < 1e-4
    assert max(abs(a - b) for a, b in zip(tg, th)) < 1e-3
    assert tg[-1] != tg[0]                                   # it trained
    r = rec["ratio_tinygrad_over_torch"]
    assert 0 < r["min"] <= r["median"] <= r["max"]
    assert rec["tinygrad"]["tokens_per_s"]["median"] > 0 and rec["tinygrad"]["first_step_s"] > 0
    assert rec["tokens_per_step"] == 2 * 8 * 2
    assert rec["flops"]["per_step"] > 0 and rec["tinygrad"]["mfu"] > 0
    # CPU to CPU here (CUDA to cuda on a GPU): the twin's device, versions and how each side is synchronised
    assert rec["tinygrad"]["device"] == "CPU" and rec["torch"]["device"] == "cpu"
    assert rec["tinygrad"]["cpu_kernels"] == {"rules": "zp-cpu-5", "runner": "native"}
    assert rec["torch"]["version"] and rec["torch"]["mode"] == "eager" and rec["torch"]["sync"]
    assert "synchronize" in rec["tinygrad"]["sync"] and rec["torch"]["first_step_s"] > 0
    assert rec["tinygrad"]["memory"]["allocator"]["peak_bytes"] > 0
    assert rec["memory_plan"]["measured_peak_bytes"] == rec["tinygrad"]["memory"]["allocator"]["peak_bytes"]
    assert rec["weights"]["kind"] == "random"
    for side in ("tinygrad", "torch"):     # no meter on CI machines: null with the reason, never a made-up figure
        e = rec[side]["energy_timed"]
        assert (e["energy_j"] is None and e["reason"]) or e["energy_per_step_j"] > 0
    assert rec["tinygrad"]["warm_start"]["programs"]["compiled"] + rec["tinygrad"]["warm_start"]["programs"]["loaded"] > 0
    if startup:   # cold against warm start, each in a fresh process on one empty cache
        su = rec["startup"]
        assert su["cold"]["cache"]["warm"] is False and su["warm"]["cache"]["warm"] is True
        assert su["warm"]["cache"]["programs"]["compiled"] == 0 < su["cold"]["cache"]["programs"]["compiled"]
        assert su["same_first_loss"] and su["warm"]["first_step_s"] < su["cold"]["first_step_s"]
    run_dir = zp_home / "runs" / rec["run_id"]
    for f in ("bench.json", "perf.json", "perf.png", "run.json"):
        assert (run_dir / f).is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"


def test_bench_refuses_a_twin_device_torch_cannot_use(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY % "full")
    res = CliRunner().invoke(app, ["bench", str(cfg), "--compare", "torch", "--torch-device", "cuda"])
    assert res.exit_code != 0 and "--torch-device cpu" in res.output and "Traceback" not in res.output


def test_bench_rejects_unknown_reference(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY % "full")
    res = CliRunner().invoke(app, ["bench", str(cfg), "--compare", "jax"])
    assert res.exit_code != 0 and "only reference is 'torch'" in res.output
