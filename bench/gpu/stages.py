"""The stages of the prepared GPU check (`bench/gpu/run.sh`), one per process, each writing one JSON file.

    python bench/gpu/stages.py STAGE --out DIR [--dry-run]     # run one stage -> DIR/STAGE.json
    python bench/gpu/stages.py summarize DIR                   # DIR/*.json -> DIR/gpu_check.json + a table
    python bench/gpu/stages.py list [--dry-run]                # stage names and their time limits, for run.sh

Stages: env, diag, matmul, plans, smollm2_lora_fp32, smollm2_full_bf16, llama3_8b_lora, qlora. The training
stages use the project's recipe model, engine and PyTorch twin through `perf.bench.run_bench`, with random
weights of the exact shapes (the GPU machine has no model files; every record says `weights.kind: random`).
`--dry-run` runs the same stages on the CPU with tiny shapes (a test checks its JSON): its figures say nothing
about a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

# stage -> time limit in seconds on one H200, in the order they run: the ones most likely to finish first, the
# full bf16 finetune (its first step took > 260 s there before) after the 8B step. run.sh gives each stage at
# most what is left of its budget, so a slow stage costs the ones after it, never the whole check.
STAGES = {"env": 30, "diag": 90, "plans": 30, "matmul": 75, "smollm2_lora_fp32": 130, "llama3_8b_lora": 200,
          "smollm2_full_bf16": 150, "qlora": 150}
DRY_LIMITS = {k: 900 for k in STAGES}   # a shared 2-core box under load: minutes per tiny stage

TINY = {"dim": 64, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "hidden_dim": 128,
        "vocab_size": 512, "max_seq_len": 64}


def _bench_case(config: str, sets: list[str], dry: bool, *, steps: int, repeats: int, batch: int, seq: int,
                compare: bool = True) -> dict:
    from zeropoint.perf.bench import run_bench
    from zeropoint.recipes import load_config
    over = list(sets) + [f"train.micro_batch_size={2 if dry else batch}", f"data.seq_len={16 if dry else seq}",
                         "train.grad_accum=1"]
    if dry:
        over += [f"model.overrides.{k}={v}" for k, v in TINY.items()]
    cfg, _ = load_config(ROOT / config, over)
    def say(m):
        print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)
    rec = run_bench(cfg, steps=1 if dry else steps, repeats=1 if dry else repeats, warmup=2, compare_torch=compare,
                    random_weights=True, progress=say, torch_threads=1 if dry else None)
    tg, th = rec["tinygrad"], rec.get("torch", {})
    mem_nvml = tg["memory"].get("nvml")
    figures = {
        "tinygrad_tok_s": tg["tokens_per_s"]["median"], "torch_tok_s": (th.get("tokens_per_s") or {}).get("median"),
        "ratio_median": (rec.get("ratio_tinygrad_over_torch") or {}).get("median"),
        "tinygrad_first_step_s": tg["first_step_s"], "torch_first_step_s": th.get("first_step_s"),
        # where the cold first step's wall time went (perf/phases.py): the question of the GPU issue's item 3
        "tinygrad_first_step_wall_s_by_phase": {k: v["wall_s"] for k, v in tg["warmup_phases"][0].items()
                                                if k != "total"} if tg.get("warmup_phases") else None,
        "tinygrad_first_step_kernels": tg["warmup_phases"][0]["schedule"]["kernels"] if tg.get("warmup_phases") else None,
        "tinygrad_mfu": tg["mfu"], "torch_mfu": th.get("mfu"),
        "tinygrad_peak_bytes": tg["memory"]["allocator"]["peak_bytes"],
        "torch_peak_bytes": (th.get("memory") or {}).get("max_allocated_bytes"),
        "nvml_used_peak_bytes": max((g.get("used_peak_bytes") or 0) for g in mem_nvml) if isinstance(mem_nvml, list) else None,
        "tinygrad_energy_per_step_j": tg["energy_timed"].get("energy_per_step_j"),
        "torch_energy_per_step_j": (th.get("energy_timed") or {}).get("energy_per_step_j"),
        "first_loss_abs_diff": (rec.get("first_loss") or {}).get("abs_diff"),
        "plan_bytes": rec["memory_plan"]["plan_bytes"]["total_bytes"],
        "measured_over_plan": rec["memory_plan"]["measured_over_plan"],
        "peak_flops": rec["peak"].get("flops"), "peak_check": (rec["peak"].get("check") or {}).get("verdict"),
    }
    return {"figures": figures, "record": rec}


def stage_env(dry: bool) -> dict:
    from tinygrad import Device

    from zeropoint.appliance.identity import version_info
    from zeropoint.appliance.nvml import gpu_inventory
    smi = None
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        smi = f"nvidia-smi not run: {type(e).__name__}"
    try:
        import torch
        tv = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    except ImportError:
        tv = {"torch": None}
    inv = gpu_inventory()
    return {"figures": {"device": Device.DEFAULT, "gpus": [g["name"] for g in inv["gpus"]],
                        "driver": inv.get("driver_version"), "cuda_driver": inv.get("cuda_driver_version"),
                        "torch": tv.get("torch"), "host_cores": os.cpu_count()},
            "record": {"versions": version_info(), "torch": tv, "nvml": inv, "nvidia_smi": smi,
                       "env": {k: os.environ.get(k) for k in ("DEV", "NVRTC_PATH", "PYTHONPATH", "BEAM", "PARALLEL")}}}


def stage_diag(dry: bool) -> dict:
    # through the CLI, as a user runs it (the H200 crash was in this command)
    r = subprocess.run([sys.executable, "-m", "zeropoint.cli.main", "diag", "--json"] + (["--no-parity"] if dry else []),
                       capture_output=True, text=True, timeout=DRY_LIMITS["diag"] - 10)
    if r.returncode not in (0, 1) or not r.stdout.strip().startswith("{"):
        raise RuntimeError(f"zpctl diag exited {r.returncode}: {r.stderr.strip().splitlines()[-1:] or ['']}")
    doc = json.loads(r.stdout)
    rows = doc["hardware"]["accelerators"]["tinygrad"]
    par = doc["parity"]
    if dry:   # the parity check itself at one tiny size on the default device (a full one takes a minute here)
        from zeropoint.appliance.diag import matmul_parity
        res = matmul_parity(sizes=(64,))
        par = {"status": "PASS" if all(x["status"] == "PASS" for x in res) else "FAIL", "results": res, "sizes": [64]}
    return {"figures": {"exit_code": r.returncode, "backends_open": [d["device"] for d in rows if d["opens"]],
                        "backends_listed": len(rows), "parity": par["status"],
                        "parity_gflops_max": max((x["tinygrad_gflops"] for x in par["results"]), default=None)},
            "record": {"diag": doc, "parity": par}}


def stage_matmul(dry: bool) -> dict:
    from tinygrad import Device

    from zeropoint.perf.devices import torch_device_for
    from zeropoint.perf.matmul import matmul_table
    try:
        tdev = torch_device_for(Device.DEFAULT)
        import torch  # noqa: F401
    except Exception:
        tdev = None
    n = 128 if dry else 4096
    if dry and tdev:   # a shared 2-core box: torch's OpenMP threads waiting on each other made its figures noise
        import torch
        torch.set_num_threads(1)
    rows = matmul_table(n, torch_device=tdev, repeats=3 if dry else 10)
    figs = {}
    for r in rows:
        p = r["precision"]
        figs[f"tinygrad_{p}_tflops"] = r["tinygrad"]["flops"] / 1e12 if r["tinygrad"].get("flops") else None
        figs[f"torch_{p}_tflops"] = r["torch"]["flops"] / 1e12 if r.get("torch", {}).get("flops") else None
        figs[f"ratio_{p}"] = r.get("ratio_tinygrad_over_torch")
    return {"figures": figs, "record": {"n": n, "torch_device": tdev, "rows": rows,
                                        "env": {k: os.environ[k] for k in ("BEAM",) if k in os.environ}}}


def stage_plans(dry: bool) -> dict:
    """zpctl model info's memory plan for the 8B and 13B LoRA configs, against 80 GB and 141 GB cards."""
    from zeropoint.models.llm import llm_memory_plan
    from zeropoint.models.lora import LoRASpec
    from zeropoint.recipes import load_config
    out, figs = {}, {}
    for name in ("llama-3-8b_lora", "llama-2-13b_lora"):
        cfg, _ = load_config(ROOT / "configs" / "llm" / f"{name}.yaml", ["train.grad_accum=1"])
        t = cfg.train
        info = llm_memory_plan(cfg.model, method=cfg.method, lora=LoRASpec.from_section(cfg.lora.model_dump()),
                               precision=t.precision, micro_batch_size=t.micro_batch_size, seq_len=cfg.data.seq_len,
                               grad_accum=t.grad_accum, activation_checkpointing=t.activation_checkpointing,
                               activation_checkpointing_k=t.activation_checkpointing_k)
        tot = info["memory"]["total_bytes"]
        out[name] = info
        figs[f"{name}_plan_gib"] = round(tot / 2**30, 2)
        figs[f"{name}_fits_80gb"] = tot <= 80e9
        figs[f"{name}_fits_141gb"] = tot <= 141e9
    return {"figures": figs, "record": out}


