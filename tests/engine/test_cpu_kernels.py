"""CPU kernels are built with engine/cpu_kernels.py's rules: register tiles for contractions (16x8 when the inner
axis is contiguous, 8x16 with an unrolled reduce when not), 16-wide vector loads, threads from 32K elements; same
results as tinygrad's own kernels (to rounding), and never mixed with them in the cache."""
import numpy as np
import pytest
import tinygrad.engine.realize as realize
from tinygrad.codegen.opt import OptOps
from tinygrad.codegen.opt.postrange import Scheduler
from tinygrad.helpers import NUM_CPU_THREADS
from tinygrad.uop.ops import AxisType

from zeropoint.engine import cpu_kernels, jitcache
from zeropoint.engine.trainer import device_array


@pytest.fixture
def rules(monkeypatch):
    def use(name):
        monkeypatch.setenv("ZP_CPU_KERNELS", name)
        return cpu_kernels.enable()
    yield use
    monkeypatch.delenv("ZP_CPU_KERNELS", raising=False)
    cpu_kernels.enable()


def _kernels(monkeypatch, fn):
    """(ast, renderer) of every kernel `fn` lowers, and its result."""
    seen, real = [], realize.to_program_key

    def recording(ast, ren):
        seen.append((ast, ren))
        return real(ast, ren)
    monkeypatch.setattr(realize, "to_program_key", recording)
    out = fn()
    monkeypatch.setattr(realize, "to_program_key", real)
    return seen, out


def _opts(ast, ren):
    k = Scheduler(ast, ren)
    k.convert_loop_to_global()
    return cpu_kernels.cpu_heuristic(k).applied_opts


def _source(key) -> str:
    import tinygrad.codegen as codegen
    from tinygrad.uop.ops import Ops
    return next(s.arg for s in codegen.to_program_cache[key].src if s.op is Ops.SOURCE)


