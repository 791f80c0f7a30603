"""Issue 29 in the browser: on the Runs page a viewer ticks two runs, presses Compare, and gets both runs' loss
curves on one chart with a legend naming them, the final-metrics table and the config diff.

The two runs are real but small: a linear model trained by the engine for 6 steps with two learning rates
(seconds on 2 cores), logged through the same evidence as every recipe. The recipe-level comparison is
tests/tracking/test_tracking.py.
"""
from __future__ import annotations

import json
from urllib.parse import urlparse

import numpy as np
import pytest

from test_control_center import login, shot
from zp_server import Server, free_port, make_token

LRS = (0.05, 0.01)


def train_linear_runs() -> list[str]:
    from tinygrad import Tensor

    from zeropoint.engine import EngineConfig, Trainer, fit
    from zeropoint.evidence import start_run
    rng = np.random.default_rng(0)
    w_true = rng.standard_normal((4, 1)).astype(np.float32)
    xs = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(7)]
    data = [(x, x @ w_true) for x in xs]
    ids = []
    for lr in LRS:
        w = Tensor(np.zeros((4, 1), np.float32)).contiguous().realize()
        tr = Trainer({"w": w}, lambda x, y, w=w: ((x @ w - y) ** 2).mean(), EngineConfig(lr=lr, total_steps=6))

        def val(step, w=w):
            x, y = data[6]
            return {"val_loss": float(((x @ w.numpy() - y) ** 2).mean())}
        with start_run("test: linear regression", {"model": "linear-4x1", "train": {"lr": lr, "steps": 6}},
                       kind="linear_test", seed=0) as run:
            fit(tr, lambda s: [data[s]], steps=6, run=run, items_per_step=8, progress=False,
                eval_every=3, eval_fn=val)
        ids.append(run.id)
    return ids


@pytest.mark.slow
def test_compare_two_runs_in_the_browser(zp_home, chromium_path, playwright_api, artifacts):
    ids = train_linear_runs()
    s = Server(zp_home, free_port(), max_concurrent=1).start()
    browser = playwright_api.chromium.launch(executable_path=chromium_path, headless=True)
    requests, errors = [], []
    try:
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        ctx.on("request", lambda r: requests.append(r.url))
        viewer = make_token("viewer", home=zp_home)
        st, body, _ = s.request("GET", f"/v1/compare?runs={ids[0]}", token=viewer)
        assert st == 422 and "2 to 8 runs" in json.dumps(body)
        st, body, _ = s.request("GET", f"/v1/compare?runs={ids[0]}&runs=no-such-run", token=viewer)
        assert st == 404 and "no-such-run" in json.dumps(body)
        assert s.request("GET", f"/v1/compare?runs={ids[0]}&runs={ids[1]}")[0] == 401      # behind the token
        page = login(ctx, f"http://127.0.0.1:{s.port}", viewer)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.get_by_role("link", name="Runs & jobs").click()
        button = page.locator("#compare-runs")
        assert button.is_disabled()                                    # nothing picked yet
        page.get_by_label(f"Select run {ids[0]} for comparison").check()
        assert button.is_disabled()                                    # one run is not a comparison
        page.get_by_label(f"Select run {ids[1]} for comparison").check()
        page.wait_for_timeout(3500)                                    # the runs table refreshes: ticks survive it
        assert page.get_by_label(f"Select run {ids[0]} for comparison").is_checked()
        assert button.inner_text() == "Compare selected (2)"
        shot(page, artifacts, "19-runs-picked")
        button.click()

        page.wait_for_selector("main[data-page=runs] #cmp-loss-chart polyline")
        chart = page.locator("#cmp-loss-chart")
        assert chart.locator("polyline").count() == 2                  # both series on one chart
        legend = chart.locator(".legend li").all_inner_texts()
        assert len(legend) == 2 and ids[0] in legend[0] and ids[1] in legend[1]
        assert "train.lr=0.05" in legend[0] and "train.lr=0.01" in legend[1]
        assert page.locator("#cmp-val-chart polyline").count() == 2
        diff = page.locator("#config-diff tbody tr").all_inner_texts()
        assert len(diff) == 1 and diff[0].startswith("train.lr")        # only the key that differs
        metrics = page.locator("table.compare-metrics tbody tr th").all_inner_texts()
        assert "final_train_loss" in metrics and "heldout_val_loss" in metrics
        assert page.locator(".compare-warning").count() == 0           # same (no) data, same device
        shot(page, artifacts, "20-compare-runs")
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth + 1"), "the compare page scrolls sideways at 390 px"
        shot(page, artifacts, "20-compare-runs-390")
        hosts = {urlparse(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
        assert hosts == {"127.0.0.1"} and not errors, (hosts, errors)
    finally:
        browser.close()
        s.stop()