def stage_smollm2_lora_fp32(dry: bool) -> dict:
    return _bench_case("configs/llm/smollm2-135m_lora.yaml", ["train.precision=fp32"], dry,
                       steps=3, repeats=2, batch=8, seq=256)


def stage_smollm2_full_bf16(dry: bool) -> dict:
    return _bench_case("configs/llm/smollm2-135m_full.yaml", ["train.precision=bf16"], dry,
                       steps=3, repeats=2, batch=8, seq=256)


# The 8B step runs at 512 tokens, not the config's 2048: both frameworks hold their model in one process on one
# card, and at 2048 the plan alone is 51 GiB for tinygrad's side (activations dominate; docs/memory.md) before the
# twin's fp32 copy (32 GB) and its own activations. The plan for 2048 and for the 13B config is the `plans` stage.
EIGHT_B_SEQ = 512


def stage_llama3_8b_lora(dry: bool) -> dict:
    return _bench_case("configs/llm/llama-3-8b_lora.yaml", [], dry, steps=2, repeats=1, batch=1, seq=EIGHT_B_SEQ)


def stage_qlora(dry: bool) -> dict:
    """The memory issue's QLoRA config (NF4 base, LoRA on every projection, checkpointed layers) at the 8B step's
    shapes. No twin: PyTorch here has no NF4 base (run_bench refuses --compare-torch with lora.base_quant)."""
    return _bench_case("configs/llm/llama-3-8b_qlora.yaml", [], dry, steps=2, repeats=1, batch=1, seq=EIGHT_B_SEQ,
                       compare=False)


