"""`zpctl diag`: every figure measured on this machine, nothing typed in.

Hardware facts come from /proc and the OS; accelerators from tinygrad backends that actually open (each probed
in its own process, see devices.py), NVML's inventory and nvidia-smi where present; library hashes from the files compute depends on; parity and GFLOP/s from a real
fp32 matmul on the default tinygrad device checked against numpy.
"""
from __future__ import annotations

import ctypes.util
import glob
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import tinygrad
from tinygrad import Device, Tensor, TinyJit

from ..hashing import sha256_file
from ..scope import device_is_simulated, device_name, mock_flags_set
from ..workspace import workspace
from .devices import probe_backends
from .identity import appliance_id, cpu_facts, git_commit, hardware_fingerprint, memory_total_bytes, version_info
from .nvml import error_text, gpu_inventory

PARITY_SIZES = (64, 128, 256, 512, 1024)
PARITY_RTOL = 1e-4   # fp32, K<=1024: summation order alone gives ~1e-6; 1e-4 catches real miscompiles


def disks() -> list[dict]:
    seen, out = set(), []
    for path in (str(workspace().root), "/", os.path.expanduser("~"), "/tmp"):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        key = st.f_fsid
        if key in seen:
            continue
        seen.add(key)
        out.append({"path": path, "total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize})
    return out


def nvidia_smi() -> list[dict] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    q = "name,uuid,driver_version,memory.total,power.limit,compute_cap"
    try:
        out = subprocess.run([exe, f"--query-gpu={q}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [{"error": str(e)}]
    rows = []
    for line in out.stdout.strip().splitlines():
        vals = [v.strip() for v in line.split(",")]
        rows.append(dict(zip(q.split(","), vals)))
    return rows


def tinygrad_devices() -> list[dict]:
    """Open each tinygrad backend for real, each in its own process; report which open and why the others do not."""
    return probe_backends()


def default_device() -> tuple[str | None, str | None]:
    """(tinygrad's default device, None) or (None, why none): with DEV unset tinygrad opens backends to choose."""
    try:
        return device_name(), None
    except Exception as e:   # "no usable devices", or a backend that breaks while being chosen
        return None, error_text(e)


def hardware() -> dict:
    dev, why = default_device()
    return {"cpu": cpu_facts(), "memory_bytes": memory_total_bytes(), "disks": disks(),
            "accelerators": {"default_device": dev, "default_device_error": why, "tinygrad": tinygrad_devices(),
                             "nvml": gpu_inventory(), "nvidia_smi": nvidia_smi()},
            "fingerprint": hardware_fingerprint()}


def tree_manifest_sha256(root: Path) -> tuple[str, int]:
    """SHA-256 of the `sha256sum` listing of a tree (sorted relative paths, __pycache__ excluded).

    Reproducible by hand: cd ROOT && find . -type f ! -path '*/__pycache__/*' -printf '%P\\n' | LC_ALL=C sort
    | xargs -d '\\n' sha256sum | sha256sum
    """
    files = sorted((p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                   key=lambda p: p.relative_to(root).as_posix().encode())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n".encode())
    return h.hexdigest(), len(files)


def libraries() -> list[dict]:
    libs = []
    tg_root = Path(tinygrad.__file__).resolve().parent
    digest, n = tree_manifest_sha256(tg_root)
    libs.append({"name": "tinygrad", "version": version_info()["tinygrad"], "path": str(tg_root), "kind": "package-tree",
                 "files": n, "sha256": digest})
    clang = shutil.which("clang")
    if clang:
        real = Path(clang).resolve()
        libs.append({"name": "clang", "version": _clang_version(clang), "path": str(real), "kind": "binary",
                     "sha256": sha256_file(real)})
    else:
        libs.append({"name": "clang", "version": None, "path": None, "kind": "binary", "sha256": None,
                     "reason": "clang not on PATH: tinygrad's CPU device cannot compile kernels (run make setup)"})
    for name in ("cuda", "nvidia-ml"):
        found = ctypes.util.find_library(name)
        paths = [found] if found and os.path.isabs(found) else sorted(
            glob.glob(f"/usr/lib/x86_64-linux-gnu/lib{name}.so*") + glob.glob(f"/usr/lib64/lib{name}.so*"))
        for p in paths[:1]:
            real = Path(p).resolve()
            libs.append({"name": f"lib{name}", "version": None, "path": str(real), "kind": "driver",
                         "sha256": sha256_file(real)})
    return libs


def _clang_version(exe: str) -> str | None:
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_parity(sizes=PARITY_SIZES, rtol: float = PARITY_RTOL) -> list[dict]:
    """fp32 matmul on the default tinygrad device vs numpy; error relative to the largest reference entry.

    tinygrad is timed through TinyJit replays (what a training step sees: no per-call graph rewriting), after
    warm-up; the first call's time (kernel compile included) is reported separately.
    """
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        ta, tb = Tensor(a).realize(), Tensor(b).realize()
        t0 = time.perf_counter()
        out = (ta @ tb).numpy()                   # first call compiles the kernel
        first_s = time.perf_counter() - t0
        err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
        step = TinyJit(lambda x, y: (x @ y).realize())
        def run_tg():
            step(ta, tb)
            Device[ta.device].synchronize()
        for _ in range(3):                        # eager, capture, first replay
            run_tg()
        flops = 2.0 * n ** 3
        reps = 3 if n >= 512 else 10
        tg_s, np_s = _best_time(run_tg, reps), _best_time(lambda: a @ b, reps)
        rows.append({"size": n, "max_rel_error": err, "tolerance": rtol, "status": "PASS" if err <= rtol else "FAIL",
                     "tinygrad_gflops": round(flops / tg_s / 1e9, 3), "numpy_gflops": round(flops / np_s / 1e9, 3),
                     "tinygrad_first_call_s": round(first_s, 4)})
    return rows


def run_diag(with_parity: bool = True) -> dict:
    dev, why = default_device()
    simulated_reasons = [f"mock flag {f} is set" for f in mock_flags_set()]
    if dev is not None and device_is_simulated(dev):
        simulated_reasons.append(f"tinygrad device {dev} is simulated")
    report = {"appliance_id": appliance_id(), "commit": git_commit(), "version": version_info(),
              "hardware": hardware(), "libraries": libraries()}
    if not with_parity:
        report["parity"] = {"status": "SKIPPED", "reason": "--no-parity given", "results": []}
    elif dev is None:
        report["parity"] = {"device": None, "status": "ERROR", "reason": f"no default tinygrad device: {why}; "
                            "set DEV to a backend that opens (see hardware.accelerators.tinygrad)", "results": []}
    elif device_is_simulated(dev):
        report["parity"] = {"status": "SKIPPED", "device": dev,
                            "reason": f"{dev} is a simulated device: it computes nothing to compare", "results": []}
    else:
        try:
            results = matmul_parity()
            report["parity"] = {"device": dev, "dtype": "float32", "status": "PASS" if all(r["status"] == "PASS"
                                for r in results) else "FAIL", "results": results}
        except Exception as e:  # a broken device is a diagnosis, not a crash
            report["parity"] = {"device": dev, "status": "ERROR", "reason": error_text(e), "results": []}
    report["simulated"] = bool(simulated_reasons)
    report["simulated_reasons"] = simulated_reasons
    return report
