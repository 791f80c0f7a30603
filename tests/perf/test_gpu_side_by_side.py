"""GPU code paths of the side-by-side, on a CPU-only machine: device mapping, a twin on a device chosen by name,
peaks checked against a measured matmul, energy per side through a fake NVML, tinygrad's allocator high-water mark."""
import pytest

from tests.fake_nvml import FakeNVML
from zeropoint.errors import ZeropointError
from zeropoint.perf import devices as D


def test_torch_device_matches_tinygrads():
    assert [D.torch_device_for(d) for d in ("CUDA", "NV", "CUDA:1", "AMD", "METAL", "CPU")] == \
        ["cuda", "cuda", "cuda:1", "cuda", "mps", "cpu"]
    with pytest.raises(ZeropointError, match="--torch-device"):
        D.torch_device_for("WEBGPU")


def test_twin_device_this_torch_cannot_use_is_refused_with_the_fix():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ZeropointError, match="--torch-device cpu"):
        D.check_torch_device(torch, "cuda")
    assert D.torch_sync(torch, "cpu")[1].startswith("none needed")
    assert "torch.cuda.synchronize" in D.torch_sync(torch, "cuda")[1]


def test_twin_is_built_on_the_device_named():
    torch = pytest.importorskip("torch")
    import numpy as np

    from zeropoint.models.llama import get_config
    from zeropoint.perf.torch_ref import build_torch_model
    mc = get_config("tiny-untied", dim=16, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=32, vocab_size=64)
    from zeropoint.models.llama import Llama, state_dict
    weights = {k: v.numpy() for k, v in state_dict(Llama(mc)).items()}
    for dev in ("cpu", "meta"):    # meta: a device with no storage, so a twin left on the CPU would show
        model, params = build_torch_model(mc, weights, lora={"rank": 2, "alpha": 4, "targets": ["q_proj"]}, device=dev)
        assert {p.device.type for p in model.parameters()} == {dev} and params
    assert np.isfinite(weights["model.norm.weight"]).all() and torch.__version__


def test_peak_from_the_gpu_name_and_checked_against_a_matmul(monkeypatch):
    from zeropoint.appliance import nvml
    from zeropoint.perf import peak as P
    from zeropoint.perf.matmul import check_peak
    # perf.peak imported the function at its top (issue 21's rule): patch the name it calls
    monkeypatch.setattr(P, "gpu_inventory_cached", lambda: nvml.gpu_inventory(FakeNVML()))
    p = P.device_peak("CUDA", "bf16")
    assert p["flops"] == 989.5e12 and p["source"] == "table"
    assert check_peak(p, 790e12, "matmul")["check"]["verdict"] == "consistent"
    assert check_peak(p, 1.2e15, "matmul")["check"]["verdict"].startswith("WRONG PEAK")
    monkeypatch.setattr(P, "gpu_inventory_cached", lambda: {"available": False, "reason": "no NVML", "gpus": []})
    assert P.device_peak("NV", "bf16")["flops"] is None and "no NVML" in P.device_peak("NV", "bf16")["reason"]
    assert P.gpu_peak("NVIDIA L40S", "bf16")["flops"] == 362e12       # "l4" must not match L40S
    assert P.gpu_peak("NVIDIA A10G", "fp32")["flops"] == 31.2e12 and P.gpu_peak("NVIDIA RTX A4000") is None


def test_energy_is_attributed_to_the_side_that_ran(tmp_path):
    from zeropoint.perf.bench import _Side
    from zeropoint.perf.energy import EnergyMeter
    fake = FakeNVML()
    em = EnergyMeter(interval_s=1.0, rapl_root=tmp_path / "none", nvml_module=fake).start()
    tg, th = _Side(em, lambda: None), _Side(em, lambda: None)
    for _ in range(2):
        with tg:
            fake.energy_mj += 3_000      # 3 J while tinygrad runs
        tg.add(1)
        with th:
            fake.energy_mj += 1_000      # 1 J while torch runs
        th.add(1)
    em.stop()
    assert tg.energy_dict()["energy_per_step_j"] == pytest.approx(3.0)
    assert th.energy_dict()["energy_j"] == pytest.approx(2.0)
    nomem = _Side(EnergyMeter(rapl_root=tmp_path / "none", use_nvml=False), lambda: None)
    assert nomem.energy_dict()["energy_j"] is None and "rapl" in nomem.energy_dict()["reason"]


def test_nvml_meter_keeps_the_used_memory_peak():
    from zeropoint.perf.energy import NvmlMeter
    fake = FakeNVML()
    m = NvmlMeter(fake)
    m.start()
    fake.used = 90 * 2**30
    m.sample()
    fake.used = 10 * 2**30
    m.sample()
    mem = m.memory()[0]
    assert mem["used_bytes"] == 10 * 2**30 and mem["used_peak_bytes"] == 90 * 2**30


def test_allocator_peak_sees_what_a_step_frees_before_returning():
    from tinygrad import Device, Tensor
    from tinygrad.device import Buffer
    from tinygrad.helpers import GlobalCounters

    from zeropoint.perf.memory import AllocatorPeak
    allocate, on_device = Buffer.allocate, GlobalCounters.mem_used_per_device[Device.DEFAULT]
    with AllocatorPeak() as peak:
        with AllocatorPeak() as inner:                        # nested: both see every allocation, one wrapper
            a = Tensor.ones(256, 256).contiguous().realize()     # 256 KiB
            b = (a + 1).contiguous().realize()                    # another 256 KiB
            del a, b                                              # freed before the peak is read
    assert peak.above_start >= 2 * 256 * 256 * 4 and inner.above_start >= 2 * 256 * 256 * 4
    assert peak.per_device[Device.DEFAULT] - on_device >= 2 * 256 * 256 * 4      # the device's own high-water mark
    assert peak.to_dict()["peak_bytes"] == peak.bytes
    assert Buffer.allocate is allocate                        # tinygrad's own method is back


def test_phases_split_a_step_and_put_tinygrad_back():
    import tinygrad.engine.jit as jit
    import tinygrad.engine.realize as realize
    from tinygrad import Tensor

    from zeropoint.perf.phases import TinygradPhases
    before = (Tensor.linear_with_vars, realize.lower_and_compile, realize.run_linear, jit.run_linear)
    with TinygradPhases() as ph:
        (Tensor.rand(32, 32) @ Tensor.rand(32, 32) + 3.25).realize()   # a shape/constant no other test compiles
    d = ph.to_dict()
    assert d["schedule"]["kernels"] >= 1 and d["schedule"]["calls"] >= 1 and d["run"]["calls"] >= 1
    assert d["lower_compile"]["calls"] >= 1
    # lowering happens inside run_linear: counted once (in lower_compile), so nothing is left negative
    assert min(d[k]["wall_s"] for k in ("schedule", "lower_compile", "run", "other")) >= -0.005
    assert (Tensor.linear_with_vars, realize.lower_and_compile, realize.run_linear, jit.run_linear) == before