def run_stage(name: str, out: Path, dry: bool) -> int:
    t0 = time.perf_counter()
    rec = {"stage": name, "dry_run": dry, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        res = globals()[f"stage_{name}"](dry)
        rec.update(status=res.pop("status", "ok"), **res)
    except Exception as e:   # one failed stage is a result; the others still run
        import traceback
        rec.update(status="error", error=f"{type(e).__name__}: {str(e)[:500]}", traceback=traceback.format_exc()[-3000:],
                   figures={})
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rec, indent=1, default=str) + "\n")
    print(json.dumps({"stage": name, "status": rec["status"], "wall_s": rec["wall_s"], **rec.get("figures", {})},
                     default=str), flush=True)
    return 0 if rec["status"] in ("ok", "skipped") else 1


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def summarize(out: Path, dry: bool) -> int:
    doc = {"dry_run": dry, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}
    meta = out / "run_meta.json"
    if meta.is_file():
        doc["run"] = json.loads(meta.read_text())
    for name in STAGES:
        p = out / f"{name}.json"
        if p.is_file():
            rec = json.loads(p.read_text())
        else:
            why = (out / f"{name}.status").read_text().strip() if (out / f"{name}.status").is_file() else "not run"
            rec = {"stage": name, "status": why, "figures": {}}
        doc["stages"][name] = rec
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    width = max(len(k) for r in doc["stages"].values() for k in r.get("figures", {})) if doc["stages"] else 20
    print(f"{'DRY RUN on the CPU, tiny shapes: no GPU figures' if dry else 'GPU check'} -> {out / 'gpu_check.json'}")
    for name, rec in doc["stages"].items():
        print(f"== {name}: {rec['status']}" + (f" ({rec.get('wall_s')} s)" if rec.get("wall_s") else "")
              + (f" - {rec.get('reason') or rec.get('error')}" if rec["status"] not in ("ok",) else ""))
        for k, v in rec.get("figures", {}).items():
            print(f"   {k:<{width}} {_fmt(v)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", help="a stage name, 'summarize' or 'list'")
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    if a.stage == "list":
        for k, v in (DRY_LIMITS if a.dry_run else STAGES).items():
            print(k, v)
        return 0
    if a.stage == "summarize":
        return summarize(a.dir or a.out, a.dry_run)
    if a.stage not in STAGES:
        ap.error(f"unknown stage {a.stage!r}; stages: {', '.join(STAGES)}")
    return run_stage(a.stage, a.out, a.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
