import re
import subprocess

import pytest

from tests.helpers import zpctl, zpctl_json

ID_RE = re.compile(r"^ZP-[0-9A-Z]{8}$")


@pytest.fixture(scope="module")
def diag():
    r, doc = zpctl_json("diag", "--json")
    assert r.returncode == 0, r.stderr
    return doc


def test_diag_has_every_field(diag):
    for key in ("appliance_id", "commit", "version", "hardware", "libraries", "parity", "simulated"):
        assert key in diag
    hw = diag["hardware"]
    assert hw["cpu"]["logical_cores"] >= 1 and hw["cpu"]["model"]
    assert hw["memory_bytes"] > 0
    assert hw["disks"] and all(d["free_bytes"] > 0 for d in hw["disks"])
    assert re.fullmatch(r"[0-9a-f]{64}", hw["fingerprint"])
    cpu_dev = [d for d in hw["accelerators"]["tinygrad"] if d["device"] == "CPU"]
    assert cpu_dev and cpu_dev[0]["opens"] is True
    assert diag["simulated"] is False
    assert ID_RE.match(diag["appliance_id"])


def test_parity_passes_with_gflops_for_both(diag):
    p = diag["parity"]
    assert p["status"] == "PASS"
    assert [r["size"] for r in p["results"]] == [64, 128, 256, 512, 1024]
    for r in p["results"]:
        assert r["status"] == "PASS" and r["max_rel_error"] <= r["tolerance"]
        assert r["tinygrad_gflops"] > 0 and r["numpy_gflops"] > 0


def test_library_hashes_match_sha256sum(diag):
    libs = {lib["name"]: lib for lib in diag["libraries"]}
    clang = libs["clang"]
    out = subprocess.run(["sha256sum", clang["path"]], capture_output=True, text=True, check=True).stdout.split()[0]
    assert clang["sha256"] == out
    tg = libs["tinygrad"]
    # the documented recipe for the tree hash, done by the coreutils themselves
    cmd = "find . -type f ! -path '*/__pycache__/*' -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    out = subprocess.run(["bash", "-c", cmd], cwd=tg["path"], capture_output=True, text=True, check=True).stdout.split()[0]
    assert tg["sha256"] == out and tg["version"] == "0.14.0"


def test_appliance_id_stable_across_calls(diag):
    r, again = zpctl_json("diag", "--json", "--no-parity")
    assert r.returncode == 0
    assert again["appliance_id"] == diag["appliance_id"]
    assert again["hardware"]["fingerprint"] == diag["hardware"]["fingerprint"]


def test_null_device_is_simulated():
    r, doc = zpctl_json("diag", "--json", env={"DEV": "NULL"})
    assert r.returncode == 0, r.stderr
    assert doc["simulated"] is True
    assert doc["parity"]["status"] == "SKIPPED" and "simulated" in doc["parity"]["reason"]


def test_mock_flag_diag_still_diagnoses_but_is_stamped():
    r, doc = zpctl_json("diag", "--json", "--no-parity", env={"ZP_MOCK": "1"})
    assert r.returncode == 0
    assert doc["simulated"] is True and any("ZP_MOCK" in s for s in doc["simulated_reasons"])


def test_human_diag_is_a_table():
    r = zpctl("diag", "--no-parity")
    assert r.returncode == 0 and "Zeropoint appliance ZP-" in r.stdout and "tinygrad" in r.stdout
