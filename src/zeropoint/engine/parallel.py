"""Training on more than one device: data parallel and a ZeRO-1 style sharded optimizer, on tinygrad's
multi-device tensors. The same code runs on `("CUDA:0", "CUDA:1")` and on virtual CPU devices (`CPU`, `CPU:1`),
which is how it is tested on a machine without a GPU.

    place = Placement.of(devices=2, shard_optimizer=True)     # or ["CUDA:0", "CUDA:1"]; 1 = one device
    place.replicate(w)             # in place: every device holds the whole weight (the model sees it as before)
    x = place.batch(x)             # the global batch split along axis 0, one slice per device
    m = place.state_zeros(shape)   # Adam moment: partitioned along its first divisible axis (ZeRO-1) or replicated
    p.assign(place.gather(p_new))  # a partitioned update gathered back into the replicated weight

Why it is built this way:
- Data parallel needs no code in the step: with the batch sharded on axis 0 and the weights replicated, tinygrad
  turns the batch reduction of the mean loss and of every weight gradient into an all-reduce inside the jitted
  graph, so the gradient arrives replicated and equal on every device, and the loss is the same mean as on one
  device (summed in a different order: equal within float rounding, not bit for bit).
- ZeRO-1: the fp32 moments are the largest state (8 bytes per trainable parameter), so they are partitioned;
  each device updates only its slice of m, v and the weight, and the all-gather of the new weights is one
  all-reduce of zero-padded slices (tinygrad's copy of a sharded tensor onto the same devices). Gradients stay
  replicated (partitioning them too would be ZeRO-2).
- Host arrays (checkpoints, scalars) enter through `like()`/`put()`, which place them the way the live tensor
  is placed, so checkpoints stay plain full arrays and resume on any device count.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes
from tinygrad.helpers import GlobalCounters

from ..errors import ZeropointError


def resolve_devices(devices: int | Sequence[str] | None) -> tuple[str, ...]:
    """Canonical device names: a count N means the default device's first N instances (`CPU`, `CPU:1`...).
    One device (1, None, or a one-name list) is the empty tuple: the single-device path, untouched."""
    if devices is None:
        return ()
    if isinstance(devices, int):
        if devices < 1:
            raise ZeropointError(f"train.devices must be >= 1 (got {devices})")
        names = [Device.DEFAULT] + [f"{Device.DEFAULT.split(':')[0]}:{i}" for i in range(1, devices)]
    else:
        names = [str(d) for d in devices]
        if not names:
            raise ZeropointError("train.devices is an empty list; give a count (2) or names ([CUDA:0, CUDA:1])")
    canon = tuple(Device.canonicalize(d) for d in names)
    if len(set(canon)) != len(canon):
        raise ZeropointError(f"train.devices names a device twice: {list(names)}; each must be a different device")
    for d in canon:
        try:
            Device[d]
        except Exception as e:
            raise ZeropointError(f"train.devices: device {d} cannot be opened ({type(e).__name__}: {e}); "
                                 f"this machine's default device is {Device.DEFAULT}") from None
    return canon if len(canon) > 1 else ()


@dataclass(frozen=True)
class Placement:
    """Where the engine's tensors live. `devices == ()` is one device: every method is then the identity."""
    devices: tuple[str, ...] = ()
    shard_optimizer: bool = False

    @classmethod
    def of(cls, devices: int | Sequence[str] | None = None, shard_optimizer: bool = False) -> "Placement":
        return cls(resolve_devices(devices), shard_optimizer)

    @property
    def n(self) -> int:
        return max(1, len(self.devices))

    @property
    def device(self) -> str | tuple[str, ...]:
        """What `Tensor(..., device=)` takes to make a replicated tensor here."""
        return self.devices if self.devices else Device.DEFAULT

    def names(self) -> list[str]:
        """The device list recorded in run.json."""
        return list(self.devices) if self.devices else [Device.DEFAULT]

    def replicate(self, t: Tensor) -> Tensor:
        """Put a whole copy of `t` on every device, in place (the model object keeps the same Tensor)."""
        if self.devices and t.device != self.devices:
            if isinstance(t.device, tuple):
                raise ZeropointError(f"a weight is already placed on {t.device}; train.devices is {self.devices}")
            t.shard_(self.devices)
        return t

    def batch(self, x: Tensor, *, strict: bool = True) -> Tensor:
        """The batch split along axis 0 across the devices. `strict=False` (evaluation) replicates a batch that
        does not split evenly instead of refusing it."""
        if not self.devices:
            return x
        if x.shape[0] % self.n:
            if strict:
                raise ZeropointError(f"a micro-batch of {x.shape[0]} does not split evenly over {self.n} devices; "
                                     f"set train.micro_batch_size to a multiple of {self.n}")
            return x.shard(self.devices).realize()
        return x.shard(self.devices, axis=0).realize()

    def put(self, values, dtype=dtypes.float32) -> Tensor:
        """A small host value (LR, loss scale) as a realized tensor replicated on every device."""
        return Tensor(np.asarray(values, dtype=np.float32), dtype=dtype, device=self.device).contiguous().realize()

    def zeros(self, shape: tuple) -> Tensor:
        """Replicated fp32 zeros (gradient buffers)."""
        return Tensor.zeros(*shape, dtype=dtypes.float32, device=self.device).contiguous().realize()

    def state_axis(self, shape: tuple) -> int | None:
        """The axis a ZeRO-1 optimizer tensor of `shape` is partitioned on: the first that splits evenly; None
        (replicated) for a tensor too small or odd to split, or when the optimizer is not sharded."""
        if not (self.devices and self.shard_optimizer):
            return None
        return next((a for a, s in enumerate(shape) if s % self.n == 0 and s >= self.n), None)

    def state_zeros(self, shape: tuple) -> Tensor:
        """fp32 zeros for an Adam moment: partitioned under ZeRO-1, else replicated."""
        axis = self.state_axis(shape)
        if axis is None:
            return self.zeros(shape)
        return Tensor.zeros(*shape, dtype=dtypes.float32).contiguous().shard(self.devices, axis=axis).contiguous().realize()

    def like(self, arr: np.ndarray, t: Tensor) -> Tensor:
        """A full host array (from a checkpoint) placed the way the live tensor `t` is placed."""
        host = Tensor(np.ascontiguousarray(arr, dtype=np.float32))
        return host.shard_like(t) if isinstance(t.device, tuple) else host.to(t.device)

    def gather(self, t: Tensor) -> Tensor:
        """A partitioned tensor made whole on every device (an all-gather); a replicated one as it is."""
        if not self.devices or t.uop.axis is None:
            return t
        return Tensor(t.uop.copy_to_device(self.devices))

    def memory_rows(self) -> list[dict]:
        """[{device, bytes}]: what each of these devices' allocator holds now (process-wide, like the
        one-device `device_mem_bytes`); a list, so evidence keys do not depend on device names."""
        return [{"device": d, "bytes": int(GlobalCounters.mem_used_per_device[d])} for d in self.devices]

    def describe(self) -> dict:
        """run.json's `parallel` record (the timing comes from `time_allreduce`)."""
        mode = "single_device" if not self.devices else "data_parallel" + ("+zero1" if self.shard_optimizer else "")
        return {"mode": mode, "devices": self.names(), "shard_optimizer": bool(self.devices and self.shard_optimizer)}

    def state_bytes_per_device(self, params: Sequence[Tensor]) -> int:
        """Bytes of Adam m and v one device holds for these parameters (partitioned ones count their slice)."""
        total = 0
        for p in params:
            n = int(np.prod(p.shape))
            total += 2 * 4 * (n // self.n if self.state_axis(tuple(p.shape)) is not None else n)
        return total


ALLREDUCE_PROBE_MAX = 1 << 24   # values (64 MiB of fp32 per device): enough to be bandwidth-bound, small enough to fit


def time_allreduce(place: Placement, n_values: int, repeats: int = 5) -> dict:
    """The gradient all-reduce of one step, timed on its own: a jitted sum across the devices of `n_values` fp32
    values per device (median of `repeats` replays after the JIT's capture). Inside the training step tinygrad
    fuses the reduction into the graph, where it cannot be timed apart. Above ALLREDUCE_PROBE_MAX values the
    probe runs at that size and `estimated_s` scales it linearly (says so in `method`)."""
    if not place.devices:
        return {"measured_s": None, "reason": "one device: there is no gradient all-reduce"}
    n = max(1, min(int(n_values), ALLREDUCE_PROBE_MAX))
    x = Tensor.ones(place.n, n, dtype=dtypes.float32).contiguous().shard(place.devices, axis=0).realize()
    reduce = TinyJit(lambda t: t.sum(0).realize())
    times = []
    for i in range(2 + repeats):
        t0 = time.perf_counter()
        reduce(x)
        for d in place.devices:
            Device[d].synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"measured_s": med, "measured_values": n, "gradient_values": int(n_values),
            "estimated_s": med * n_values / n,
            "method": f"jitted fp32 sum over {place.n} devices of {n:,} values per device, median of {repeats}, "
                      "outside the training step" + ("; estimated_s scaled linearly to the gradient size"
                                                     if n < n_values else "")}


