"""engine.fit writes runs/<id>/perf.json + perf.png through the perf hook, with memory per step."""
import json

import numpy as np

from zeropoint.engine import EngineConfig, Trainer, fit
from zeropoint.evidence import read_metrics, start_run
from zeropoint.perf.hooks import PERF_HOOKS


def test_fit_writes_perf_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    import zeropoint.perf.peak as P
    monkeypatch.setattr(P, "calibrate_cpu", lambda: 1e9)
    from tinygrad import Tensor
    w = Tensor(np.zeros((4, 1), np.float32)).contiguous().realize()
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32))
            for _ in range(4)]
    tr = Trainer({"w": w}, lambda x, y: ((x @ w - y) ** 2).mean(), EngineConfig(lr=1e-2, total_steps=4))
    with start_run("test", {"x": 1}, kind="test") as run:
        fit(tr, lambda s: [data[s]], steps=4, run=run, items_per_step=8, progress=False, hooks=PERF_HOOKS)
    steps = [r for r in read_metrics(run) if r["event"] == "step"]
    assert all(r["device_mem_bytes"] > 0 and r["rss_peak_bytes"] > 0 for r in steps)
    doc = json.loads((run.dir / "perf.json").read_text())
    assert doc["steps"] == 4 and doc["warmup_steps"] == 2 and len(doc["per_step"]) == 4
    med = float(np.median([r["step_ms"] / 1000 for r in steps[2:]]))
    assert abs(doc["tokens_per_s"] - 8 / med) < 1e-6 * doc["tokens_per_s"]
    assert doc["flops_per_step"] is None and doc["mfu"] is None      # no model config for a test run: null, not made up
    assert doc["energy"]["energy_j"] is None or doc["energy"]["energy_j"] >= 0
    assert doc["memory"]["device_mem_peak_bytes"] > 0
    assert (run.dir / "perf.png").stat().st_size > 1000
