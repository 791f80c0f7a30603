"""The perf hooks recipes pass to `engine.fit` (`hooks=PERF_HOOKS`); each call must never break a training run.

    meter = perf_begin(run)                 # start the energy meter (null + reason when there is none)
    run.log_step(..., **perf_step_fields()) # device memory (tinygrad allocator) and peak RSS per step
    perf_end(run, meter)                    # runs/<id>/perf.json + perf.png from metrics.jsonl + energy
"""
from __future__ import annotations

import sys

from ..engine.loop import RunHooks
from .energy import EnergyMeter
from .meter import peak_rss_bytes, tinygrad_mem_bytes
from .report import write_run_perf


def perf_begin(run):
    if run is None:
        return None
    try:
        return EnergyMeter().start()
    except Exception as e:   # perf is evidence about the run, never a reason for it to fail
        print(f"perf: energy meter not started: {e}", file=sys.stderr)
        return None


def perf_step_fields() -> dict:
    try:
        return {"device_mem_bytes": tinygrad_mem_bytes()["used"], "rss_peak_bytes": peak_rss_bytes()}
    except Exception:
        return {}


def perf_end(run, meter) -> dict | None:
    if run is None:
        return None
    try:
        energy = meter.stop() if meter is not None else None
        if energy is not None and energy.get("energy_j") is None:
            energy["reason"] = energy.get("reason") or "no energy meter"
        return write_run_perf(run, energy=energy)
    except Exception as e:
        print(f"perf: perf.json not written: {type(e).__name__}: {e}", file=sys.stderr)
        return None


PERF_HOOKS = RunHooks(begin=perf_begin, step_fields=perf_step_fields, end=perf_end)
