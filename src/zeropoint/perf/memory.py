"""tinygrad's allocator high-water mark: the most bytes live buffers held at once while a block ran.

tinygrad 0.14 counts the bytes its live buffers hold (`GlobalCounters.mem_used`, and per device
`GlobalCounters.mem_used_per_device`, raised in `Buffer.allocate`, lowered in `Buffer.deallocate`) but keeps no
peak, and a step's intermediates (the memory planner's arena) are allocated and freed inside one call, so sampling
between steps misses them. `AllocatorPeak` wraps `Buffer.allocate` for the duration of a `with` block and records
the counters after every allocation: that is the exact high-water mark of the counters. It counts buffers, not the
allocator's cache of freed blocks (the LRU allocator may keep those from the OS; a buffer served from that cache
counts as allocated), and not host-side copies such as numpy arrays.

    with AllocatorPeak() as peak:
        trainer.step(batches)
    peak.bytes          # high-water mark during the block (all devices)
    peak.per_device     # {"CPU": bytes, ...}: each device's own high-water mark
    peak.above_start    # the same total, less what was already held when the block began
    peak.to_dict()      # for a record: peak_bytes, per_device_peak_bytes, source
"""
from __future__ import annotations

from tinygrad.device import Buffer
from tinygrad.helpers import GlobalCounters


class AllocatorPeak:
    _active: list["AllocatorPeak"] = []
    _orig_allocate = None

    def __init__(self):
        self.start = self.bytes = 0
        self.per_device: dict[str, int] = {}

    def __enter__(self) -> "AllocatorPeak":
        self.start = self.bytes = int(GlobalCounters.mem_used)
        if not AllocatorPeak._active:   # one wrapper however deeply nested; every active tracker sees each alloc
            orig = AllocatorPeak._orig_allocate = Buffer.allocate

            def allocate(buf, *args, **kwargs):
                out = orig(buf, *args, **kwargs)
                used, on_device = int(GlobalCounters.mem_used), int(GlobalCounters.mem_used_per_device[buf.device])
                for t in AllocatorPeak._active:
                    t.bytes = max(t.bytes, used)
                    t.per_device[buf.device] = max(t.per_device.get(buf.device, 0), on_device)
                return out
            Buffer.allocate = allocate
        AllocatorPeak._active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        AllocatorPeak._active.remove(self)
        if not AllocatorPeak._active:
            Buffer.allocate = AllocatorPeak._orig_allocate

    @property
    def above_start(self) -> int:
        return self.bytes - self.start

    @staticmethod
    def held() -> int:
        """Bytes held by live tinygrad buffers now."""
        return int(GlobalCounters.mem_used)

    def to_dict(self) -> dict:
        return {"peak_bytes": self.bytes, "per_device_peak_bytes": dict(self.per_device),
                "source": "tinygrad GlobalCounters.mem_used, max after every buffer allocation"}
