"""Start and stop a real local Ray head for tests, touching only the processes it started."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_bin() -> Path:
    return Path(sys.executable).with_name("ray")


def start_head(temp_dir: Path, num_cpus: int = 2, timeout: float = 240, retries: int = 1) -> str:
    """`ray start --head` on 127.0.0.1 with every port picked free (Ray's defaults collide on shared boxes)."""
    dash, gcs = free_port(), free_port()
    (temp_dir / "zp_gcs_port").write_text(str(gcs))
    cmd = [str(ray_bin()), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--num-cpus={num_cpus}", "--num-gpus=0",
           "--include-dashboard=true", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    # jobs lower tinygrad kernels in-process (zp_server.py). The raylet aborts when its dashboard agent has not
    # reported its ports in time; that agent's Python start-up alone took 19 s on this 2-core box at load 7
    # (raylet.err: "Check failed" in WaitForDashboardAgentPorts), so the agent gets 120 s.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PARALLEL="0", RAY_agent_register_timeout_ms="120000")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0 and "timed out during startup" in out.stderr and retries > 0:
        # Ray gives its raylet a fixed 30 s to register with the GCS (ray/_private/node.py); on a loaded 2-core box
        # the GCS answers slower than that (13 s for one config read, measured). Stop what started, try once more.
        stop_head(temp_dir)
        return start_head(temp_dir, num_cpus, timeout, retries - 1)
    if out.returncode != 0:
        raise RuntimeError(f"ray start failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return f"http://127.0.0.1:{dash}"


def _procs() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        out[int(d.name)] = (ppid, cmd)
    return out


def head_pids(temp_dir: Path) -> set[int]:
    """Processes of this head: those naming its temp dir, and all their descendants."""
    procs = _procs()
    gcs = (temp_dir / "zp_gcs_port").read_text().strip() if (temp_dir / "zp_gcs_port").exists() else None
    # the Ray client server names only the GCS address, not the temp dir
    mine = {pid for pid, (_, cmd) in procs.items()
            if str(temp_dir) in cmd or (gcs and "ray" in cmd and f":{gcs} " in cmd + " ")}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        grew = bool(kids)
        mine |= kids
    mine.discard(os.getpid())
    return mine


def stop_head(temp_dir: Path, grace: float = 15) -> list[int]:
    pids = head_pids(temp_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    for pid in pids | head_pids(temp_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(pids)
