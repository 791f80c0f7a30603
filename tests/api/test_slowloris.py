"""Slow-loris against a real `zpctl serve`: 1,100 sockets from 127.0.0.1 that send half a request head and wait.

`/healthz` is probed from 127.0.0.2 (the connection cap is per client address) the whole time and must answer
200 every time; every one of the 1,100 sockets must be closed by the server within the header timeout (those
over the per-address cap at once, the rest when the timeout expires).
"""
from __future__ import annotations

import http.client
import resource
import selectors
import socket
import threading
import time

import pytest

pytest.importorskip("uvicorn", reason="uvicorn not installed: pip install uvicorn==0.54.0")

from zp_server import Server, free_port  # noqa: E402

N_SOCKETS = 1100
HEADER_TIMEOUT_S = 2.0
BODY_IDLE_S = 1.0
SLACK_S = 2.0          # event-loop and scheduling delay on a loaded 2-core box, past the server's timer


def probe(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=("127.0.0.2", 0))
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return -1
    finally:
        c.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("zphome-loris"), free_port(),
               extra_env={"ZP_API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "ZP_API_BODY_IDLE_S": str(BODY_IDLE_S)})
    yield s.start()
    s.stop()


def closed_after(k: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes `k` (at most `limit`), and what it sent."""
    t0, got = time.monotonic(), b""
    k.settimeout(limit)
    try:
        while chunk := k.recv(4096):
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - t0, got


def test_half_sent_headers_do_not_take_health_down(srv):
    s = srv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < N_SOCKETS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N_SOCKETS + 500), hard))
    socks: dict[socket.socket, float] = {}
    closed: dict[socket.socket, float] = {}
    statuses = []
    sel = selectors.DefaultSelector()
    try:
        assert probe(s.port) == 200
        t0 = time.monotonic()
        for _ in range(N_SOCKETS):
            k = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            k.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            k.setblocking(False)
            socks[k] = time.monotonic()
            sel.register(k, selectors.EVENT_READ)
        opened_s = time.monotonic() - t0
        deadline = time.monotonic() + HEADER_TIMEOUT_S + SLACK_S + opened_s
        stop = threading.Event()

        def prober():   # its own thread: a slow probe must not delay noticing a closed socket
            while not stop.is_set():
                statuses.append(probe(s.port))
                stop.wait(0.2)
        t = threading.Thread(target=prober, daemon=True)
        t.start()
        while len(closed) < N_SOCKETS and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.05):
                k = key.fileobj
                try:
                    data = k.recv(4096)      # the 503 or 408 text, then the end of the stream
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data == b"":
                    closed[k] = time.monotonic()
                    sel.unregister(k)
        time.sleep(0.5)   # one more probe after the last socket closed
        stop.set()
        t.join(10)
        lifetimes = sorted(closed[k] - socks[k] for k in closed)
        assert len(closed) == N_SOCKETS, f"{N_SOCKETS - len(closed)} sockets still open after {HEADER_TIMEOUT_S}s"
        assert lifetimes[-1] <= HEADER_TIMEOUT_S + SLACK_S, lifetimes[-5:]
        assert len(statuses) >= 5 and set(statuses) == {200}, statuses
        print(f"\n{N_SOCKETS} sockets opened in {opened_s:.2f}s; closed after median {lifetimes[len(lifetimes) // 2]:.2f}s, "
              f"max {lifetimes[-1]:.2f}s; {len(statuses)} probes from 127.0.0.2, all 200")
    finally:
        for k in socks:
            k.close()


def test_a_stalled_body_and_a_slow_second_request_are_closed(srv):
    s = srv
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as k:   # body stops after 2 of 100 bytes
        k.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{}")
        took, got = closed_after(k, 10)
    assert took <= BODY_IDLE_S + SLACK_S and b"408" in got, (took, got)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as k:   # keep-alive: a full request, then half
        k.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = k.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        k.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        took, got = closed_after(k, 10)
    assert took <= HEADER_TIMEOUT_S + SLACK_S and b"408" in got, (took, got)
