"""Per-run performance meter: step times, warm-up vs steady state, tok/s, model FLOPs, MFU, memory, energy.

    meter = PerfMeter(flops_per_step=f.per_step, tokens_per_step=B*T*accum, device="CPU").start()
    for ...: t0 = perf_counter(); trainer.step(...); meter.step(tokens, perf_counter() - t0)
    summary = meter.finish()          # dict; perf.report.write_perf() turns it into perf.json + PNG

`unit` names what a step processes ("tokens"; "images"/"pairs" for the vision bench): step rows and the summary
carry `<unit>_per_s`, as `engine.fit` does for runs.

Warm-up: TinyJit runs call 1 eagerly and captures on call 2, so the first `warmup_steps` (default 2) steps
carry graph building and kernel compilation; they are reported as `compile_s` and left out of the steady
state (median step time over the rest). Memory: peak RSS from getrusage (the kernel's high-water mark),
device memory from tinygrad's allocator counters (bytes currently held, high-water mark sampled per step),
and NVML's used/total when there is an NVIDIA GPU.
"""
from __future__ import annotations

import resource
import sys
import time

import numpy as np
from tinygrad.helpers import GlobalCounters

from .energy import EnergyMeter
from .flops import mfu
from .peak import device_peak


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024   # Linux reports KiB


def tinygrad_mem_bytes() -> dict:
    return {"used": int(GlobalCounters.mem_used),
            "per_device": {str(k): int(v) for k, v in GlobalCounters.mem_used_per_device.items()}}


class PerfMeter:
    def __init__(self, *, flops_per_step: int | None = None, tokens_per_step: int | None = None,
                 device: str = "CPU", precision: str = "fp32", warmup_steps: int = 2, peak: dict | None = None,
                 energy: bool = True, unit: str = "tokens"):
        self.flops_per_step, self.tokens_per_step, self.unit = flops_per_step, tokens_per_step, unit
        self.device, self.precision, self.warmup_steps = device, precision, warmup_steps
        self.peak = peak
        self.steps: list[dict] = []
        self.dev_mem_peak = 0
        self.energy = EnergyMeter() if energy else None
        self.t_start = None

    def start(self) -> "PerfMeter":
        self.t_start = time.perf_counter()
        if self.energy is not None:
            self.energy.start()
        return self

    def step(self, tokens: int | None, seconds: float, loss: float | None = None) -> dict:
        mem = tinygrad_mem_bytes()["used"]
        self.dev_mem_peak = max(self.dev_mem_peak, mem)
        row = {"step": len(self.steps) + 1, "seconds": seconds, self.unit: tokens,
               f"{self.unit}_per_s": tokens / seconds if tokens and seconds > 0 else None, "loss": loss,
               "device_mem_bytes": mem, "rss_peak_bytes": peak_rss_bytes()}
        self.steps.append(row)
        return row

    def finish(self) -> dict:
        wall = time.perf_counter() - self.t_start if self.t_start else None
        energy = self.energy.stop() if self.energy is not None else {"energy_j": None, "reason": "energy metering off"}
        return summarize_steps(self.steps, flops_per_step=self.flops_per_step, device=self.device,
                               precision=self.precision, warmup_steps=self.warmup_steps, peak=self.peak,
                               wall_s=wall, energy=energy, device_mem_peak=self.dev_mem_peak,
                               nvml_memory=_nvml_memory(self.energy), unit=self.unit)


def _nvml_memory(energy: EnergyMeter | None):
    if energy is None or energy.nvml is None or not energy.nvml.available:
        return None
    try:
        return energy.nvml.memory()
    except Exception as e:
        return {"reason": f"NVML memory query failed: {e}"}


def summarize_steps(steps: list[dict], *, flops_per_step: int | None, device: str, precision: str = "fp32",
                    warmup_steps: int = 2, peak: dict | None = None, wall_s: float | None = None,
                    energy: dict | None = None, device_mem_peak: int | None = None, nvml_memory=None,
                    unit: str = "tokens") -> dict:
    """The perf summary of a list of step rows ({seconds, <unit>, ...}); used live and from metrics.jsonl."""
    if peak is None:
        gpu_name = nvml_memory[0]["device"] if isinstance(nvml_memory, list) and nvml_memory else None
        peak = device_peak(device, precision, gpu_name)
    secs = [s["seconds"] for s in steps]
    warm = secs[:warmup_steps]
    steady = secs[warmup_steps:] or secs[-1:]
    med = float(np.median(steady)) if steady else None
    toks = steps[-1][unit] if steps else None
    tps = toks / med if toks and med else None
    return {
        "steps": len(steps), "warmup_steps": min(warmup_steps, len(steps)),
        "compile_s": float(sum(warm)) if warm else None,
        "first_step_s": secs[0] if secs else None,
        "steady_step_s": {"median": med, "min": float(min(steady)) if steady else None,
                          "max": float(max(steady)) if steady else None, "n": len(steady)},
        f"{unit}_per_step": toks, f"{unit}_per_s": tps,
        "flops_per_step": flops_per_step,
        "achieved_flops_per_s": flops_per_step / med if flops_per_step and med else None,
        "peak": peak, "mfu": mfu(flops_per_step, med, peak.get("flops")) if flops_per_step and med else None,
        "memory": {"rss_peak_bytes": max((s.get("rss_peak_bytes") or 0 for s in steps), default=None) or peak_rss_bytes(),
                   "device_mem_peak_bytes": device_mem_peak,
                   "device_mem_source": "tinygrad GlobalCounters.mem_used (allocator bytes held), max over steps",
                   "nvml": nvml_memory},
        "energy": energy, "wall_s": wall_s, "device": device, "precision": precision,
    }
