"""Both sides of a side-by-side on one device: tinygrad's device, the PyTorch device that matches it, how each
is synchronised before a clock is read, and PyTorch's device-memory high-water mark (tinygrad's:
`perf.memory.AllocatorPeak`).

tinygrad CUDA/NV -> torch `cuda`; AMD/HIP -> `cuda` (ROCm builds of PyTorch call the GPU `cuda` too); METAL ->
`mps`; CPU -> `cpu`. Any other backend has no PyTorch counterpart and is refused with the fix.
"""
from __future__ import annotations

from tinygrad import Device

from ..errors import ZeropointError

TORCH_DEVICE = {"CUDA": "cuda", "NV": "cuda", "AMD": "cuda", "HIP": "cuda", "METAL": "mps", "CPU": "cpu"}


def torch_device_for(tinygrad_device: str) -> str:
    kind = tinygrad_device.split(":")[0].upper()
    if kind not in TORCH_DEVICE:
        raise ZeropointError(f"no PyTorch device matches tinygrad's {tinygrad_device}; run tinygrad on one of "
                             f"{', '.join(TORCH_DEVICE)} (DEV=...) or name the twin's device with --torch-device")
    base = TORCH_DEVICE[kind]
    idx = tinygrad_device.split(":")[1] if ":" in tinygrad_device else ""
    return f"{base}:{idx}" if base == "cuda" and idx.isdigit() else base


def check_torch_device(torch, device: str) -> None:
    """Refuse a twin device this PyTorch build cannot use, naming the build and the way out."""
    kind = device.split(":")[0]
    ok = {"cpu": True, "meta": True, "cuda": torch.cuda.is_available(),
          "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}.get(kind)
    if ok is None:
        raise ZeropointError(f"--torch-device {device!r} is not a device the twin supports (cpu, cuda, mps, meta)")
    if not ok:
        raise ZeropointError(f"PyTorch {torch.__version__} cannot use {device!r} on this machine (no {kind} build or "
                             f"no {kind} device); install a {kind} build of PyTorch or pass --torch-device cpu")


def torch_sync(torch, device: str):
    """-> (function that waits for the device, what it does): the clock is read only after it returns."""
    kind = device.split(":")[0]
    if kind == "cuda":
        return (lambda: torch.cuda.synchronize(device)), "torch.cuda.synchronize() before each clock read"
    if kind == "mps":
        return torch.mps.synchronize, "torch.mps.synchronize() before each clock read"
    return (lambda: None), "none needed: CPU eager ops return when done (and each step reads its loss with .item())"


def tinygrad_sync(device: str):
    return (lambda: Device[device].synchronize()), (f"Device[{device!r}].synchronize() before each clock read "
                                                    "(each step also reads its loss and grad norm with .item())")


def torch_info(torch, device: str) -> dict:
    kind = device.split(":")[0]
    info = {"version": torch.__version__, "device": device, "cuda": torch.version.cuda,
            "hip": getattr(torch.version, "hip", None), "threads": torch.get_num_threads(), "mode": "eager"}
    if kind == "cuda":
        info.update(device_name=torch.cuda.get_device_name(device),
                    cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


def torch_memory(torch, device: str) -> dict:
    if device.split(":")[0] == "cuda":
        return {"max_allocated_bytes": int(torch.cuda.max_memory_allocated(device)),
                "max_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
                "source": "torch.cuda.max_memory_allocated / max_memory_reserved"}
    return {"max_allocated_bytes": None, "reason": f"PyTorch keeps no allocator high-water mark for {device}; "
            "the process's peak RSS covers both sides"}
