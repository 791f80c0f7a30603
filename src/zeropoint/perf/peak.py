"""Peak FLOP/s of the device a run used: a table of known accelerators, and for CPUs a calibrated matmul.

The CPU figure is a measurement, not a datasheet number: the best of a few fp32 2048^3 matmuls through
numpy's BLAS, measured once per machine and cached in `~/.cache/zeropoint/cpu_peak.json` (override the
directory with ZP_CACHE_DIR). It is reported with `source: "calibrated"` so nobody mistakes it for a spec.
MFU against it reads as "fraction of what a good BLAS gets on this CPU". 2048, not 1024: on a 2-core EPYC
numpy reached 45 GFLOP/s at 1024 and 77 at 2048, and PyTorch's own training step ran at ~67, so a 1024
calibration let a framework's MFU pass 100%. The load average at calibration time is recorded with it.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
from tinygrad import Device

from ..appliance.nvml import gpu_inventory_cached

# Dense (no sparsity) peaks from the vendors' datasheets, FLOP/s: fp32 is the non-tensor (vector) rate, tf32/bf16/
# fp16 the tensor/matrix-core rate with fp32 accumulation. The datasheets print the sparse figure first for
# tf32/bf16/fp16; the dense one is half of it. Keys are matched as lower-case substrings of the device name
# NVML (or tinygrad's AMD arch, see AMD_ARCH) reports, in order: specific names before generic ones.
# Sources: NVIDIA H200 Tensor Core GPU datasheet (H200 SXM: FP32 67 TF, TF32 989 TF*, BF16/FP16 1,979 TF*;
# H200 NVL: 60 / 835* / 1,671*), NVIDIA H100 datasheet (SXM 67 / 989* / 1,979*; PCIe 51 / 756* / 1,513*;
# NVL 60 / 835* / 1,671*), NVIDIA A100 datasheet (19.5 / 156 / 312, dense as printed), NVIDIA L4 datasheet
# (30.3 / 120* / 242*), NVIDIA L40S datasheet (91.6 / 183 / 362 dense), NVIDIA Ada GPU architecture whitepaper
# appendix (RTX 4090: 82.6 FP32, 165.2 FP16/BF16 tensor with FP32 accumulate, dense), NVIDIA Ampere GA102
# whitepaper (RTX 3090: 35.6 / 71 dense FP16 with FP32 accumulate), NVIDIA A10 datasheet (31.2 / 125* / 250*),
# NVIDIA T4 datasheet (8.1 FP32, 65 FP16 mixed), NVIDIA V100 datasheet (SXM2: 15.7 FP32, 125 tensor),
# AMD Instinct MI300X data sheet (FP32 vector 81.7, TF32 653.7, BF16/FP16 1,307.4 dense), AMD Instinct MI250X
# data sheet (FP32 vector 47.9, BF16/FP16 383). (* = printed with sparsity; halved here.)
GPU_PEAKS: dict[str, dict[str, float]] = {
    "h200 nvl": {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12},
    "h200": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},
    "h100 nvl": {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12, "fp16": 835.5e12},
    "h100 pcie": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "h100": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},
    "a100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    "l40s": {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12, "fp16": 362e12},
    "l4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12},
    "a10g": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    "a10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    "rtx 4090": {"fp32": 82.6e12, "bf16": 165.2e12, "fp16": 165.2e12},
    "rtx 3090": {"fp32": 35.6e12, "bf16": 71e12, "fp16": 71e12},
    "t4": {"fp32": 8.1e12, "fp16": 65e12},
    "v100": {"fp32": 15.7e12, "fp16": 125e12},
    "mi300x": {"fp32": 81.7e12, "tf32": 653.7e12, "bf16": 1307.4e12, "fp16": 1307.4e12},
    "mi250x": {"fp32": 47.9e12, "bf16": 383e12, "fp16": 383e12},
}
# tinygrad's AMD backend names the chip by its LLVM target, not its product name; one target can be several
# products (gfx942 is MI300X, MI300A and MI325X), so the mapping says which entry it assumes.
AMD_ARCH = {"gfx942": "mi300x", "gfx90a": "mi250x"}


def gpu_name_for(device: str) -> tuple[str | None, str | None]:
    """(name to look up in GPU_PEAKS, None) or (None, why not) for a tinygrad device string."""
    kind = device.split(":")[0].upper()
    if kind in ("CUDA", "NV"):
        inv = gpu_inventory_cached()
        if not inv["available"]:
            return None, f"no GPU name for {device}: {inv['reason']}"
        idx = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
        gpus = inv["gpus"]
        return (gpus[idx]["name"], None) if idx < len(gpus) and gpus[idx]["name"] else (None, f"NVML has no GPU {idx}")
    if kind in ("AMD", "HIP"):
        try:
            arch = str(getattr(Device[device].renderer, "arch", "") or getattr(Device[device], "arch", "")).split(":")[0]
        except Exception as e:
            return None, f"{device} does not open: {type(e).__name__}"
        return (AMD_ARCH[arch], None) if arch in AMD_ARCH else (None, f"AMD arch {arch!r} is not in perf/peak.py AMD_ARCH")
    return None, f"no peak table for {kind} devices"


def cache_dir() -> Path:
    return Path(os.environ.get("ZP_CACHE_DIR") or Path.home() / ".cache" / "zeropoint")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_peak(name: str, precision: str = "fp32") -> dict | None:
    low = name.lower()
    for key, peaks in GPU_PEAKS.items():   # insertion order: specific names ("h100 pcie") before generic ones
        # whole-token match: "l4" must not match "L40S", nor "a10" "A100"
        if re.search(rf"(?<![a-z0-9]){re.escape(key)}(?![a-z0-9])", low) and precision in peaks:
            return {"flops": peaks[precision], "source": "table", "device": name, "precision": precision,
                    "note": f"vendor dense {precision} peak for {key!r}"}
    return None


def calibrate_cpu(n: int = 2048, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b   # warm the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def cpu_peak(refresh: bool = False) -> dict:
    """Calibrated fp32 matmul FLOP/s of this CPU, cached per (CPU model, cores, numpy version)."""
    key = f"{cpu_model()}|{os.cpu_count()}|numpy {np.__version__}|n2048"
    path = cache_dir() / "cpu_peak.json"
    if not refresh and path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("key") == key and rec.get("flops", 0) > 0:
                return {**rec, "cached": True}
        except (OSError, json.JSONDecodeError):
            pass   # unreadable cache: measure again
    flops = calibrate_cpu()
    rec = {"flops": flops, "source": "calibrated", "device": cpu_model(), "precision": "fp32", "key": key,
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_average_1m": os.getloadavg()[0],
           "note": "best of 5 fp32 2048^3 matmuls through numpy BLAS on all cores, measured once and cached"}
    if rec["load_average_1m"] > (os.cpu_count() or 1):
        # other work was running: this figure understates the CPU (measured 30 vs 77 GFLOP/s at load 9 on 2
        # cores), so use it for this run only and measure again next time rather than keep it
        return {**rec, "cached": False, "note": rec["note"] + "; measured under load, not cached"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=2))
    os.replace(tmp, path)
    return {**rec, "cached": False}


def device_peak(device: str, precision: str = "fp32", gpu_name: str | None = None) -> dict:
    """Peak for a tinygrad device string ('CPU', 'CUDA', 'NV', ...). `flops` is None with a reason if unknown."""
    kind = device.split(":")[0].upper()
    if kind in ("CPU", "CLANG", "LLVM"):
        return cpu_peak()
    if not gpu_name:
        gpu_name, why = gpu_name_for(device)
        if gpu_name is None:
            return {"flops": None, "source": None, "device": device, "precision": precision, "reason": why}
    if gpu_name:
        if (p := gpu_peak(gpu_name, precision)) is not None:
            return p
        return {"flops": None, "source": None, "device": gpu_name, "precision": precision,
                "reason": f"{gpu_name!r} is not in the peak table (perf/peak.py GPU_PEAKS)"}
    return {"flops": None, "source": None, "device": device, "precision": precision,
            "reason": f"no GPU name known for device {device} (NVML unavailable)"}