RING_THRESHOLD = 256_000   # tinygrad 0.14 (schedule/allreduce.py): ring all-reduce above this many values, 3+ devices


def per_device_plan(memory: dict, devices: int, *, micro_batch_size: int, shard_optimizer: bool = False,
                    optimizer_step_detail: dict | None = None, device_gb: Sequence[float] = (80.0, 141.0)) -> dict:
    """One device's share of a one-device memory plan (`memory`: weights/grads/optimizer/activations bytes, as
    `models.llm.llm_memory_plan` gives): weights and gradient buffers are replicated, the optimizer state is
    divided under ZeRO-1, activations follow the split batch. `fits` compares the total with devices of
    `device_gb` GB (10^9 bytes). A micro-batch that does not split evenly is planned at its largest slice, with a
    `warning` (training refuses it).

    With the plan's `optimizer_step_detail` (`models.memory.adamw_step_bytes`), as measured on tinygrad 0.14's
    captured steps (docs/scale-out.md): the gradient all-reduce runs one tensor at a time inside the backward, so
    it stages about one gradient tensor at once, the largest: its partial sum plus what arrives from the peers
    (naive all-reduce, 2 devices or small tensors: one copy from every peer; ring, 3+ devices: two chunks).
    Under ZeRO-1 the optimizer step holds the new moments of its slices or, written back last, the gathered new
    weights (whichever is larger), the zero-padded slices the all-gather sends (4 B a parameter), the zeroed
    gradients, and one tensor's all-gather in flight. Without the detail (plans that carry none) the staging is
    counted for every gradient at once, an upper bound."""
    n = int(devices)
    if n < 1:
        raise ZeropointError(f"--devices must be >= 1 (got {devices})")
    g = memory["grads_bytes"]
    zero = bool(shard_optimizer and n > 1)
    largest = optimizer_step_detail["new_weight_bytes"] if optimizer_step_detail else g   # one tensor, or all
    ring = n > 2 and largest // 4 > RING_THRESHOLD
    arriving = 0 if n == 1 else 2 * largest // n if ring else (n - 1) * largest   # from the peers, in flight
    staging = 0 if n == 1 else largest + arriving
    mem = {"weights_bytes": memory["weights_bytes"], "grads_bytes": g,
           "optimizer_bytes": memory["optimizer_bytes"] // n if zero else memory["optimizer_bytes"],
           "activations_bytes": memory["activations_bytes"] * -(-micro_batch_size // n) // micro_batch_size}
    if "optimizer_step_bytes" in memory:
        step = memory["optimizer_step_bytes"]
        if zero and optimizer_step_detail:
            d = optimizer_step_detail
            step = max(d["new_moments_bytes"] // n, g) + g + d["zeroed_grads_bytes"] + arriving
        mem["optimizer_step_bytes"] = step
    if "other_bytes" in memory:
        mem["other_bytes"] = memory["other_bytes"]   # replicated
    mem["allreduce_staging_bytes"] = staging
    mem["total_bytes"] = sum(mem.values())
    out = {"devices": n, "shard_optimizer": zero, "memory": mem,
            "memory_gib": {k.replace("_bytes", ""): round(v / 2 ** 30, 3) for k, v in mem.items()},
            "fits": [{"device_gb": gb, "fits": mem["total_bytes"] <= gb * 1e9,
                      "headroom_gb": round((gb * 1e9 - mem["total_bytes"]) / 1e9, 2)} for gb in device_gb],
            "note": "per device: weights and gradient buffers replicated, optimizer divided under ZeRO-1, "
                    "activations split with the batch, the optimizer step's buffers, plus all-reduce staging; "
                    "an estimate from shapes"}
    if micro_batch_size % n:
        out["warning"] = (f"train.micro_batch_size {micro_batch_size} does not split over {n} devices; training "
                          f"needs a multiple of {n} (raise micro_batch_size and lower grad_accum to keep the "
                          "global batch)")
    return out
