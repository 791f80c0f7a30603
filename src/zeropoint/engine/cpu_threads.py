"""Every CPU core for tinygrad's CPU kernels.

Why tinygrad 0.14 used less than one core: its kernel optimizer already splits a big kernel into NUM_CPU_THREADS
parts (the THREAD opt: one part per value of a `core_id` argument, NUM_CPU_THREADS defaults to the cores the process
may use), but `CPUProgram.__call__` then calls the parts one after another on the calling thread. So the split costs
a little and gains nothing, and a process runs its kernels on one core at most.

`enable()` makes the CPU runtime call the parts at the same time, one per worker thread (the calling thread runs
one part too). A kernel is machine code called through ctypes, which releases the GIL for the call, so the parts
really run in parallel. Kernels that were not split (small ones) run as before. The split itself, and so every
kernel's code and result, is unchanged: each part writes its own slice of the output, exactly as the sequential
loop did. `ZP_CPU_THREADS=1` (or NUM_CPU_THREADS=1, which stops the split at compile time) turns it off.

The threads are native (engine/cpu_graph.c, built with the C compiler tinygrad's CPU backend uses, once per
process): a captured step runs as one call, all its kernels in order, the GIL released, split kernels handed to
helper threads that spin briefly between jobs. Without a C compiler (or with `ZP_CPU_NATIVE=0`) the same runs
from Python, one ctypes call a kernel part and a Python queue a hand-off; `native_reason()` says which.
"""
from __future__ import annotations

import ctypes
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tinygrad import Device
from tinygrad.engine.jit import GraphRunner
from tinygrad.helpers import NUM_CPU_THREADS
from tinygrad.runtime.ops_cpu import CPUProgram

from . import cpu_kernels

_pool: "_Pool | None" = None
_lock = threading.Lock()
_original = None
STATS = {"parallel_calls": 0, "sequential_calls": 0}
MAX_ARGS = 64                    # argument words per job in cpu_graph.c (tinygrad's CPU programs take at most 63)
_native: "ctypes.CDLL | None" = None
_native_tried = False
_native_threads = 1
_native_reason: str | None = None


class _Job(ctypes.Structure):
    _fields_ = [("fxn", ctypes.c_void_p), ("core_slot", ctypes.c_int64), ("parts", ctypes.c_int64),
                ("args", ctypes.POINTER(ctypes.c_uint64))]


def _build_native() -> "ctypes.CDLL | None":
    """cpu_graph.c compiled and loaded (about 0.1 s), or None with the reason in `_native_reason`."""
    global _native_reason
    if os.environ.get("ZP_CPU_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        _native_reason = "ZP_CPU_NATIVE=0"
        return None
    src = Path(__file__).with_name("cpu_graph.c")
    out = Path(tempfile.mkdtemp(prefix="zp-cpu-graph-")) / "cpu_graph.so"
    cc = os.environ.get("CC", "clang")      # tinygrad's CPU backend compiles its kernels with the same
    try:
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-pthread", str(src), "-o", str(out)], check=True,
                       capture_output=True, timeout=120)
        lib = ctypes.CDLL(str(out))          # the GIL is released for every call into it
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        _native_reason = f"could not build engine/cpu_graph.c with {cc}: {e} {err.decode(errors='replace')[:200]}"
        return None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)   # the loaded library stays mapped
    lib.zp_pool_start.argtypes, lib.zp_pool_start.restype = [ctypes.c_int], ctypes.c_int
    lib.zp_run.argtypes, lib.zp_run.restype = [ctypes.POINTER(_Job), ctypes.c_int64], None
    lib.zp_after_fork.argtypes, lib.zp_after_fork.restype = [], None
    _native_reason = None
    return lib


def native_reason() -> str | None:
    """None when split kernels and captured steps run natively (engine/cpu_graph.c), else why they run from Python."""
    return _native_reason


