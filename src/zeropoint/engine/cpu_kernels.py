"""How CPU kernels are built: tinygrad's heuristic, with three changes that measured faster on CPUs.

1. Contractions (matmuls and their backward: a sum over a product of two inputs) get a register tile sized for a
   CPU core's vector registers (UPCAST on an output axis of each input: a matmul's M and N; a matrix-vector
   product's one), two-dimensional tiles from `MIN_TILE_WORK` (4M) multiply-adds. When the inner tile axis is
   contiguous in its input (x @ W with W stored K-major, and both backward matmuls of x @ W.T) the tile is
   16 x 8: 16 adjacent outputs are one 512-bit vector, filled by one load and one broadcast FMA per reduce step.
   When it is not (x @ W.T: both inputs are contiguous along the reduce axis) it is 8 (N) x 16 (M) with a 4-way
   unrolled reduce. tinygrad's heuristic builds 4x3 or 4x4 tiles, sized for GPUs' registers.
2. Loads and stores of adjacent elements are fused into vectors of up to 16 (float32 and int32 kernels) instead of
   tinygrad's 4, so clang fills whole 256/512-bit registers; vector types are declared unaligned (element aligned),
   since a 16-wide group needs not start on a 64-byte boundary.
3. Contractions, and other kernels of at least `MIN_THREAD_WORK` (32K) elements, are split over the CPU threads
   (the THREAD opt; engine/cpu_threads runs the parts at once, handing them over natively in about a microsecond).
   tinygrad splits only from 128K elements per thread, so the elementwise kernels of a small model's MLP and its
   optimizer's updates ran on one core.

None changes what a kernel computes, only how its loops and memory accesses are laid out; the unrolled reduce adds
in another order, so results differ from tinygrad's kernels in the last bits. A kernel the rules cannot lay out (an
axis that does not divide) keeps tinygrad's own choice. Measurements: docs/warm-start.md. `ZP_CPU_KERNELS=tinygrad`
turns the rules off; the rule set's name is part of every cached kernel's key (engine/jitcache.py), so kernels built
under one set are never loaded under another.
"""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

import tinygrad.codegen as codegen
import tinygrad.codegen.opt.heuristic as heuristic
import tinygrad.engine.realize as realize
from tinygrad.codegen.opt import KernelOptError, Opt, OptOps
from tinygrad.codegen.opt.postrange import Scheduler
from tinygrad.dtype import AddrSpace, dtypes
from tinygrad.helpers import NUM_CPU_THREADS, prod
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.uop.ops import AxisType, Ops, UOp, resolve

RULES = "zp-cpu-5"          # bump when a rule changes: it is in every cached kernel's key
# register tiles, (last axis, second last, unroll), first that divides: the inner axis contiguous in its input, or not
TILES_CONTIGUOUS = ((16, 8, 0), (16, 4, 0), (8, 8, 0), (8, 4, 0), (16, 1, 0), (8, 1, 0))
TILES = ((8, 16, 4), (8, 8, 4), (8, 4, 4), (4, 8, 4), (8, 8, 0), (4, 4, 4), (8, 1, 4), (4, 1, 4), (1, 16, 4), (1, 8, 4))
WIDE_DTYPES = (dtypes.float32, dtypes.int32, dtypes.uint32)
MIN_THREAD_WORK = 1 << 15
# multiply-adds from which a contraction gets a register tile: lowering a 128-accumulator tile costs tinygrad ~0.5-1 s
# of Python once per kernel (its own 16-accumulator tile ~0.2 s), which a smaller kernel does not earn back
MIN_TILE_WORK = 1 << 22

_tinygrad_heuristic = heuristic.hand_coded_optimizations
_tinygrad_compile_kernel = realize._compile_kernel
_tinygrad_coalescing = codegen.memory_coalescing
_tinygrad_vector_prefix = ClangRenderer.render_vector_prefix
# memory_coalescing reads two things of its renderer: the target device, and supports_float4. For a DSP target it
# fuses adjacent accesses into vectors of up to 128 at any offset; every other target gets at most 4.
_ANY_WIDTH = SimpleNamespace(target=SimpleNamespace(device="DSP"), supports_float4=True)


