"""Fixtures for the API tests: a real server on a free loopback port, and one token per role."""
from __future__ import annotations

import pytest

from zp_server import Server, free_port, make_token


@pytest.fixture
def server(zp_home):
    s = Server(zp_home, free_port()).start()
    yield s
    s.stop()


@pytest.fixture
def tokens(zp_home):
    return {r: make_token(r, home=zp_home) for r in ("viewer", "submitter", "approver", "admin")}