def _after_fork_in_child() -> None:
    # a forked child has none of the parent's threads: start a new pool on its first split kernel
    global _pool, _lock
    _lock = threading.Lock()
    _pool = None
    if _native is not None:
        _native.zp_after_fork()
        _native.zp_pool_start(_native_threads)


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Pool:
    """`n - 1` helper threads; `run` gives each a share of the parts and runs the first share itself."""

    def __init__(self, n: int):
        self.n = n
        self.inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(n - 1)]
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        for i, inbox in enumerate(self.inboxes):
            threading.Thread(target=self._work, args=(inbox,), name=f"zp-cpu-{i + 1}", daemon=True).start()

    def _work(self, inbox: queue.SimpleQueue) -> None:
        while True:
            fxn, argsets = inbox.get()
            try:
                for a in argsets:
                    fxn(*a)
                self.done.put(None)
            except BaseException as e:   # handed to the caller, never lost in a thread
                self.done.put(e)

    def run(self, fxn, argsets: list) -> None:
        shares = [argsets[i::self.n] for i in range(self.n)]
        sent = 0
        for inbox, share in zip(self.inboxes, shares[1:]):
            if share:
                inbox.put((fxn, share))
                sent += 1
        err = None
        try:
            for a in shares[0]:
                fxn(*a)
        finally:
            for _ in range(sent):   # wait for every helper even if our share failed: they write the same buffers
                if (e := self.done.get()) is not None:
                    err = e
        if err is not None:
            raise err


class CPUGraph(GraphRunner):
    """A batch of a captured step's CPU kernels, called back to back (tinygrad's GraphRunner interface; its CPU device
    has none). Each kernel's arguments are laid out once, at capture: per call only the step's input buffers and
    symbolic variables are written into them, where tinygrad's own path resolves every argument of every kernel again
    (about 85 us of Python per kernel call, 19% of the tiny GPT step's CPU time). Natively the whole batch is then
    one call (engine/cpu_graph.c); from Python one ctypes call a kernel, split kernels to the Python pool."""

    def __init__(self, linear, input_uops=()):
        super().__init__(linear, input_uops)
        lib = _native
        n = len(self.calls)
        self.words = (ctypes.c_uint64 * (MAX_ARGS * max(n, 1)))() if lib is not None else None
        self.native_jobs = (_Job * max(n, 1))() if lib is not None else None
        self.jobs = []
        self.patches: list[tuple[int, int]] = []      # (word, input slot): an input buffer's address goes there
        self.var_patches: list[tuple[int, str]] = []  # (word, variable name)
        for j, (_, prg, bufs, dv) in enumerate(self.calls):
            rt, info = self.runtimes[j], prg.arg
            glob = list(info.globals)
            words = [bufs[i].get_buf(bufs[i].device).va_addr for i in glob]
            vals = info.vals({**dv, **{v: 0 for v in self.vars}})
            words += [0 if v is None else int(v) for v in vals]
            ins = [(glob.index(pos), slot) for pos, slot in self.uop_replace[j] if pos in glob]
            vs = [(len(glob) + i, self.vars[vi]) for i, vi in self.var_vals_replace.get(j, [])]
            core = rt.runtimevars.get("core_id")
            parts = int(info.global_size[0]) if core is not None else 1
            if lib is not None:
                base = j * MAX_ARGS
                for w, v in enumerate(words):
                    self.words[base + w] = v
                job = self.native_jobs[j]
                job.fxn = ctypes.cast(rt.fxn, ctypes.c_void_p).value
                job.core_slot, job.parts = (-1, 1) if core is None else (core, parts)
                job.args = ctypes.cast(ctypes.byref(self.words, base * 8), ctypes.POINTER(ctypes.c_uint64))
                self.patches += [(base + pos, slot) for pos, slot in ins]
                self.var_patches += [(base + pos, name) for pos, name in vs]
            else:
                cargs = [ctypes.c_uint64(w) for w in words]
                self.jobs.append((rt.fxn, cargs, ins, vs, core, [ctypes.c_uint64(t) for t in range(parts)]))
        self.n_native = n if lib is not None else 0

    def __call__(self, input_uops, var_vals, wait=False):
        st = time.perf_counter()
        addrs: dict[int, int] = {}

        def addr(slot: int) -> int:      # an input buffer's address, resolved once per call
            if slot not in addrs:
                b = input_uops[slot].buffer.ensure_allocated()
                addrs[slot] = b.get_buf(b.device).va_addr
            return addrs[slot]
        if self.n_native:
            words = self.words
            for w, slot in self.patches:
                words[w] = addr(slot)
            for w, name in self.var_patches:
                words[w] = var_vals[name]
            _native.zp_run(self.native_jobs, self.n_native)
            return time.perf_counter() - st if wait else None
        for fxn, cargs, ins, vs, core, parts in self.jobs:
            for pos, slot in ins:
                cargs[pos].value = addr(slot)
            for pos, name in vs:
                cargs[pos].value = var_vals[name]
            if core is None:
                fxn(*cargs)
                continue
            argsets = [cargs[:core] + [c] + cargs[core + 1:] for c in parts]
            pool = _pool if _pool is not None or len(parts) < 2 else _ensure_pool()
            if pool is not None and len(parts) > 1:
                pool.run(fxn, argsets)
            else:
                for a in argsets:
                    fxn(*a)
        return time.perf_counter() - st if wait else None


