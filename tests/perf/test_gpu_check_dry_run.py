"""bench/gpu/run.sh --dry-run: the prepared GPU check's stages, on the CPU with tiny shapes, end to end.

Its figures say nothing about a GPU; the test checks that every stage ran in its own process and left its
figures in the one JSON the script writes (so the script is ready the day a GPU machine is lent)."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

STAGES = ["env", "diag", "plans", "matmul", "smollm2_lora_fp32", "llama3_8b_lora", "smollm2_full_bf16", "qlora"]
BENCH = ["smollm2_lora_fp32", "smollm2_full_bf16", "llama3_8b_lora"]


@pytest.mark.slow
def test_dry_run_writes_every_stage_with_figures(tmp_path, zp_home):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, ZP_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=3700)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["dry_run"] is True and list(doc["stages"]) == STAGES
    st = doc["stages"]
    for name in STAGES:
        assert st[name]["status"] in ("ok", "skipped"), (name, st[name].get("error"))
        assert (out / f"{name}.json").is_file()
    assert st["env"]["figures"]["device"] == "CPU"
    assert st["diag"]["figures"]["parity"] == "PASS" and "CPU" in st["diag"]["figures"]["backends_open"]
    assert st["diag"]["figures"]["backends_listed"] >= 10
    assert st["matmul"]["figures"]["tinygrad_fp32_tflops"] > 0 and st["matmul"]["figures"]["torch_bf16_tflops"] > 0
    assert st["plans"]["figures"]["llama-3-8b_lora_fits_141gb"] in (True, False)
    for name in BENCH:
        f = st[name]["figures"]
        for k in ("tinygrad_tok_s", "torch_tok_s", "ratio_median", "tinygrad_first_step_s", "torch_first_step_s",
                  "tinygrad_mfu", "tinygrad_peak_bytes", "plan_bytes", "measured_over_plan"):
            assert isinstance(f[k], (int, float)) and f[k] > 0, (name, k, f[k])
        assert f["first_loss_abs_diff"] < 1e-2                      # the twin computes the same model
        assert "tinygrad_energy_per_step_j" in f                    # null here (no meter), a figure on a GPU
        assert st[name]["record"]["weights"]["kind"] == "random"
    assert st["smollm2_full_bf16"]["record"]["config"]["precision"] == "bf16"
    q = st["qlora"]                                                # NF4 base, checkpointed layers, no twin
    assert q["status"] == "ok" and q["record"]["config"]["lora"]["base_quant"] == "nf4"
    assert q["record"]["config"]["activation_checkpointing"] == "layers" and "torch" not in q["record"]
    assert q["figures"]["tinygrad_tok_s"] > 0 and q["figures"]["measured_over_plan"] > 0
    assert "GPU check" in r.stdout or "DRY RUN" in r.stdout
