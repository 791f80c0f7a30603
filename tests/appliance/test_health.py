import os

import pytest

from tests.helpers import zpctl, zpctl_json


def checks(doc):
    return {c["name"]: c for c in doc["checks"]}


def test_health_green_on_this_machine():
    r, doc = zpctl_json("health", "--json")
    assert doc["status"] == "green", doc
    assert r.returncode == 0
    assert set(checks(doc)) == {"data_dir_writable", "audit_log_writable", "clang_present", "tinygrad_device",
                                "gpus", "disk_space", "no_mock_flags"}


def test_mock_flag_makes_health_red():
    r, doc = zpctl_json("health", "--json", env={"ZP_MOCK": "1"})
    assert r.returncode == 2 and doc["status"] == "red"
    assert checks(doc)["no_mock_flags"]["status"] == "red" and "ZP_MOCK" in checks(doc)["no_mock_flags"]["detail"]


@pytest.mark.parametrize("flag", ["MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE"])
def test_every_mock_flag_is_red(monkeypatch, flag):
    from zeropoint.appliance.health import check_mock_flags
    monkeypatch.setenv(flag, "TRUE")
    c = check_mock_flags()
    assert c.status == "red" and flag in c.detail


def test_false_mock_flag_is_not_a_mock():
    r, doc = zpctl_json("health", "--json", env={"ZP_MOCK": "0"})
    assert checks(doc)["no_mock_flags"]["status"] == "green"


def test_simulated_device_makes_health_red():
    r, doc = zpctl_json("health", "--json", env={"DEV": "NULL"})
    assert r.returncode == 2 and checks(doc)["tinygrad_device"]["status"] == "red"


def test_unwritable_home_is_red(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        if os.access(home, os.W_OK):   # root ignores permission bits: use a path under a file instead
            target = tmp_path / "file"
            target.write_text("x")
            home = target / "sub"
        r, doc = zpctl_json("health", "--json", env={"ZP_HOME": str(home)})
        assert r.returncode == 2 and checks(doc)["data_dir_writable"]["status"] == "red"
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_human_output():
    r = zpctl("health")
    assert "health:" in r.stdout and "tinygrad_device" in r.stdout
