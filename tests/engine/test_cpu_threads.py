"""Split CPU kernels run their parts on every core (engine/cpu_threads.py): same bits as the sequential loop."""
import os

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.helpers import NUM_CPU_THREADS

from zeropoint.engine import cpu_threads
from zeropoint.engine.trainer import device_array


@pytest.fixture
def threads(monkeypatch):
    def use(n):
        monkeypatch.setenv("ZP_CPU_THREADS", str(n))
        return cpu_threads.enable()
    yield use
    monkeypatch.delenv("ZP_CPU_THREADS", raising=False)
    cpu_threads.enable()


@pytest.mark.skipif(NUM_CPU_THREADS.value < 2, reason="tinygrad splits kernels only with NUM_CPU_THREADS >= 2")
def test_parallel_parts_give_the_sequential_bits(threads):
    rng = np.random.default_rng(0)
    a = device_array(rng.standard_normal((512, 384), dtype=np.float32))
    b = device_array(rng.standard_normal((384, 640), dtype=np.float32))

    def run():
        return ((a @ b).relu() @ b.T).sum(1).numpy()
    assert threads(1) == 1
    seq = run()
    assert threads(2) == 2
    before = cpu_threads.STATS["parallel_calls"]
    par = run()
    assert cpu_threads.STATS["parallel_calls"] > before          # the split kernels really went to the pool
    assert np.array_equal(par, seq)
    np.testing.assert_allclose(par, ((a.numpy() @ b.numpy()).clip(0) @ b.numpy().T).sum(1), rtol=1e-3, atol=0.05)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_its_own_pool(threads):
    threads(2)
    a = device_array(np.ones((512, 512), dtype=np.float32))
    (a @ a).numpy()                      # the parent's pool exists and has run
    pid = os.fork()
    if pid == 0:                         # the child has none of the parent's threads; this must not hang
        ok = float((a @ a).sum().numpy()) == 512.0 ** 3
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_native_runner_is_built():
    """engine/cpu_graph.c compiles with the C compiler tinygrad's CPU backend uses; without it steps run from Python."""
    cpu_threads.enable()
    assert cpu_threads.native_reason() is None, cpu_threads.native_reason()


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_cpu_graph_replays_a_captured_step_bit_for_bit(threads, monkeypatch, native):
    """With the CPU graph (captured kernels called back to back, arguments prepared once; natively one call for the
    whole step, or from Python) a jitted step gives the same bits as tinygrad's own per-kernel path, inputs and a
    symbolic variable change between calls. One kernel sums 12 inputs: arguments past the registers, on the stack."""
    from tinygrad import Device, TinyJit, UOp
    from tinygrad.uop.ops import Ops

    from zeropoint.engine.cpu_threads import CPUGraph
    runs = []
    cpu_threads.enable()           # built before it is swapped out
    if native:
        class Counting:            # the native library, counting whole-step calls
            def __getattr__(self, name):
                return getattr(lib, name)

            def zp_run(self, jobs, n):
                runs.append(n)
                return lib.zp_run(jobs, n)
        lib = cpu_threads._native
        monkeypatch.setattr(cpu_threads, "_native", Counting())
    else:
        monkeypatch.setattr(cpu_threads, "_native", None)
    rng = np.random.default_rng(1)
    w = device_array(rng.standard_normal((256, 256), dtype=np.float32))
    many = [device_array(rng.standard_normal((256,), dtype=np.float32)) for _ in range(12)]
    acc = device_array(np.zeros((256,), dtype=np.float32))
    v = UOp.variable("n", 1, 8)

    def run(graph):
        monkeypatch.setenv("ZP_CPU_GRAPH", "1" if graph else "0")
        threads(2)
        assert (Device[Device.DEFAULT].graph is CPUGraph) == graph
        acc.assign(acc * 0).realize()

        @TinyJit
        def step(x, n):
            y = ((x @ w).relu() @ w.T).sum(0) * n.cast(w.dtype) + sum(many[1:], many[0]) * x[0]
            acc.assign(acc + y)
            Tensor.realize(y, acc)
            return y
        outs = [step(device_array(rng2.standard_normal((64, 256), dtype=np.float32)), v.bind(i % 8 + 1)).numpy().copy()
                for i, rng2 in enumerate([np.random.default_rng(i) for i in range(5)])]
        graphs = [c for c in step.captured.linear.src if c.src[0].op is Ops.CUSTOM_FUNCTION and c.src[0].arg == "graph"]
        assert bool(graphs) == graph
        return outs, acc.numpy().copy()
    plain, plain_acc = run(False)
    runs.clear()
    graphed, graphed_acc = run(True)
    assert (max(runs, default=0) >= 3) == native       # natively, a replay is one call for its 3 kernels
    assert all(np.array_equal(a, b) for a, b in zip(plain, graphed)) and np.array_equal(plain_acc, graphed_acc)
    assert not np.array_equal(plain[3], plain[4])
