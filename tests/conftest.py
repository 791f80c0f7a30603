import os

import pytest

os.environ.setdefault("DEV", "CPU")
# Under pytest-xdist tinygrad 0.14 sizes its kernel-lowering pool as cores // workers = 1 on a 2-core box: one
# spawned process, replaced every 16 kernels, re-importing tinygrad each time, and no parallelism to gain. Lower
# in-process instead (set before tinygrad is imported; the zpctl subprocesses the tests start inherit it).
os.environ.setdefault("PARALLEL", "0")


@pytest.fixture(scope="session", autouse=True)
def suite_cache(tmp_path_factory):
    """One compile cache for the whole run (engine/jitcache.py), shared by both xdist workers, every zpctl
    subprocess and every in-process test: the first test that compiles a kernel or captures a step stores it,
    every later one loads it. An explicit $ZP_CACHE (a CI cache kept between runs) wins."""
    if not os.environ.get("ZP_CACHE"):
        base = tmp_path_factory.getbasetemp()
        os.environ["ZP_CACHE"] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zp-cache")
    from zeropoint.engine import jitcache
    jitcache.enable()
    return os.environ["ZP_CACHE"]


@pytest.fixture(autouse=True)
def zp_home(tmp_path, monkeypatch, suite_cache):
    """Every test writes into its own workspace, never into the source tree; compiled kernels are shared."""
    home = tmp_path / "zphome"
    home.mkdir()
    monkeypatch.setenv("ZP_HOME", str(home))
    monkeypatch.setenv("ZP_CACHE", suite_cache)
    for flag in ("ZP_MOCK", "MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE"):
        monkeypatch.delenv(flag, raising=False)
    return home
