"""NVML inventory, the hardware fingerprint and run evidence, through a fake NVML (no GPU on CI machines)."""
import json

from tests.fake_nvml import FakeNVML
from zeropoint.appliance import identity, nvml


def test_inventory_reads_every_field_from_nvml():
    fake = FakeNVML()
    inv = nvml.gpu_inventory(fake)
    assert inv["available"] and inv["driver_version"] == "580.159.04" and inv["cuda_driver_version"] == "13.0"
    g = inv["gpus"][0]
    assert g["name"] == "NVIDIA H200" and g["uuid"].startswith("GPU-") and g["pci_bus_id"] == "00000000:19:00.0"
    assert g["memory_total_bytes"] == 143771 * 2**20 and g["compute_capability"] == "9.0"
    assert g["ecc"] == {"current": True, "pending": True} and g["power_limit_w"] == 700.0
    assert g["clocks_max_mhz"] == {"graphics": 1980, "sm": 1980, "memory": 3201}
    assert inv["errors"] == {} and fake.inits == fake.shutdowns == 1   # NVML's init count is balanced


def test_unsupported_field_is_null_with_its_error_not_a_failure():
    inv = nvml.gpu_inventory(FakeNVML(unsupported={"ecc"}, count=2))
    assert [g["index"] for g in inv["gpus"]] == [0, 1]
    assert inv["gpus"][0]["ecc"] is None and "Not Supported" in inv["errors"]["gpu0.ecc"]
    assert inv["gpus"][1]["name"] == "NVIDIA H200"


def test_no_nvml_is_unavailable_with_reason():
    class Broken(FakeNVML):
        def nvmlInit(self):
            raise RuntimeError()            # an empty message must not break the reason
    inv = nvml.gpu_inventory(Broken())
    assert inv == {"available": False, "reason": "NVML unavailable: RuntimeError (no message)", "gpus": []}
    assert nvml.gpu_inventory(FakeNVML(count=0))["reason"] == "NVML reports no NVIDIA GPU"


def test_fingerprint_covers_the_gpus_and_is_unchanged_without_them(monkeypatch):
    base = identity.hardware_fingerprint.__wrapped__()
    monkeypatch.setattr(identity, "gpu_inventory_cached", lambda: {"available": False, "reason": "x", "gpus": []})
    assert identity.hardware_fingerprint.__wrapped__() == base
    monkeypatch.setattr(identity, "gpu_inventory_cached", lambda: nvml.gpu_inventory(FakeNVML()))
    with_gpu = identity.hardware_fingerprint.__wrapped__()
    monkeypatch.setattr(identity, "gpu_inventory_cached", lambda: nvml.gpu_inventory(FakeNVML(name=b"NVIDIA A100-SXM4-80GB")))
    assert len({base, with_gpu, identity.hardware_fingerprint.__wrapped__()}) == 3


def test_every_run_records_the_gpu_inventory(monkeypatch, zp_home):
    from zeropoint import evidence
    monkeypatch.setattr(evidence, "gpu_inventory", lambda: nvml.gpu_inventory(FakeNVML()))
    with evidence.start_run("test", {"a": 1}, kind="t") as run:
        pass
    rec = json.loads(run.run_json.read_text())
    assert rec["gpus"]["gpus"][0]["name"] == "NVIDIA H200" and rec["gpus"]["cuda_driver_version"] == "13.0"


def test_health_gpu_check_through_fake(monkeypatch):
    from zeropoint.appliance import health
    assert health.check_gpus(FakeNVML()).status == "green"
    monkeypatch.setattr(health, "device_name", lambda: "CUDA")
    c = health.check_gpus(FakeNVML(count=0))
    assert c.status == "yellow" and "nvidia-ml-py" in c.detail
