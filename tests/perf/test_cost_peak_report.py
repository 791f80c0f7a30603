"""Cost policy, calibrated CPU peak cache, GPU peak table, and perf.json/perf.png from a run's metrics."""
import json

import pytest

from zeropoint.errors import ConfigError
from zeropoint.perf import peak as P
from zeropoint.perf.cost import load_policy, run_cost


def test_cost_from_policy_file(zp_home):
    (zp_home / "cost.yaml").write_text("usd_per_kwh: 0.20\nusd_per_hour: 3.60\n")
    pol = load_policy()
    c = run_cost(pol, wall_s=1800, energy_kwh=0.5, tokens=2_000_000)
    assert c["usd_hardware"] == pytest.approx(1.80) and c["usd_energy"] == pytest.approx(0.10)
    assert c["usd_total"] == pytest.approx(1.90) and c["usd_per_1m_tokens"] == pytest.approx(0.95)
    assert c["complete"] and not c["reasons"]


def test_cost_without_energy_or_prices_is_null_with_reason(zp_home):
    c = run_cost(load_policy(), wall_s=60, energy_kwh=None, tokens=1000)
    assert c["usd_total"] is None and len(c["reasons"]) == 2
    c = run_cost(load_policy(usd_per_hour=1.0, usd_per_kwh=0.1), wall_s=3600, energy_kwh=None, tokens=None)
    assert c["usd_hardware"] == 1.0 and c["usd_energy"] is None and not c["complete"]
    assert any("not metered" in r for r in c["reasons"])


def test_cost_policy_errors_name_the_problem(zp_home):
    (zp_home / "cost.yaml").write_text("usd_per_kwh: -1\n")
    with pytest.raises(ConfigError, match="usd_per_kwh"):
        load_policy()
    (zp_home / "cost.yaml").write_text("usd_per_kw: 1\n")
    with pytest.raises(ConfigError, match="usd_per_kw"):
        load_policy()
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(zp_home / "missing.yaml")


def test_cpu_peak_is_calibrated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    calls = []
    monkeypatch.setattr(P, "calibrate_cpu", lambda: calls.append(1) or 5e10)
    a = P.cpu_peak()
    b = P.cpu_peak()
    assert a["flops"] == b["flops"] == 5e10 and a["source"] == "calibrated"
    assert a["cached"] is False and b["cached"] is True and len(calls) == 1
    assert json.loads((tmp_path / "cpu_peak.json").read_text())["flops"] == 5e10


def test_cpu_peak_measured_under_load_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(P.os, "cpu_count", lambda: 2)
    calls = []
    monkeypatch.setattr(P, "calibrate_cpu", lambda: calls.append(1) or 3e10)
    a, b = P.cpu_peak(), P.cpu_peak()
    assert a["flops"] == 3e10 and a["load_average_1m"] == 9.0 and "not cached" in a["note"]
    assert len(calls) == 2 and not (tmp_path / "cpu_peak.json").exists() and b["cached"] is False


def test_calibration_measures_something():
    assert P.calibrate_cpu(n=128, repeats=2) > 1e6


def test_gpu_peak_table():
    assert P.gpu_peak("NVIDIA H200", "bf16")["flops"] == 989.5e12
    assert P.gpu_peak("NVIDIA H100 PCIe", "fp32")["flops"] == 51e12
    unknown = P.device_peak("CUDA", "fp32", gpu_name="Some Future GPU")
    assert unknown["flops"] is None and "not in the peak table" in unknown["reason"]


def test_write_run_perf_from_metrics(zp_home, tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(P, "calibrate_cpu", lambda: 1e9)
    from zeropoint.evidence import start_run
    from zeropoint.perf.report import write_run_perf
    cfg = {"model": {"config": "tiny-untied", "overrides": {}}, "method": "full",
           "data": {"seq_len": 32}, "train": {"micro_batch_size": 4, "grad_accum": 1, "precision": "fp32"}}
    with start_run("test", cfg, kind="llm_finetune") as run:
        for i, (ms, loss) in enumerate([(5000.0, 6.0), (2000.0, 5.0), (100.0, 4.5), (120.0, 4.0), (80.0, 3.5)]):
            run.log_step(i + 1, loss, ms, 128 / (ms / 1000.0))
    doc = write_run_perf(run)
    assert (run.dir / "perf.png").stat().st_size > 1000
    on_disk = json.loads((run.dir / "perf.json").read_text())
    assert on_disk["tokens_per_s"] == pytest.approx(1280.0)      # 128 tokens / median(0.1, 0.12, 0.08)
    assert on_disk["compile_s"] == pytest.approx(7.0)
    fl = doc["flops"]
    assert fl["tokens_per_step"] == 128 and doc["flops_per_step"] == fl["per_step"]
    assert doc["mfu"] == pytest.approx(fl["per_step"] / 0.1 / 1e9)
    assert doc["energy"]["energy_j"] is None and "metrics.jsonl" in doc["energy"]["reason"]
    assert doc["cost"]["usd_total"] is None
