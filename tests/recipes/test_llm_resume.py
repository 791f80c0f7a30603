"""Exact resume: SIGKILL a tiny run after a checkpoint, `zpctl resume`, and every loss equals the uninterrupted
run's bit for bit. The same test shows that the same seed gives the same curve and that runs record evidence.

Only the run that is killed needs its own process (SIGKILL). The uninterrupted reference and the resume run in
this process through the CLI app, so the resume reuses the kernels the reference compiled (a fresh process
re-lowers every kernel: ~2/3 of a tiny run). The resume still crosses a process boundary: it can only restore
what the killed process checkpointed (this process never held the victim's state)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner


sys.path.insert(0, str(Path(__file__).resolve().parent))   # helpers beside this file, whatever the import mode
from llm_helpers import approve_sotu_slice  # noqa: E402
from zeropoint.cli.main import app

SRC = str(Path(__file__).resolve().parents[2] / "src")
SETS = ["--set", "train.steps=7", "--set", "train.ckpt_every=3", "--set", "train.eval_every=0",
        "--set", "train.keep_ckpts=3"]


def zpctl(*args, **kw):
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-m", "zeropoint.cli.main", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def curve(run_dir):
    rows = list(csv.DictReader(open(Path(run_dir) / "loss_curve.csv")))
    return [(int(r["step"]), r["loss"]) for r in rows]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_bit_for_bit(zp_home):
    approve_sotu_slice()
    runner = CliRunner()
    ref = runner.invoke(app, ["train", "configs/llm/tiny_full.yaml", "--json", *SETS])
    assert ref.exit_code == 0, ref.output[-3000:]
    a = json.loads(ref.stdout)
    rec_a = json.loads((Path(a["run_dir"]) / "run.json").read_text())
    assert rec_a["status"] == "succeeded" and rec_a["datasets"][0]["name"] == "sotu"
    assert rec_a["datasets"][0]["sha256"] and rec_a["datasets"][0]["files"]
    assert a["final_eval"]["val_loss"] < a["base_eval"]["val_loss"]

    victim = zpctl("train", "configs/llm/tiny_full.yaml", "--json", *SETS)
    deadline = time.time() + 900
    run_b = None
    while time.time() < deadline and victim.poll() is None:
        cands = [d for d in (zp_home / "runs").iterdir() if d.name != a["run_id"]]
        if cands and (cands[0] / "checkpoints" / "step-00000003" / "manifest.json").exists():
            run_b = cands[0]
            break
        time.sleep(0.05)
    assert run_b is not None and victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(0.2)

    from zeropoint.evidence import effective_status, load_run
    assert effective_status(load_run(run_b.name).record) == "interrupted"

    res = runner.invoke(app, ["resume", run_b.name, "--json"])
    assert res.exit_code == 0, res.output[-3000:]
    b = json.loads(res.stdout)
    assert b["start_step"] >= 3
    assert curve(run_b) == curve(a["run_dir"])                    # every step, bit for bit (repr of the float)
    assert [s for s, _ in curve(run_b)] == list(range(1, 8))
    assert b["final_eval"] == a["final_eval"]
    rec_b = json.loads((run_b / "run.json").read_text())
    assert rec_b["status"] == "succeeded" and rec_b["resumes"]

    # a flipped byte in a checkpoint is refused, naming the file
    ck = sorted((run_b / "checkpoints").glob("step-*"))[-1]
    f = ck / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x10
    f.write_bytes(bytes(data))
    r = runner.invoke(app, ["ckpt", "verify", str(ck)])
    assert r.exit_code == 1 and "optimizer.safetensors" in r.output
    r = runner.invoke(app, ["ckpt", "verify", str(run_b), "--json"])
    rep = json.loads(r.stdout)
    assert r.exit_code == 1 and [c["ok"] for c in rep["checkpoints"]][-1] is False