@pytest.mark.parametrize("form", ["x @ W", "x @ W.T"])
def test_contractions_get_a_register_tile_and_the_same_result(rules, monkeypatch, form):
    """x @ W (W stored K-major: 16 adjacent outputs are one vector): 16x8, no unroll; x @ W.T (both inputs
    contiguous along the reduce, tinygrad's nn.Linear): 8x16 with a 4-way unrolled reduce."""
    rng = np.random.default_rng(0)
    a_np, w_np = rng.standard_normal((128, 256), dtype=np.float32), rng.standard_normal((256, 144), dtype=np.float32)
    a = device_array(a_np)
    w = device_array(w_np) if form == "x @ W" else device_array(np.ascontiguousarray(w_np.T)).T
    assert rules("tinygrad") == "tinygrad"
    theirs = (a @ w).numpy()
    assert rules("") == cpu_kernels.RULES
    seen, ours = _kernels(monkeypatch, lambda: (a @ w).numpy())
    opts = _opts(*seen[-1])
    ups, unroll = [o.arg for o in opts if o.op is OptOps.UPCAST], [o.arg for o in opts if o.op is OptOps.UNROLL]
    assert (ups, unroll) == (([16, 8], []) if form == "x @ W" else ([8, 16], [4]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours, a_np @ w_np, rtol=1e-4, atol=1e-3)


def test_float_accesses_are_16_wide_vectors_at_any_offset(rules, monkeypatch):
    """Adjacent float32 loads and stores fuse into 16-wide vectors declared element-aligned: operands that start
    5 floats into their buffer (no vector boundary anywhere) compute the same; kernels that touch a bool buffer
    keep tinygrad's widths (clang 14 has no bool vectors)."""
    import tinygrad.engine.realize as realize
    rng = np.random.default_rng(5)
    flat = rng.standard_normal(5 + 128 * 256 + 256 * 144, dtype=np.float32)
    a_np, w_np = flat[5:5 + 128 * 256].reshape(128, 256), flat[5 + 128 * 256:].reshape(256, 144)
    buf = device_array(flat)
    a, w = buf[5:5 + 128 * 256].reshape(128, 256), buf[5 + 128 * 256:].reshape(256, 144)
    rules("")
    keys, real = [], realize.to_program_key
    monkeypatch.setattr(realize, "to_program_key", lambda ast, ren: keys.append(real(ast, ren)) or keys[-1])
    out = (a @ w).numpy()
    src = _source(keys[-1])
    assert "ext_vector_type(16)" in src and "aligned(4)" in src and "aligned(64)" not in src
    np.testing.assert_allclose(out, a_np @ w_np, rtol=1e-4, atol=1e-3)
    mask = rng.standard_normal((64, 48)) > 0
    x = rng.standard_normal((64, 48), dtype=np.float32)
    keys.clear()
    out = device_array(mask).where(device_array(x), 0.0).numpy()
    assert "ext_vector_type(16)" not in _source(keys[-1])
    np.testing.assert_array_equal(out, np.where(mask, x, 0.0))


def test_a_small_contraction_keeps_tinygrads_tile(rules, monkeypatch):
    """Below MIN_TILE_WORK multiply-adds a big tile does not earn back what it costs to lower; a matrix-vector
    product (one decoded token against a weight) keeps its one-axis tile at any size."""
    rng = np.random.default_rng(6)
    a = device_array(rng.standard_normal((64, 96), dtype=np.float32))
    w = device_array(rng.standard_normal((96, 72), dtype=np.float32))
    rules("")
    seen, _ = _kernels(monkeypatch, lambda: (a @ w).numpy())
    k = Scheduler(*seen[-1])
    k.convert_loop_to_global()
    assert [o for o in _opts(*seen[-1]) if o.op is not OptOps.THREAD] == \
        [o for o in cpu_kernels._tinygrad_heuristic(k).applied_opts if o.op is not OptOps.THREAD]
    v = device_array(rng.standard_normal((1, 96), dtype=np.float32))
    seen, out = _kernels(monkeypatch, lambda: (v @ w).numpy())
    assert [o.arg for o in _opts(*seen[-1]) if o.op is OptOps.UPCAST] == [8]
    np.testing.assert_allclose(out, v.numpy() @ w.numpy(), rtol=1e-4, atol=1e-4)


def test_a_plain_reduce_keeps_tinygrads_layout(rules, monkeypatch):
    x = device_array(np.random.default_rng(1).standard_normal((64, 48), dtype=np.float32))
    rules("")
    seen, out = _kernels(monkeypatch, lambda: x.exp().sum(1).numpy())
    k = Scheduler(*seen[-1])
    k.convert_loop_to_global()
    assert cpu_kernels._tile_axes(k) is None        # exp(x) summed: no product of two inputs
    assert [o for o in cpu_kernels.cpu_heuristic(k.copy()).applied_opts if o.op is not OptOps.THREAD] == \
        list(cpu_kernels._tinygrad_heuristic(k.copy()).applied_opts)
    np.testing.assert_allclose(out, np.exp(x.numpy()).sum(1), rtol=1e-5)


@pytest.mark.skipif(NUM_CPU_THREADS.value < 2, reason="threads only with NUM_CPU_THREADS >= 2")
def test_mid_size_elementwise_kernels_are_split(rules, monkeypatch):
    x = device_array(np.linspace(-3, 3, 8 * 64 * 344, dtype=np.float32).reshape(8 * 64, 344))   # a small MLP's hidden
    rules("")
    seen, out = _kernels(monkeypatch, lambda: (x * x.sigmoid()).numpy())
    assert any(o.op is OptOps.THREAD for o in _opts(*seen[-1]))
    rules("tinygrad")
    k = Scheduler(*seen[-1])
    k.convert_loop_to_global()
    assert not any(o.op is OptOps.THREAD for o in cpu_kernels._tinygrad_heuristic(k).applied_opts)   # tinygrad's: one core
    np.testing.assert_array_equal(out, (x * x.sigmoid()).numpy())   # elementwise: bit for bit


def test_the_rule_set_is_in_every_kernels_cache_key(rules):
    rules("")
    ours = jitcache.environment()
    rules("tinygrad")
    theirs = jitcache.environment()
    assert ours["cpu_kernels"] == cpu_kernels.RULES and theirs["cpu_kernels"] == "tinygrad"
    assert {k: v for k, v in ours.items() if k != "cpu_kernels"} == {k: v for k, v in theirs.items() if k != "cpu_kernels"}


def test_the_chunk_axis_of_a_split_reduce_is_not_tiled(rules, monkeypatch):
    """A long reduce with a small output (the LM head's backward) is split by tinygrad's scheduler into partial sums
    over chunks; that chunk axis indexes both inputs, and tiling it streamed both from memory once per element."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((16, 65536), dtype=np.float32), rng.standard_normal((65536, 24), dtype=np.float32)
    rules("")
    seen, out = _kernels(monkeypatch, lambda: (device_array(a) @ device_array(b)).numpy())
    partial = Scheduler(*seen[0])
    partial.convert_loop_to_global()
    outs = partial.axes_of(AxisType.WEAK, AxisType.GLOBAL)
    assert len(seen) == 2 and len(outs) == 3, "tinygrad no longer splits this reduce: pick a longer one"
    assert sorted(cpu_kernels._tile_axes(partial)[:2]) == [0, 1]   # rows of a, columns of b; not the chunk axis
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=2e-3)


def test_kernels_lowered_in_tinygrads_compile_workers_follow_the_rules(rules, monkeypatch):
    """tinygrad lowers several kernels at once in spawned worker processes, which start without this process's
    rules: the rule set must reach them, and leave them again when it is turned off. (The suite runs with
    PARALLEL=0, tests/conftest.py: this test turns the pool on.)"""
    import tinygrad.codegen as codegen
    from tinygrad import Tensor
    from tinygrad.helpers import Context
    rng = np.random.default_rng(3)
    a = device_array(rng.standard_normal((128, 256), dtype=np.float32))
    b = device_array(rng.standard_normal((256, 136), dtype=np.float32))
    for name, tile in (("", [8, 8]), ("tinygrad", None), ("", [8, 8])):    # 136 columns: 8 divides, 16 does not
        rules(name)
        keys, real = [], realize.to_program_key
        monkeypatch.setattr(realize, "to_program_key", lambda ast, ren: keys.append(real(ast, ren)) or keys[-1])
        with Context(PARALLEL=2):
            Tensor.realize(a @ b, (a * 2) @ b)                   # two kernels to lower: the worker pool's path
        monkeypatch.setattr(realize, "to_program_key", real)
        assert len(keys) == 2
        for k in keys:
            ups = [o.arg for o in codegen.to_program_cache[k].src[0].arg.applied_opts if o.op is OptOps.UPCAST]
            assert (ups == tile) if tile else (ups != [8, 8])


def test_symbolic_shapes_of_a_kv_cache_lower_and_compute(rules):
    """Decoding with a KV cache reads `cache[:start_pos]`: axis sizes are symbolic, and no rule may ask them to
    be a number (a first version raised "eval failed to be a single number" in generation)."""
    from tinygrad import UOp
    rng = np.random.default_rng(4)
    q_np, k_np = rng.standard_normal((64, 64), dtype=np.float32), rng.standard_normal((1024, 64), dtype=np.float32)
    q, k = device_array(q_np), device_array(k_np)
    pos = UOp.variable("start_pos", 1, 1023)    # sizes that straddle the thread threshold: unknown until run
    rules("")
    for n in (5, 700):
        kk = k.shrink(((0, pos.bind(n)), None))
        scores = (q @ kk.T).softmax(-1) @ kk
        ref = q_np @ k_np[:n].T
        ref = np.exp(ref - ref.max(-1, keepdims=True))
        ref = (ref / ref.sum(-1, keepdims=True)) @ k_np[:n]
        np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-4, atol=1e-4)
