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
import time
from pathlib import Path

import numpy as np

# Dense (no sparsity) tensor-core peaks from the vendors' datasheets, FLOP/s. Keys are matched as
# lower-case substrings of the device name NVML/tinygrad reports.
GPU_PEAKS: dict[str, dict[str, float]] = {
    "h200": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},
    "h100 sxm": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},
    "h100 pcie": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "h100": {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12},
    "a100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    "l40s": {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12, "fp16": 362e12},
    "a10g": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    "rtx 4090": {"fp32": 82.6e12, "bf16": 165.2e12, "fp16": 165.2e12},
    "rtx 3090": {"fp32": 35.6e12, "bf16": 71e12, "fp16": 71e12},
    "t4": {"fp32": 8.1e12, "fp16": 65e12},
}


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
        if key in low and precision in peaks:
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
    if gpu_name:
        if (p := gpu_peak(gpu_name, precision)) is not None:
            return p
        return {"flops": None, "source": None, "device": gpu_name, "precision": precision,
                "reason": f"{gpu_name!r} is not in the peak table (perf/peak.py GPU_PEAKS)"}
    return {"flops": None, "source": None, "device": device, "precision": precision,
            "reason": f"no GPU name known for device {device} (NVML unavailable)"}
