"""`zpctl health`: green | yellow | red from named checks, each with status and detail."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
from tinygrad import Tensor

from ..scope import device_is_simulated, device_name, mock_flags_set
from ..workspace import workspace
from .nvml import error_text, gpu_inventory

GiB = 1 << 30
RANK = {"green": 0, "yellow": 1, "red": 2}


@dataclass
class Check:
    name: str
    status: str   # green | yellow | red
    detail: str


def _writable_dir(path) -> tuple[bool, str]:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".zp-health-", delete=True) as f:
            f.write(b"ok")
            f.flush()
        return True, f"{path} is writable"
    except OSError as e:
        return False, f"{path} is not writable: {e}"


def check_data_dir() -> Check:
    ok, detail = _writable_dir(workspace().root)
    return Check("data_dir_writable", "green" if ok else "red", detail + ("" if ok else "; set ZP_HOME to a writable directory"))


def check_audit_log() -> Check:
    log = workspace().audit_log
    if log.exists():
        ok = os.access(log, os.W_OK)
        return Check("audit_log_writable", "green" if ok else "red",
                     f"{log} is appendable" if ok else f"{log} is not writable; fix its permissions")
    ok, detail = _writable_dir(log.parent)
    return Check("audit_log_writable", "green" if ok else "red",
                 f"{log} does not exist yet; its directory is writable" if ok else detail)


def check_device() -> Check:
    try:
        dev = device_name()
    except Exception as e:   # DEV unset and no backend opens, or one that breaks while tinygrad chooses
        return Check("tinygrad_device", "red", f"no default tinygrad device: {error_text(e)}; "
                     "set DEV to a backend that opens (zpctl diag lists them)")
    if device_is_simulated(dev):
        return Check("tinygrad_device", "red", f"{dev} is a simulated device; set DEV=CPU (or a GPU backend) for real compute")
    try:
        a = np.arange(16, dtype=np.float32).reshape(4, 4)
        got = (Tensor(a) @ Tensor(a)).numpy()
        if not np.allclose(got, a @ a, rtol=1e-5):
            return Check("tinygrad_device", "red", f"{dev} computed a wrong 4x4 matmul")
        return Check("tinygrad_device", "green", f"{dev} computed a 4x4 matmul matching numpy")
    except Exception as e:  # any backend failure makes the device unusable
        return Check("tinygrad_device", "red", f"{dev} failed: {error_text(e)}")


def check_disk(min_green: int = 5 * GiB, min_yellow: int = 1 * GiB) -> Check:
    free = shutil.disk_usage(workspace().root if workspace().root.exists() else "/").free
    status = "green" if free >= min_green else "yellow" if free >= min_yellow else "red"
    return Check("disk_space", status, f"{free / GiB:.1f} GiB free under {workspace().root}"
                 + ("" if status == "green" else f" (want >= {min_green / GiB:.0f} GiB)"))


def check_clang() -> Check:
    exe = shutil.which("clang")
    if exe:
        return Check("clang_present", "green", f"clang at {exe}")
    msg = "clang not found: tinygrad's CPU device needs it (run make setup / apt-get install clang)"
    try:
        dev = device_name()
    except Exception:   # no default device at all: check_device says why
        dev = "CPU"
    if dev.split(":")[0] != "CPU":   # a GPU default compiles with its own toolchain (nvrtc, comgr, Metal)
        return Check("clang_present", "yellow", f"{msg}; the default device {dev} does not need it")
    return Check("clang_present", "red", msg)


def check_gpus(module=None) -> Check:
    """NVML's view of the NVIDIA GPUs: VRAM and energy figures need it whenever the default device is one."""
    inv = gpu_inventory(module)
    try:
        dev = device_name().split(":")[0]
    except Exception:
        dev = None
    if inv["available"]:
        gpus = "; ".join(f"{g['name']} {(g['memory_total_bytes'] or 0) / GiB:.0f} GiB" for g in inv["gpus"])
        return Check("gpus", "green", f"{gpus} (driver {inv['driver_version']}, CUDA {inv['cuda_driver_version']})")
    if dev in ("CUDA", "NV"):
        return Check("gpus", "yellow", f"default device {dev} but no NVML ({inv['reason']}): no VRAM or energy "
                     "readings; pip install nvidia-ml-py")
    return Check("gpus", "green", f"no NVIDIA GPU in use ({inv['reason']})")


def check_mock_flags() -> Check:
    flags = mock_flags_set()
    if flags:
        return Check("no_mock_flags", "red", f"mock flag(s) set: {', '.join(flags)}; unset them for real compute")
    return Check("no_mock_flags", "green", "no mock flags set")


def run_health() -> dict:
    checks = [check_data_dir(), check_audit_log(), check_clang(), check_device(), check_gpus(), check_disk(),
              check_mock_flags()]
    overall = max((c.status for c in checks), key=RANK.__getitem__)
    return {"status": overall, "exit_code": RANK[overall], "checks": [asdict(c) for c in checks]}
