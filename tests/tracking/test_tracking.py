"""Issue 29: `zpctl runs compare`, `zpctl runs export --mlflow / --tensorboard` and `zpctl train --track`.

One module-wide pair of real tiny runs (tiny_full.yaml on the approved SOTU slice, 6 steps) that differ only in
train.lr: run A trains with `--track tensorboard`, run B with `--track mlflow` into a file store. Every test
reads them back; none trains again except the cheap engine-level run of the failing-tracker test.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.recipes.llm_helpers import approve_sotu_slice
from zeropoint.cli.main import app
from zeropoint.evidence import load_run, read_metrics

pytestmark = pytest.mark.slow   # the module's fixture trains two real tiny runs
runner = CliRunner()
SETS = ["--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "train.ckpt_every=6"]
LR = {"a": 3e-3, "b": 1e-3}
MOCK_FLAGS = ("ZP_MOCK", "MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("zphome-tracking")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZP_HOME", str(home))
    for flag in MOCK_FLAGS:
        mp.delenv(flag, raising=False)
    try:
        approve_sotu_slice()
        ids = {}
        for name, track in (("a", ["--track", "tensorboard"]),
                            ("b", ["--track", "mlflow", "--track-uri", str(home / "live-mlruns")])):
            r = runner.invoke(app, ["train", "configs/llm/tiny_full.yaml", "--json", "--set", f"train.lr={LR[name]}",
                                    *SETS, *track])
            assert r.exit_code == 0, r.output
            ids[name] = json.loads(r.stdout)["run_id"]
        yield {"home": home, **ids}
    finally:
        mp.undo()


@pytest.fixture(autouse=True)
def zp_home(runs, monkeypatch):
    """Replaces conftest's per-test workspace: every test here reads the module's two runs."""
    monkeypatch.setenv("ZP_HOME", str(runs["home"]))
    for flag in MOCK_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    return runs["home"]


def step_rows(run_id: str) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(load_run(run_id)) if r.get("event") == "step"}


def eval_rows(run_id: str) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(load_run(run_id)) if r.get("event") == "eval"}


# ---- compare ----------------------------------------------------------------------------------------------------
def test_compare_json_diff_losses_and_figure(runs, tmp_path):
    from zeropoint.tracking.plots import compare_figure
    png = tmp_path / "cmp.png"
    r = runner.invoke(app, ["runs", "compare", runs["a"], runs["b"], "--json", "--png", str(png)])
    assert r.exit_code == 0, r.output
    cmp = json.loads(r.stdout)
    assert list(cmp["config_diff"]) == ["train.lr"]                    # exactly the one setting that differs
    assert cmp["config_diff"]["train.lr"] == [LR["a"], LR["b"]]
    assert cmp["data"]["same"] and cmp["warnings"] == []
    final = {row["metric"]: row["values"] for row in cmp["metrics"]}
    last = [step_rows(runs[k])[6]["loss"] for k in ("a", "b")]
    assert final["final_train_loss"] == last and last[0] != last[1]    # both final losses, from metrics.jsonl
    assert final["heldout_val_loss"] == [eval_rows(runs[k])[6]["val_loss"] for k in ("a", "b")]
    assert final["energy_j"] == [None, None] or all(v is not None for v in final["energy_j"])
    assert png.stat().st_size > 10_000

    fig = compare_figure(cmp)
    assert len(fig.axes) == 2                                           # training loss, validation loss
    for ax, n_points in zip(fig.axes, (6, 3)):
        lines = ax.get_lines()
        assert len(lines) == 2                                          # one line per run
        assert [len(ln.get_xdata()) for ln in lines] == [n_points, n_points]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(legend) == 2 and runs["a"] in legend[0] and runs["b"] in legend[1]
        assert "train.lr=0.003" in legend[0] and "train.lr=0.001" in legend[1]
    np.testing.assert_array_equal(fig.axes[0].get_lines()[1].get_ydata(), [step_rows(runs["b"])[s]["loss"] for s in range(1, 7)])

    human = runner.invoke(app, ["runs", "compare", runs["a"], runs["b"]])
    assert human.exit_code == 0 and "train.lr" in human.stdout and "same data" in human.stdout


def test_compare_refuses_one_run_and_names_different_data(runs):
    from zeropoint.tracking.compare import data_check
    r = runner.invoke(app, ["runs", "compare", runs["a"]])
    assert r.exit_code == 2 and "at least two runs" in r.output
    r = runner.invoke(app, ["runs", "compare", runs["a"], "no-such-run"])
    assert r.exit_code == 2 and "no-such-run" in r.output and "Traceback" not in r.output
    a = [{"name": "sotu", "version": "1", "sha256": "aa" * 32}]
    b = [{"name": "sotu", "version": "2", "sha256": "bb" * 32}]
    chk = data_check([a, b], ["ra", "rb"])
    assert not chk["same"] and chk["warning"].startswith("DIFFERENT DATA") and "sotu@bbbbbbbbbbbb" in chk["warning"]
    assert data_check([a, list(a)], ["ra", "rb"])["same"]


# ---- MLflow -----------------------------------------------------------------------------------------------------
def _mlflow(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")   # what the exporter does for a file store
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("zeropoint")
    return c, c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def test_mlflow_export_reads_back_and_is_idempotent(runs, tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    first = runner.invoke(app, ["runs", "export", runs["a"], "--mlflow", "--tracking-uri", uri, "--json"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)["mlflow"]
    assert out["created"] and out["model_card"].endswith("step-00000006")
    c, found = _mlflow(uri)
    assert len(found) == 1
    ml = found[0]
    steps = step_rows(runs["a"])
    loss = {m.step: m.value for m in c.get_metric_history(ml.info.run_id, "train/loss")}
    assert loss == {s: r["loss"] for s, r in steps.items()} and len(loss) == 6     # every step, equal
    val = {m.step: m.value for m in c.get_metric_history(ml.info.run_id, "eval/val_loss")}
    assert val == {s: r["val_loss"] for s, r in eval_rows(runs["a"]).items()}
    rec = load_run(runs["a"]).record
    tags = ml.data.tags
    assert tags["zeropoint.config_sha256"] == rec["config_sha256"] and tags["zeropoint.run_id"] == runs["a"]
    assert tags["zeropoint.device"] == rec["device"] and tags["mlflow.source.git.commit"] == (rec["git_commit"] or tags["mlflow.source.git.commit"])
    assert tags["zeropoint.data.sotu.sha256"] == rec["datasets"][0]["sha256"]
    assert ml.data.params["train.lr"] == str(LR["a"]) and ml.info.status == "FINISHED"
    card = {a.path for a in c.list_artifacts(ml.info.run_id, "model_card")}
    assert card == {"model_card/model_card.json", "model_card/MODEL_CARD.md"}
    got = c.download_artifacts(ml.info.run_id, "model_card/model_card.json", str(tmp_path))
    ckpt = load_run(runs["a"]).checkpoints_dir / "step-00000006" / "model_card.json"
    assert hashlib.sha256(open(got, "rb").read()).hexdigest() == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert json.loads(ckpt.read_text())["metrics"][0]["value"] == eval_rows(runs["a"])[6]["val_loss"]
    assert "evidence/loss_curve.csv" in {a.path for a in c.list_artifacts(ml.info.run_id, "evidence")}

    again = json.loads(runner.invoke(app, ["runs", "export", runs["a"], "--mlflow", "--tracking-uri", uri, "--json"]).stdout)["mlflow"]
    assert not again["created"] and again["metric_points_logged"] == 0 and again["mlflow_run_id"] == ml.info.run_id
    c, found = _mlflow(uri)
    assert len(found) == 1                                               # exporting twice leaves one run
    assert len(c.get_metric_history(ml.info.run_id, "train/loss")) == 6  # and one point per step


def test_live_mlflow_run_matches_and_export_joins_it(runs):
    uri = (runs["home"] / "live-mlruns").as_uri()
    c, found = _mlflow(uri)
    assert len(found) == 1 and found[0].data.tags["zeropoint.run_id"] == runs["b"] and found[0].info.status == "FINISHED"
    mid = found[0].info.run_id
    assert {m.step: m.value for m in c.get_metric_history(mid, "train/loss")} == \
        {s: r["loss"] for s, r in step_rows(runs["b"]).items()}
    out = runner.invoke(app, ["runs", "export", runs["b"], "--mlflow", "--tracking-uri", uri, "--json"])
    res = json.loads(out.stdout)["mlflow"]
    assert not res["created"] and res["mlflow_run_id"] == mid and res["model_card"] is not None
    c, found = _mlflow(uri)
    assert len(found) == 1 and len(c.get_metric_history(mid, "train/loss")) == 6
    assert load_run(runs["b"]).record.get("warnings") is None           # the live tracker never failed


# ---- TensorBoard ------------------------------------------------------------------------------------------------
def _scalars(logdir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}, ea.Tags()["tensors"]


def test_tensorboard_export_and_live_read_back(runs, tmp_path):
    r = runner.invoke(app, ["runs", "export", runs["b"], "--tensorboard", str(tmp_path / "tb"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["tensorboard"]
    assert len(out["event_files"]) == 1
    scalars, texts = _scalars(out["logdir"])
    steps, evals = step_rows(runs["b"]), eval_rows(runs["b"])
    expect = {f"train/{k}": {s: float(np.float32(row[k])) for s, row in steps.items()}
              for k in ("loss", "lr", "step_ms", "tokens_per_s")}
    expect.update({f"eval/{k}": {s: float(np.float32(row[k])) for s, row in evals.items()} for k in ("val_loss", "val_ppl")})
    for tag, want in expect.items():
        assert scalars[tag] == want, tag                                  # same scalars, float32 as TensorBoard stores
    assert {"config/text_summary", "run/text_summary"} <= set(texts)
    # again: the log is replaced, not appended to
    r2 = json.loads(runner.invoke(app, ["runs", "export", runs["b"], "--tensorboard", str(tmp_path / "tb"), "--json"]).stdout)
    assert len(r2["tensorboard"]["event_files"]) == 1 and _scalars(out["logdir"])[0]["train/loss"] == expect["train/loss"]
    # a directory the exporter did not write is refused, untouched
    foreign = tmp_path / "tb2" / runs["b"]
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep")
    r3 = runner.invoke(app, ["runs", "export", runs["b"], "--tensorboard", str(tmp_path / "tb2")])
    assert r3.exit_code == 2 and "not written by" in r3.output and (foreign / "mine.txt").read_text() == "keep"

    live, _ = _scalars(load_run(runs["a"]).dir / "tensorboard")            # run A streamed live with --track tensorboard
    assert live["train/loss"] == {s: float(np.float32(row["loss"])) for s, row in step_rows(runs["a"]).items()}
    assert set(live["eval/val_loss"]) == {0, 3, 6}


# ---- live tracking failures -------------------------------------------------------------------------------------
class _Breaks:
    name = "flaky"

    def __init__(self, run):
        self.rows = 0

    def on_row(self, row):
        self.rows += 1
        if row.get("event") == "step" and row["step"] == 2:
            raise ConnectionError("tracking server went away")

    def close(self, status):
        pass


def test_failing_tracker_never_fails_the_run(runs, tmp_path):
    """A real (tiny, engine-level) training run: one tracker cannot even start, another dies at step 2; the run
    trains every step, succeeds, and says what happened in run.json and metrics.jsonl."""
    from tinygrad import Tensor

    from zeropoint.engine import EngineConfig, Trainer, fit
    from zeropoint.evidence import observe_runs, start_run
    from zeropoint.tracking.live import live_tracking
    (tmp_path / "a-file").write_text("not a directory")
    w = Tensor(np.zeros((4, 1), np.float32)).contiguous().realize()
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)) for _ in range(4)]
    tr = Trainer({"w": w}, lambda x, y: ((x @ w - y) ** 2).mean(), EngineConfig(lr=1e-2, total_steps=4))
    with live_tracking("mlflow", (tmp_path / "a-file" / "mlruns").as_uri()), observe_runs(_Breaks):
        with start_run("test", {"train": {"lr": 1e-2}}, kind="test") as run:
            fit(tr, lambda s: [data[s]], steps=4, run=run, items_per_step=8, progress=False)
    rec = load_run(run.id).record
    assert rec["status"] == "succeeded" and len(step_rows(run.id)) == 4
    warns = [r for r in read_metrics(run) if r["event"] == "tracker_warning"]
    assert [w["tracker"] for w in warns] == ["mlflow", "flaky"]
    assert "Not a directory" in warns[0]["message"] and "tracking server went away" in warns[1]["message"]
    assert len(rec["warnings"]) == 2

    with socket.socket() as sock:                 # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    t0 = time.monotonic()                          # a clear error in seconds, not MLflow's 4-minute retry loop
    r = runner.invoke(app, ["runs", "export", runs["a"], "--mlflow", "--tracking-uri", dead])
    assert r.exit_code == 2 and "MLflow export to" in r.output and "Traceback" not in r.output
    assert time.monotonic() - t0 < 60

    bad = runner.invoke(app, ["train", "configs/llm/tiny_full.yaml", "--track", "wandb"])
    assert bad.exit_code == 2 and "unknown --track 'wandb'" in bad.output
    none = runner.invoke(app, ["runs", "export", runs["a"]])
    assert none.exit_code == 2 and "--mlflow" in none.output
