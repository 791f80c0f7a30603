"""Energy meters: Intel/AMD RAPL through /sys/class/powercap, NVIDIA through NVML. Readings or null + reason.

Never an estimate dressed as a reading: `energy_j` is only ever a counter difference or an integral of
sampled power. A TDP-based figure, when asked for, goes in `estimated_energy_j` with its basis stated.

RAPL: each top-level zone (`intel-rapl:N`, one per package; AMD exposes the same tree) has `energy_uj`, a
counter that wraps at `max_energy_range_uj`. A sampler thread reads it at >= 1 Hz so a wrap between two
reads is seen (one wrap per interval is assumed; at 1 Hz a wrap needs > 200 kW, so that holds).
NVML: `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver load, Volta+) where supported, else
`nvmlDeviceGetPowerUsage` (mW) sampled at the same cadence and integrated (trapezoids).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from ..appliance.nvml import load_nvml as _load_nvml

POWERCAP = Path("/sys/class/powercap")


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Increase of a wrapping counter between two reads (at most one wrap between them)."""
    return end - start if end >= start else end + max_range - start


# ---- RAPL -------------------------------------------------------------------------------------------------
def rapl_zones(root: Path = POWERCAP) -> tuple[list[dict], str | None]:
    """Top-level package zones with a readable counter, or ([], reason)."""
    if not root.is_dir():
        return [], f"{root} does not exist (no RAPL powercap driver on this machine / in this container)"
    zones, problems = [], []
    for z in sorted(root.glob("*-rapl:*")):
        if z.name.count(":") != 1:      # sub-zones (core, uncore, dram) are inside the package total
            continue
        try:
            name = (z / "name").read_text().strip()
            max_range = int((z / "max_energy_range_uj").read_text())
            int((z / "energy_uj").read_text())
        except PermissionError:
            problems.append(f"{z}/energy_uj is not readable (root-only since Linux 5.10)")
            continue
        except (OSError, ValueError) as e:
            problems.append(f"{z}: {e}")
            continue
        zones.append({"path": z, "name": name, "max_range": max_range})
    if not zones:
        return [], "; ".join(problems) or f"no *-rapl:N zones under {root}"
    return zones, None


class RaplMeter:
    def __init__(self, root: Path = POWERCAP):
        self.zones, self.reason = rapl_zones(root)
        self.last: list[int] = []
        self.total_uj: list[int] = [0] * len(self.zones)

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def _read(self) -> list[int]:
        return [int((z["path"] / "energy_uj").read_text()) for z in self.zones]

    def start(self) -> None:
        self.last = self._read()
        self.total_uj = [0] * len(self.zones)

    def sample(self) -> None:
        now = self._read()
        for i, (a, b) in enumerate(zip(self.last, now)):
            self.total_uj[i] += counter_delta(a, b, self.zones[i]["max_range"])
        self.last = now

    def joules(self) -> float:
        return sum(self.total_uj) / 1e6

    def describe(self) -> dict:
        return {"meter": "rapl", "zones": [z["name"] for z in self.zones],
                "per_zone_j": {z["name"]: uj / 1e6 for z, uj in zip(self.zones, self.total_uj)}}


# ---- NVML -------------------------------------------------------------------------------------------------
def load_nvml(module=None):
    """(pynvml module initialised, None) or (None, reason). `module` lets tests pass a fake."""
    return _load_nvml(module)


