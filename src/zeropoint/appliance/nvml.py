"""NVIDIA GPU inventory from NVML (the `nvidia-ml-py` package, imported as `pynvml`), or null with the reason.

Read-only queries, no compute: name, UUID, PCI bus, memory, compute capability, ECC mode, power limits and
clocks of every GPU, plus the driver, CUDA-driver and NVML versions. A field the card or driver does not
support is null and its NVML error is kept under `errors`; a missing library or driver makes the whole
inventory `{"available": false, "reason": ...}`. Every function takes `module=` so tests can pass a fake NVML.
"""
from __future__ import annotations

import functools

# NVML's clock-type enum (nvml.h: NVML_CLOCK_GRAPHICS, _SM, _MEM); used when the module lacks the names
_CLOCKS = {"graphics": ("NVML_CLOCK_GRAPHICS", 0), "sm": ("NVML_CLOCK_SM", 1), "memory": ("NVML_CLOCK_MEM", 2)}


def load_nvml(module=None):
    """(initialised NVML module, None) or (None, reason)."""
    if module is None:
        try:
            import pynvml as module  # nvidia-ml-py
        except ImportError:
            return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        module.nvmlInit()
        if module.nvmlDeviceGetCount() < 1:
            return None, "NVML reports no NVIDIA GPU"
    except Exception as e:   # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable: {error_text(e)}"
    return module, None


def error_text(e: BaseException) -> str:
    """`Type: first line of the message`, or `Type (no message)`: never an IndexError on an empty message."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else f"{type(e).__name__} (no message)"


def _text(v) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"   # NVML encodes 13.0 as 13000


def gpu_inventory(module=None) -> dict:
    """Every NVIDIA GPU NVML sees, with the driver stack's versions. Never raises."""
    nv, reason = load_nvml(module)
    if nv is None:
        return {"available": False, "reason": reason, "gpus": []}
    errors: dict[str, str] = {}

    def q(key, fn, *args, conv=lambda x: x):
        try:
            return conv(fn(*args))
        except Exception as e:   # NVMLError_NotSupported and friends: null for this field, reason kept
            errors[key] = error_text(e)
            return None

    inv = {"available": True, "source": "nvml",
           "driver_version": q("driver_version", nv.nvmlSystemGetDriverVersion, conv=_text),
           "nvml_version": q("nvml_version", nv.nvmlSystemGetNVMLVersion, conv=_text),
           "cuda_driver_version": q("cuda_driver_version",
                                    getattr(nv, "nvmlSystemGetCudaDriverVersion_v2", None)
                                    or nv.nvmlSystemGetCudaDriverVersion, conv=_cuda_version),
           "gpus": []}
    try:
        count = nv.nvmlDeviceGetCount()
        for i in range(count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            p = f"gpu{i}."
            mem = q(p + "memory", nv.nvmlDeviceGetMemoryInfo, h)
            ecc = q(p + "ecc", nv.nvmlDeviceGetEccMode, h)
            cc = q(p + "compute_capability", nv.nvmlDeviceGetCudaComputeCapability, h)
            g = {"index": i, "name": q(p + "name", nv.nvmlDeviceGetName, h, conv=_text),
                 "uuid": q(p + "uuid", nv.nvmlDeviceGetUUID, h, conv=_text),
                 "pci_bus_id": q(p + "pci", nv.nvmlDeviceGetPciInfo, h, conv=lambda x: _text(x.busId)),
                 "memory_total_bytes": int(mem.total) if mem is not None else None,
                 "memory_used_bytes": int(mem.used) if mem is not None else None,
                 "compute_capability": f"{cc[0]}.{cc[1]}" if cc is not None else None,
                 "ecc": {"current": bool(ecc[0]), "pending": bool(ecc[1])} if ecc is not None else None,
                 "power_limit_w": q(p + "power_limit", nv.nvmlDeviceGetPowerManagementLimit, h, conv=lambda x: x / 1000),
                 "power_default_limit_w": q(p + "power_default_limit", nv.nvmlDeviceGetPowerManagementDefaultLimit, h,
                                            conv=lambda x: x / 1000),
                 "clocks_max_mhz": {}, "clocks_mhz": {}}
            for name, (const, fallback) in _CLOCKS.items():
                typ = getattr(nv, const, fallback)
                g["clocks_max_mhz"][name] = q(f"{p}max_clock.{name}", nv.nvmlDeviceGetMaxClockInfo, h, typ)
                g["clocks_mhz"][name] = q(f"{p}clock.{name}", nv.nvmlDeviceGetClockInfo, h, typ)
            inv["gpus"].append(g)
    except Exception as e:   # a device list that fails half-way still reports what it had
        errors["devices"] = error_text(e)
    finally:
        try:
            nv.nvmlShutdown()   # balances nvmlInit (NVML counts them)
        except Exception:
            pass
    inv["errors"] = errors
    return inv


@functools.cache
def gpu_inventory_cached() -> dict:
    """The inventory, read once per process (evidence and the fingerprint ask for it on every run)."""
    return gpu_inventory()


def stable_gpu_facts(inv: dict) -> list[dict]:
    """What identifies the cards themselves (for the hardware fingerprint): not clocks, usage or driver."""
    return [{k: g.get(k) for k in ("name", "uuid", "memory_total_bytes", "compute_capability")}
            for g in inv.get("gpus", [])]
