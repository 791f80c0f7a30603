"""RAPL and NVML readers against a fake sysfs tree and a fake NVML module, wrap-around included."""
from pathlib import Path

import pytest

from zeropoint.perf import energy as E


def make_rapl(root: Path, zones: dict[str, tuple[str, int, int]]):
    """zones: dir name -> (name, energy_uj, max_energy_range_uj)."""
    for d, (name, e, mx) in zones.items():
        z = root / d
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text(f"{e}\n")
        (z / "max_energy_range_uj").write_text(f"{mx}\n")


def set_energy(root: Path, d: str, e: int):
    (root / d / "energy_uj").write_text(f"{e}\n")


def test_counter_delta_wraps():
    assert E.counter_delta(100, 250, 1000) == 150
    assert E.counter_delta(900, 50, 1000) == 150          # wrapped once
    assert E.counter_delta(5, 5, 1000) == 0


def test_rapl_reads_packages_and_handles_wraparound(tmp_path):
    root = tmp_path / "powercap"
    make_rapl(root, {"intel-rapl:0": ("package-0", 262_000_000_000, 262_143_328_850),
                     "intel-rapl:1": ("package-1", 1_000_000, 262_143_328_850),
                     "intel-rapl:0:0": ("core", 5, 262_143_328_850)})   # sub-zone: must not be double counted
    m = E.RaplMeter(root)
    assert m.available and [z["name"] for z in m.zones] == ["package-0", "package-1"]
    m.start()
    set_energy(root, "intel-rapl:0", 262_143_000_000)     # +143 J
    set_energy(root, "intel-rapl:1", 3_000_000)           # +2 J
    m.sample()
    set_energy(root, "intel-rapl:0", 857_000_000 - 328_850)   # wrapped: now below the last read
    m.sample()
    # second interval on package-0: from 262_143_000_000 up to the max (328_850 uJ) then 856_671_150 uJ more
    expected0 = 143_000_000 + (262_143_328_850 - 262_143_000_000) + (857_000_000 - 328_850)
    assert m.total_uj[0] == expected0
    assert m.joules() == pytest.approx((expected0 + 2_000_000) / 1e6)


def test_rapl_absent_or_unreadable_gives_reason(tmp_path):
    m = E.RaplMeter(tmp_path / "nope")
    assert not m.available and "does not exist" in m.reason
    root = tmp_path / "pc"
    make_rapl(root, {"intel-rapl:0": ("package-0", 1, 100)})
    (root / "intel-rapl:0" / "energy_uj").chmod(0)
    import os
    if os.geteuid() == 0:
        pytest.skip("root can read a mode-0 file; the permission path cannot be exercised")
    m = E.RaplMeter(root)
    assert not m.available and "not readable" in m.reason


class FakeNVML:
    """Just enough of pynvml: one GPU whose counters the test moves by hand."""
    class MemInfo:
        used, total = 3 * 2**30, 80 * 2**30

    def __init__(self, energy_supported=True, count=1):
        self.energy_mj = 10_000
        self.power_mw = 300_000
        self.energy_supported, self.count, self.inited = energy_supported, count, False

    def nvmlInit(self): self.inited = True
    def nvmlDeviceGetCount(self): return self.count
    def nvmlDeviceGetHandleByIndex(self, i): return ("h", i)
    def nvmlDeviceGetName(self, h): return b"NVIDIA H200"
    def nvmlDeviceGetPowerUsage(self, h): return self.power_mw
    def nvmlDeviceGetMemoryInfo(self, h): return self.MemInfo()

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy_supported:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.energy_mj


def test_nvml_total_energy_counter_with_wrap():
    fake = FakeNVML()
    m = E.NvmlMeter(fake)
    assert m.available and m.mode == "total_energy_counter" and m.names == ["NVIDIA H200"]
    m.start()
    fake.energy_mj = 15_000
    m.sample()
    fake.energy_mj = 2**64 - 1000
    m.start()                     # fresh start close to the top of the 64-bit counter
    fake.energy_mj = 500          # wrapped: 1000 + 500 mJ
    m.sample()
    assert m.joules() == pytest.approx(1.5)
    assert m.memory()[0]["used_bytes"] == 3 * 2**30


def test_nvml_power_sampling_integrates_trapezoids():
    fake = FakeNVML(energy_supported=False)
    m = E.NvmlMeter(fake)
    assert m.mode == "power_sampling"
    m.start()
    t0 = m.last_t
    fake.power_mw = 500_000
    m.sample(now=t0 + 2.0)        # (300 + 500)/2 W * 2 s = 800 J
    fake.power_mw = 500_000
    m.sample(now=t0 + 3.0)        # + 500 J
    assert m.joules() == pytest.approx(1300.0)


def test_nvml_missing_or_no_gpu_gives_reason():
    assert E.NvmlMeter(FakeNVML(count=0)).reason == "NVML reports no NVIDIA GPU"

    class Broken(FakeNVML):
        def nvmlInit(self): raise RuntimeError("NVML Shared Library Not Found")
    m = E.NvmlMeter(Broken())
    assert not m.available and "Shared Library Not Found" in m.reason


def test_energy_meter_sums_fake_meters_and_threads(tmp_path):
    root = tmp_path / "powercap"
    make_rapl(root, {"intel-rapl:0": ("package-0", 1_000_000, 10_000_000)})
    fake = FakeNVML()
    em = E.EnergyMeter(interval_s=0.05, rapl_root=root, nvml_module=fake).start()
    set_energy(root, "intel-rapl:0", 4_000_000)   # +3 J
    fake.energy_mj += 7_000                       # +7 J
    res = em.stop()
    assert res["energy_j"] == pytest.approx(10.0)
    assert res["energy_kwh"] == pytest.approx(10.0 / 3.6e6)
    assert {m["meter"] for m in res["meters"]} == {"rapl", "nvml"}


def test_energy_is_null_with_reason_on_this_machine():
    em = E.EnergyMeter()
    if em.meters:
        pytest.skip("this machine has a real energy meter")
    res = em.start().stop()
    assert res["energy_j"] is None and res["energy_kwh"] is None
    assert "rapl" in res["reason"] and "nvml" in res["reason"]


def test_estimate_is_separately_named():
    est = E.estimated_energy(10.0, 100.0, "CPU TDP table")
    assert est["estimated_energy_j"] == 1000.0 and "not a reading" in est["estimated_basis"]
    assert "energy_j" not in est
