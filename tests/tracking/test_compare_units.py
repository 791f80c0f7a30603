"""The comparison names a run's throughput in the unit its engine logged (issue 21: images/s for vision), from
two real engine runs (a linear model, seconds) with the recipes' perf hooks, so perf.json is the real report."""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor

from zeropoint.engine import EngineConfig, Trainer, fit
from zeropoint.evidence import load_run, start_run
from zeropoint.perf.hooks import PERF_HOOKS
from zeropoint.tracking.compare import compare_runs
from zeropoint.tracking.series import final_metrics, run_series


def _image_run(lr: float) -> str:
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32))
            for _ in range(4)]
    w = Tensor(np.zeros((4, 1), np.float32)).contiguous().realize()
    tr = Trainer({"w": w}, lambda x, y: ((x @ w - y) ** 2).mean(), EngineConfig(lr=lr, total_steps=4))
    with start_run("test: images", {"train": {"lr": lr}}, kind="test") as run:
        fit(tr, lambda s: [data[s]], steps=4, run=run, items_per_step=8, unit="images", progress=False,
            hooks=PERF_HOOKS)
    return run.id


def test_compare_reports_images_per_s_for_an_images_run():
    ids = [_image_run(1e-2), _image_run(3e-2)]
    cmp = compare_runs(ids)
    rows = {r["metric"]: r for r in cmp["metrics"]}
    assert "tokens_per_s" not in rows
    assert all(isinstance(v, float) and v > 0 for v in rows["images_per_s"]["values"])
    assert list(cmp["config_diff"]) == ["train.lr"]
    fin = final_metrics(run_series(load_run(ids[0])))
    assert fin["images_per_s"] == rows["images_per_s"]["values"][0]
