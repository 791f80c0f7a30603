"""Warm start across processes, counted by tinygrad itself: a tiny LoRA recipe runs in three processes on one cache.

1. cold: compiles every kernel and captures the steps, storing both under ZP_CACHE;
2. warm: reaches its first optimizer step with 0 kernel lowerings, 0 compiles and a handful of (tiny) schedules,
   and its losses equal the cold run's bit for bit;
3. with the micro-step entry corrupted (one flipped byte), the optimizer-step entry built by "another tinygrad"
   and one kernel file corrupted: neither entry is loaded (each is rebuilt, with a notice), the run succeeds and
   its losses are still the cold run's.

Counts come from tests/engine/counted_zpctl.py, which wraps tinygrad's lowering, compiler and scheduler."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from llm_helpers import approve_sotu_slice  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COUNTED = Path(__file__).resolve().parent / "counted_zpctl.py"
SETS = ["--set", "train.steps=3", "--set", "train.eval_every=0", "--set", "train.ckpt_every=0"]


def _run(tag, tmp_path, cache):
    out = tmp_path / f"{tag}.counts.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), ZP_CACHE=str(cache), COUNTS_OUT=str(out))
    r = subprocess.run([sys.executable, str(COUNTED), "train", "configs/llm/tiny_lora.yaml", "--json", *SETS],
                       env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    losses = [row["loss"] for row in csv.DictReader(open(Path(res["run_dir"]) / "loss_curve.csv"))]
    return json.loads(out.read_text()), losses, r.stderr, res


def _flip_one_byte(path: Path):
    b = bytearray(path.read_bytes())
    b[len(b) // 3] ^= 0x10
    path.write_bytes(bytes(b))


@pytest.mark.slow
def test_second_process_replays_without_compiling(zp_home, tmp_path):
    approve_sotu_slice()
    cache = tmp_path / "cache"
    cold, cold_losses, _, cold_res = _run("cold", tmp_path, cache)
    assert cold["lower"] > 20 and cold["compile"] > 20              # a cold process really compiles
    steps = {d.name.split("-")[0]: d for d in (cache / "jit").iterdir()}
    assert set(steps) == {"train.micro", "train.opt", "train.eval"}

    warm, warm_losses, _, warm_res = _run("warm", tmp_path, cache)
    assert warm["lower"] == 0 and warm["compile"] == 0, warm
    assert warm["schedule"] <= 5, warm                                 # model init, adapters, RoPE tables
    assert cold["schedule"] - warm["schedule"] == 3, (warm, cold)       # micro-step, optimizer step, eval: none built
    assert warm["loss"] == cold["loss"] and warm_losses == cold_losses  # bit for bit, every step
    assert warm_res["final_eval"] == cold_res["final_eval"]
    ws = {tag: json.loads((Path(r["run_dir"]) / "perf.json").read_text())["warm_start"]
          for tag, r in (("cold", cold_res), ("warm", warm_res))}
    assert ws["cold"]["warm"] is False and ws["warm"]["warm"] is True      # every run's perf.json says which
    assert {v["source"] for v in ws["warm"]["steps"].values()} == {"cache"}
    assert ws["warm"]["first_step_s"] < ws["cold"]["first_step_s"]

    # one flipped byte in the micro-step's payload; the optimizer step's entry from another tinygrad version;
    # one flipped byte in a kernel the micro-step needs (found by name in its payload, not in the eval's)
    _flip_one_byte(steps["train.micro"] / "payload.bin")
    m = json.loads((steps["train.opt"] / "manifest.json").read_text())
    m["key"]["env"]["tinygrad"] = "0.13.0"
    (steps["train.opt"] / "manifest.json").write_text(json.dumps(m))
    micro_payload = (cold_micro := steps["train.micro"] / "payload.bin").read_bytes()
    eval_payload = (steps["train.eval"] / "payload.bin").read_bytes()
    kernel = next(p for p in sorted(cache.glob("programs/*/*/manifest.json"))
                  if (k := json.loads(p.read_text()).get("kernel")) and k.encode() in micro_payload
                  and k.encode() not in eval_payload)
    _flip_one_byte(kernel.parent / "payload.bin")
    assert cold_micro.exists()

    again, again_losses, err, _ = _run("repaired", tmp_path, cache)
    assert "step train.micro" in err and "corrupt" in err
    assert "step train.opt" in err and "different tinygrad" in err
    assert f"kernel {kernel.parent.name[:12]}" in err
    assert again["lower"] >= 1 and again["schedule"] - warm["schedule"] == 2   # both steps rebuilt, not loaded
    assert again_losses == cold_losses

    from zeropoint.engine.jitcache import read_entry
    for d in (steps["train.micro"], steps["train.opt"], kernel.parent):   # each one rewritten and valid again
        read_entry(d, json.loads((d / "manifest.json").read_text())["key"])