def graph_enabled() -> bool:
    return os.environ.get("ZP_CPU_GRAPH", "1").strip().lower() not in ("0", "off", "false", "no")


def threads() -> int:
    """Worker threads for split kernels: $ZP_CPU_THREADS, else tinygrad's NUM_CPU_THREADS (the split count)."""
    v = os.environ.get("ZP_CPU_THREADS")
    return max(1, int(v)) if v else max(1, NUM_CPU_THREADS.value)


def enable() -> int:
    """Run split CPU kernels on all their parts at once, and build CPU kernels with engine/cpu_kernels.py's rules
    (both idempotent). Returns the number of threads used."""
    global _pool, _original, _native, _native_tried, _native_threads
    cpu_kernels.enable()
    n = threads()
    with _lock:
        if not _native_tried:
            _native, _native_tried = _build_native(), True
        if _native is not None:
            n = _native_threads = _native.zp_pool_start(n)
    dev = Device[Device.DEFAULT]
    if Device.DEFAULT.split(":")[0] == "CPU" and type(dev.renderer).__name__ != "LVPRenderer":
        dev.graph = CPUGraph if graph_enabled() else None   # captured steps call their kernels back to back
    with _lock:
        if _original is None:
            _original = CPUProgram.__call__
        if n <= 1:
            CPUProgram.__call__ = _original
            _pool = None
            return 1
        if _native is None and (_pool is None or _pool.n != n):
            _pool = _Pool(n)
        CPUProgram.__call__ = _parallel_call
    return n


def CPUProgram_call_is_ours() -> bool:
    return CPUProgram.__call__ is _parallel_call


def _ensure_pool() -> "_Pool | None":
    global _pool
    n = threads()
    with _lock:
        if _pool is None and n > 1:
            _pool = _Pool(n)
    return _pool


def _parallel_call(self, *bufs, global_size=(1, 1, 1), local_size=(1, 1, 1), vals=(), wait=False, timeout=None):
    parts = global_size[0]
    if parts <= 1 or self.lvp or "core_id" not in self.runtimevars or \
            (_native is None and (_pool or _ensure_pool()) is None):
        STATS["sequential_calls"] += 1
        return _original(self, *bufs, global_size=global_size, local_size=local_size, vals=vals, wait=wait,
                         timeout=timeout)
    st = time.perf_counter()
    args = [int(b.va_addr) for b in bufs] + [0 if v is None else int(v) for v in vals]
    slot = self.runtimevars["core_id"]
    if _native is not None:
        words = (ctypes.c_uint64 * MAX_ARGS)(*args)
        _native.zp_run(ctypes.byref(_Job(ctypes.cast(self.fxn, ctypes.c_void_p).value, slot, parts,
                                         ctypes.cast(words, ctypes.POINTER(ctypes.c_uint64)))), 1)
    else:
        argsets = []
        for tid in range(parts):
            args[slot] = tid
            argsets.append([ctypes.c_uint64(x) for x in args])
        _pool.run(self.fxn, argsets)
    STATS["parallel_calls"] += 1
    return time.perf_counter() - st if wait else None
