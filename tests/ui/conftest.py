"""Browser tests of the control center: Debian's chromium driven by Playwright (never a downloaded browser)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "api"))   # zp_server: the real `zpctl serve` the API tests use


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if p := shutil.which(name):
            return p
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    p = find_chromium()
    if p is None:   # a failure, not a skip: CI installs chromium, so its absence is a broken set-up
        pytest.fail("chromium not found on PATH: the control-center browser tests need Debian's chromium; "
                    "run `make setup` (it runs `apt-get install -y chromium`)", pytrace=False)
    return p


@pytest.fixture(scope="session")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `make setup` (pip install playwright==1.65.2; the browser is "
                    "Debian's chromium, never `playwright install`)", pytrace=False)
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots go to $ZP_TEST_ARTIFACTS/ui/ (CI collects them), else <repo>/test-artifacts/ui/ (gitignored)."""
    d = Path(os.environ.get("ZP_TEST_ARTIFACTS") or REPO / "test-artifacts") / "ui"
    d.mkdir(parents=True, exist_ok=True)
    return d
