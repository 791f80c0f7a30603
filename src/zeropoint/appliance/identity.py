"""Cheap, stable facts about this box: version, git commit, hardware fingerprint, appliance id.

Everything here is read from the machine (no compute), so run evidence can carry it on every run.
`diag` adds the measured parts (parity, GFLOP/s, library hashes) on top.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .. import __version__
from ..hashing import sha256_json
from .nvml import gpu_inventory_cached, stable_gpu_facts

TINYGRAD_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16",
                  "f16c", "sse4_2", "neon", "asimd", "sve")


@functools.cache
def git_commit() -> str | None:
    src = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def tinygrad_version() -> str | None:
    try:
        return version("tinygrad")
    except PackageNotFoundError:
        return None


def version_info() -> dict:
    """Versions only: nothing here opens a device (DEV unset would make tinygrad open every backend to choose)."""
    gpu = gpu_inventory_cached()
    return {"zeropoint": __version__, "commit": git_commit(), "tinygrad": tinygrad_version(),
            "python": platform.python_version(), "python_executable": sys.executable,
            "dev": os.environ.get("DEV") or None,
            "nvidia_driver": gpu.get("driver_version"), "cuda_driver": gpu.get("cuda_driver_version")}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


@functools.cache
def cpu_facts() -> dict:
    ci = _cpuinfo()
    flags = set((ci.get("flags") or ci.get("Features") or "").split())
    return {
        "model": ci.get("model name") or ci.get("Model") or platform.processor() or None,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": sorted(f for f in TINYGRAD_FLAGS if f in flags),
    }


def memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_id() -> str | None:
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            s = Path(p).read_text().strip()
            if s:
                return s
        except OSError:
            continue
    return None


@functools.cache
def hardware_fingerprint() -> str:
    """SHA-256 of the stable hardware facts (CPU model, arch, cores, ISA flags, memory, and the NVIDIA GPUs'
    name, UUID, memory and compute capability): same box, same print. Without a GPU the facts (and so the
    print) are what they were before GPUs were added to it."""
    cpu = cpu_facts()
    facts = {"cpu_model": cpu["model"], "arch": cpu["arch"], "cores": cpu["logical_cores"],
             "flags": cpu["flags"], "memory_bytes": memory_total_bytes()}
    if gpus := stable_gpu_facts(gpu_inventory_cached()):
        facts["gpus"] = gpus
    return sha256_json(facts)


@functools.cache
def appliance_id() -> str:
    """`ZP-` + 8 uppercase base-36 characters derived from machine identity (machine-id, else hostname + hardware)."""
    basis = machine_id() or (platform.node() + hardware_fingerprint())
    n = int.from_bytes(hashlib.sha256(("zeropoint-appliance:" + basis).encode()).digest()[:8], "big")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    chars = []
    for _ in range(8):
        n, r = divmod(n, 36)
        chars.append(alphabet[r])
    return "ZP-" + "".join(chars)