def active() -> str:
    """The rule set kernels are built with now: RULES, or "tinygrad" when off."""
    return "tinygrad" if heuristic.hand_coded_optimizations is _tinygrad_heuristic else RULES


def _tile_axes(k: Scheduler) -> tuple[int, int | None, bool] | None:
    """(last, second last) output axes of a contraction's register tile, and whether the last is contiguous (stride 1)
    in the input it indexes; None when `k` is no contraction.

    A contraction sums a product of two inputs, and each tile axis must index one input only (a matmul's M and N): an
    axis both inputs depend on (the chunk axis of a reduce tinygrad split into partial sums) would put one chunk per
    tile row and stream both inputs from memory once per element."""
    r = k.reduceop
    if r is None or r.arg[0] is not Ops.ADD:
        return None
    m = r.src[0]
    while m.op is Ops.CAST:
        m = m.src[0]
    if m.op is not Ops.MUL:
        return None
    in0, in1 = set(m.src[0].ranges), set(m.src[1].ranges)
    outs = k.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    only0 = [a for a in outs if k.rngs[a] in in0 and k.rngs[a] not in in1]
    only1 = [a for a in outs if k.rngs[a] in in1 and k.rngs[a] not in in0]
    if not only0 and not only1:
        return None
    if not only0 or not only1:                # a matrix-vector product: one tile axis
        a1, a0 = (only0 or only1)[-1], None
    else:
        a1, a0 = max(only0[-1], only1[-1]), min(only0[-1], only1[-1])
    side = m.src[0] if a1 in only0 else m.src[1]
    return a1, a0, _unit_stride(side, k.rngs[a1])


def _unit_stride(side: UOp, rng: UOp) -> bool:
    """`rng` steps one element at a time through a buffer `side` loads (a term of its index, not a multiple)."""
    return any(u.op is Ops.INDEX and any(c is rng for c in u.src[1].get_idx().split_uop(Ops.ADD))
               for u in side.toposort())


def _divides(size, n: int) -> bool:
    """`n` divides an axis size; a symbolic size (a KV cache's length) counts as not divisible."""
    return isinstance(size, int) and size % n == 0


def _unrolled(k: Scheduler, amount: int) -> bool:
    """Unroll the first reduce axis `amount` divides, in place (the outermost measured best; attention's
    grouped-query backward sums over a small group axis first, then over the sequence); False when none does."""
    for i in range(len(k.unrollable_dims)):
        if _divides(k.full_shape[k.unrollable_dims[i]], amount):
            try:
                k.apply_opt(Opt(OptOps.UNROLL, i, amount))
                return True
            except KernelOptError:
                continue
    return False


def threaded(k: Scheduler, min_work: int = 0) -> Scheduler:
    """`k` split over the CPU threads on its first output axis they divide (at least `min_work` elements)."""
    n = NUM_CPU_THREADS.value
    if n < 2 or not k.ren.has_threads or any(o.op is OptOps.THREAD for o in k.applied_opts) \
            or not resolve(prod(k.full_shape) >= min_work, False):   # symbolic sizes: tinygrad's own choice
        return k
    for axis in k.axes_of(AxisType.WEAK, AxisType.GLOBAL):
        if _divides(k.full_shape[axis], n):
            k2 = k.copy()
            try:
                k2.apply_opt(Opt(OptOps.THREAD, axis, n))
                return k2
            except KernelOptError:
                continue
    return k


def tiled(k: Scheduler, a1: int, a0: int | None, u1: int, u0: int, unroll: int) -> Scheduler | None:
    """A copy of `k` with a `u1` x `u0` register tile on output axes `a1`, `a0` and the reduce unrolled `unroll`
    ways (0: not); None when a size does not divide."""
    t = k.copy()
    try:
        if u1 > 1:
            t.apply_opt(Opt(OptOps.UPCAST, a1, u1))
        if u0 > 1 and a0 is not None:
            t.apply_opt(Opt(OptOps.UPCAST, a0, u0))
    except KernelOptError:
        return None
    return None if unroll and not _unrolled(t, unroll) else t


