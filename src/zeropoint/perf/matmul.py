"""Matmul throughput on one device, tinygrad and optionally PyTorch: the calibration behind a peak-table entry.

`matmul_flops(n, precision)` times an n^3 product in tinygrad (TinyJit replays after warm-up, synchronised)
and `torch_matmul_flops` the same in PyTorch on a named device. `matmul_table` gives both, per precision,
with their ratio. A table peak that a measured matmul beats is wrong for the card, and `check_peak` says so.
"""
from __future__ import annotations

import time

from tinygrad import Device, Tensor, TinyJit

from ..appliance.nvml import error_text
from ..engine import compute_dtype, precision_context
from .devices import check_torch_device, torch_sync
from .torch_ref import require_torch

PRECISIONS = ("fp32", "fp16", "bf16")


def _best(fn, sync, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(n: int, precision: str = "fp32", repeats: int = 5, device: str | None = None) -> dict:
    """FLOP/s of tinygrad's n x n @ n x n in `precision` on `device` (default device), best of `repeats`."""
    dev = device or Device.DEFAULT
    dt = compute_dtype(precision)
    with precision_context(precision):
        a = Tensor.rand(n, n, device=dev).cast(dt).contiguous().realize()
        b = Tensor.rand(n, n, device=dev).cast(dt).contiguous().realize()
        sync = Device[dev].synchronize
        t0 = time.perf_counter()
        (a @ b).realize()
        sync()
        first_s = time.perf_counter() - t0
        step = TinyJit(lambda x, y: (x @ y).realize())
        for _ in range(3):   # eager, capture, first replay
            step(a, b)
        sync()
        s = _best(lambda: step(a, b), sync, repeats)
    return {"n": n, "precision": precision, "device": dev, "flops": 2.0 * n ** 3 / s, "best_s": s,
            "first_call_s": first_s, "repeats": repeats}


def torch_matmul_flops(n: int, precision: str, device: str, repeats: int = 5) -> dict:
    torch = require_torch()
    check_torch_device(torch, device)
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    a = torch.rand(n, n, device=device).to(dt)
    b = torch.rand(n, n, device=device).to(dt)
    sync, _ = torch_sync(torch, device)
    for _ in range(3):
        a @ b
    sync()
    s = _best(lambda: a @ b, sync, repeats)
    return {"n": n, "precision": precision, "device": device, "flops": 2.0 * n ** 3 / s, "best_s": s,
            "repeats": repeats,
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.startswith("cuda") else None}


def matmul_table(n: int, precisions=PRECISIONS, torch_device: str | None = None, repeats: int = 5) -> list[dict]:
    """One row per precision: tinygrad FLOP/s, torch FLOP/s on `torch_device` (None: tinygrad only), ratio."""
    rows = []
    for p in precisions:
        row = {"precision": p, "n": n}
        try:
            row["tinygrad"] = matmul_flops(n, p, repeats)
        except Exception as e:   # a dtype a backend cannot compile is a row with its reason, not a dead table
            row["tinygrad"] = {"flops": None, "reason": error_text(e)}
        if torch_device:
            try:
                row["torch"] = torch_matmul_flops(n, p, torch_device, repeats)
            except Exception as e:
                row["torch"] = {"flops": None, "reason": error_text(e)}
            a, b = row["tinygrad"].get("flops"), row["torch"].get("flops")
            row["ratio_tinygrad_over_torch"] = a / b if a and b else None
        rows.append(row)
    return rows


def check_peak(peak: dict, measured_flops: float | None, measured_by: str) -> dict:
    """Attach a measured matmul to a peak record: a table peak below a real measurement is a wrong entry."""
    out = dict(peak)
    if not measured_flops or not peak.get("flops"):
        out["check"] = {"measured_flops": measured_flops, "by": measured_by, "fraction_of_peak": None,
                        "verdict": "unchecked: " + ("no measurement" if not measured_flops else "no peak")}
        return out
    frac = measured_flops / peak["flops"]
    out["check"] = {"measured_flops": measured_flops, "by": measured_by, "fraction_of_peak": frac,
                    "verdict": "consistent" if frac <= 1.05 else
                    "WRONG PEAK: a measured matmul beats the table figure; fix perf/peak.py GPU_PEAKS for this card"}
    return out
