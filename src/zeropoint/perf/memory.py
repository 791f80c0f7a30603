"""tinygrad's allocator high-water mark: the most bytes live buffers held at once while a block ran.

tinygrad 0.14 counts the bytes its live buffers hold (`GlobalCounters.mem_used`, raised in `Buffer.allocate`,
lowered in `Buffer.deallocate`) but keeps no peak, and a step's intermediates (the memory planner's arena) are
allocated and freed inside one call, so sampling between steps misses them. `AllocatorPeak` wraps
`Buffer.allocate` for the duration of a `with` block and records the counter after every allocation: that is
the exact high-water mark of the counter. It counts buffers, not the allocator's cache of freed blocks (the LRU
allocator may keep those from the OS), and not host-side copies such as numpy arrays.

    with AllocatorPeak() as peak:
        trainer.step(batches)
    peak.bytes          # high-water mark during the block
    peak.above_start    # the same, less what was already held when the block began
"""
from __future__ import annotations

from tinygrad.device import Buffer
from tinygrad.helpers import GlobalCounters


class AllocatorPeak:
    _active: list["AllocatorPeak"] = []

    def __init__(self):
        self.start = self.bytes = 0

    def __enter__(self) -> "AllocatorPeak":
        self.start = self.bytes = int(GlobalCounters.mem_used)
        if not AllocatorPeak._active:   # one wrapper however deeply nested; every active tracker sees each alloc
            orig = Buffer.allocate

            def allocate(buf, *args, **kwargs):
                out = orig(buf, *args, **kwargs)
                used = int(GlobalCounters.mem_used)
                for t in AllocatorPeak._active:
                    t.bytes = max(t.bytes, used)
                return out
            Buffer.allocate = allocate
            AllocatorPeak._orig_allocate = orig
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