def cpu_heuristic(k: Scheduler) -> Scheduler:
    """tinygrad's `hand_coded_optimizations`, with the tile and thread rules above on CPU devices."""
    if k.ren.target.device != "CPU":
        return _tinygrad_heuristic(k)
    axes = _tile_axes(k)
    if axes is not None and (axes[1] is None or resolve(prod(k.full_shape) >= MIN_TILE_WORK, False)):
        a1, a0, contiguous = axes
        for u1, u0, unroll in TILES_CONTIGUOUS if contiguous else TILES:
            if (u0 > 1 and a0 is None) or (t := tiled(k, a1, a0, u1, u0, unroll)) is None:
                continue
            return threaded(t, 0)
    return threaded(_tinygrad_heuristic(k), MIN_THREAD_WORK)


def wide_coalescing(sink: UOp, ren):
    """tinygrad's memory_coalescing, fusing up to 16 adjacent float32/int32 accesses on the C backend (tinygrad: 4).

    Other dtypes keep tinygrad's widths (clang 14 has no vectors of bool); a kernel's accesses are fused only as far
    as its own loops are unrolled, so the width is bounded by the register tile (16), not by the 128 allowed."""
    if not isinstance(ren, ClangRenderer) or any(b.addrspace != AddrSpace.REG and b.dtype not in WIDE_DTYPES
                                                 for b in _accessed_buffers(sink)):
        return _tinygrad_coalescing(sink, ren)
    return _tinygrad_coalescing(sink, _ANY_WIDTH)


def _accessed_buffers(sink: UOp) -> list[UOp]:
    return [u.src[0].src[0] for u in sink.toposort() if u.op in (Ops.LOAD, Ops.STORE) and u.src[0].op is Ops.INDEX]


def unaligned_vector_prefix(self, dt, count: int) -> str:
    """tinygrad's vector typedef, aligned to its element: a fused group starts at any element (x86 loads it as fast)."""
    return re.sub(r"aligned\(\d+\)", f"aligned({dt.itemsize})", _tinygrad_vector_prefix(self, dt, count))


def _use(on: bool) -> None:
    want = cpu_heuristic if on else _tinygrad_heuristic
    if heuristic.hand_coded_optimizations is not want:
        heuristic.hand_coded_optimizations = want
        codegen.memory_coalescing = wide_coalescing if on else _tinygrad_coalescing
        ClangRenderer.render_vector_prefix = unaligned_vector_prefix if on else _tinygrad_vector_prefix
        # tinygrad's in-memory kernel cache is keyed by the kernel alone: what it holds was built under the other rules
        codegen.to_program_cache.clear()


# tinygrad lowers a step's kernels in spawned worker processes (realize.lower_and_compile), which start without this
# process's rules: its task function is swapped for one that sets them first (pickled by name, so the worker imports
# this module). Two functions, so a worker that ran the rules once is switched back when they are turned off.
def _compile_with_rules(task):
    _use(True)
    return _tinygrad_compile_kernel(task)


def _compile_without_rules(task):
    _use(False)
    return _tinygrad_compile_kernel(task)


def enable() -> str:
    """Build CPU kernels with these rules from now on, in this process and in tinygrad's compile workers
    (idempotent); `ZP_CPU_KERNELS=tinygrad` keeps tinygrad's."""
    on = os.environ.get("ZP_CPU_KERNELS", "").strip().lower() not in ("tinygrad", "0", "off")
    _use(on)
    if realize._compile_kernel in (_tinygrad_compile_kernel, _compile_with_rules, _compile_without_rules):
        realize._compile_kernel = _compile_with_rules if on else _compile_without_rules
    return active()