class NvmlMeter:
    def __init__(self, module=None, indices: list[int] | None = None):
        self.nvml, self.reason = load_nvml(module)
        self.handles, self.names, self.mode = [], [], None
        if self.nvml is None:
            return
        n = self.nvml.nvmlDeviceGetCount()
        for i in indices if indices is not None else range(n):
            h = self.nvml.nvmlDeviceGetHandleByIndex(i)
            self.handles.append(h)
            name = self.nvml.nvmlDeviceGetName(h)
            self.names.append(name.decode() if isinstance(name, bytes) else str(name))
        try:
            for h in self.handles:
                self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            self.mode = "total_energy_counter"
        except Exception:
            self.mode = "power_sampling"
        self.total_j = [0.0] * len(self.handles)
        self.last_mj: list[int] = []
        self.last_w: list[float] = []
        self.last_t = 0.0
        self.n_samples = 0
        self.mem_peak = [0] * len(self.handles)   # NVML used bytes, max over samples (the card, all processes)

    @property
    def available(self) -> bool:
        return self.nvml is not None and bool(self.handles)

    def _power_w(self) -> list[float]:
        return [self.nvml.nvmlDeviceGetPowerUsage(h) / 1000.0 for h in self.handles]

    def start(self) -> None:
        self.total_j = [0.0] * len(self.handles)
        self.last_t = time.monotonic()
        self.n_samples = 1
        self.mem_peak = [0] * len(self.handles)
        try:
            self._sample_memory()
        except Exception:
            pass
        if self.mode == "total_energy_counter":
            self.last_mj = [int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]
        else:
            self.last_w = self._power_w()

    def _sample_memory(self) -> None:
        for i, h in enumerate(self.handles):
            self.mem_peak[i] = max(self.mem_peak[i], int(self.nvml.nvmlDeviceGetMemoryInfo(h).used))

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.n_samples += 1
        try:
            self._sample_memory()
        except Exception:   # memory is a side reading: never lose the energy sample for it
            pass
        if self.mode == "total_energy_counter":
            cur = [int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]
            for i, (a, b) in enumerate(zip(self.last_mj, cur)):
                self.total_j[i] += counter_delta(a, b, 2 ** 64) / 1000.0   # unsigned long long mJ
            self.last_mj = cur
        else:
            w = self._power_w()
            dt = now - self.last_t
            for i, (a, b) in enumerate(zip(self.last_w, w)):
                self.total_j[i] += 0.5 * (a + b) * dt
            self.last_w = w
        self.last_t = now

    def joules(self) -> float:
        return sum(self.total_j)

    def memory(self) -> list[dict]:
        out = []
        for name, h in zip(self.names, self.handles):
            mi = self.nvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"device": name, "used_bytes": int(mi.used), "total_bytes": int(mi.total),
                        "used_peak_bytes": max(int(mi.used), self.mem_peak[len(out)]) if self.mem_peak else int(mi.used),
                        "used_peak_note": "max of NVML used memory over samples at the meter's interval (whole card)"})
        return out

    def describe(self) -> dict:
        return {"meter": "nvml", "mode": self.mode, "devices": self.names, "samples": self.n_samples,
                "per_device_j": dict(zip(self.names, self.total_j))}


# ---- the meter a run uses ---------------------------------------------------------------------------------
class EnergyMeter:
    """Start before the work, stop after; `result()` gives joules per meter or null with the reason.

    A daemon thread samples every `interval_s` (<= 1 s) so counters that wrap and power that varies are seen."""

    def __init__(self, interval_s: float = 0.5, rapl_root: Path = POWERCAP, nvml_module=None, use_nvml: bool = True):
        self.interval_s = min(interval_s, 1.0)
        self.rapl = RaplMeter(rapl_root)
        self.nvml = NvmlMeter(nvml_module) if use_nvml else None
        self.meters = [m for m in (self.rapl, self.nvml) if m is not None and m.available]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.t0 = self.t1 = None

    def start(self) -> "EnergyMeter":
        for m in self.meters:
            m.start()
        self.t0 = time.monotonic()
        if self.meters:
            self._thread = threading.Thread(target=self._loop, name="zp-energy", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            for m in self.meters:
                try:
                    m.sample()
                except Exception:   # a transient sysfs/NVML read error must not kill the run
                    pass

    def joules_now(self) -> float | None:
        """Joules since start() over every meter, sampled now (None without a meter): bench segments use this
        to attribute energy to the side that ran between two reads."""
        if not self.meters:
            return None
        self.sample()
        with self._lock:
            return sum(m.joules() for m in self.meters)

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
        self.t1 = time.monotonic()
        return self.result()

    def result(self) -> dict:
        reasons = {"rapl": self.rapl.reason}
        if self.nvml is not None:
            reasons["nvml"] = self.nvml.reason
        if not self.meters:
            return {"energy_j": None, "energy_kwh": None, "meters": [],
                    "reason": "no energy meter on this machine: " + "; ".join(f"{k}: {v}" for k, v in reasons.items() if v)}
        j = sum(m.joules() for m in self.meters)
        wall = (self.t1 or time.monotonic()) - (self.t0 or time.monotonic())
        return {"energy_j": j, "energy_kwh": j / 3.6e6, "avg_power_w": j / wall if wall > 0 else None,
                "wall_s": wall, "meters": [m.describe() for m in self.meters],
                "not_metered": {k: v for k, v in reasons.items() if v}}


def estimated_energy(wall_s: float, tdp_w: float | None, basis: str) -> dict:
    """A clearly labelled estimate (TDP x time); never put into `energy_j`."""
    if not tdp_w:
        return {"estimated_energy_j": None, "estimated_basis": "no TDP known"}
    return {"estimated_energy_j": tdp_w * wall_s, "estimated_basis": f"{basis}: {tdp_w} W x {wall_s:.1f} s (upper bound, not a reading)"}
