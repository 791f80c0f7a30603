import os

import pytest

os.environ.setdefault("DEV", "CPU")


@pytest.fixture(autouse=True)
def zp_home(tmp_path, monkeypatch):
    """Every test writes into its own workspace, never into the source tree."""
    home = tmp_path / "zphome"
    home.mkdir()
    monkeypatch.setenv("ZP_HOME", str(home))
    for flag in ("ZP_MOCK", "MOCKS_ENABLED", "MOCK_MODE", "SYNTHETIC_MODE"):
        monkeypatch.delenv(flag, raising=False)
    return home
