import os

import pytest

os.environ.setdefault("DEV", "CPU")
# Under pytest-xdist tinygrad 0.14 sizes its kernel-lowering pool as cores // workers = 1 on a 2-core box: one
# spawned process, replaced every 16 kernels, re-importing tinygrad each time, and no parallelism to gain. Lower
# in-process instead (set before tinygrad is imported; the zpctl subprocesses the tests start inherit it).
os.environ.setdefault("PARALLEL", "0")


@pytest.fixture(autouse=True)
def zp_home(tmp_path, monkeypatch):
    """Every test writes into its own workspace, never into the source tree."""
    home = tmp_path / "zphome"
    home.mkdir()
    monkeypatch.setenv("ZP_HOME", str(home))
    for flag in ("ZP_MOCK", "MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE"):
        monkeypatch.delenv(flag, raising=False)
    return home
