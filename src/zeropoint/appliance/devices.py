"""tinygrad's compute backends: which open on this machine, and why the others do not.

Each backend is opened for real (`Device[name]`) in a child process by default: a driver that segfaults,
hangs or leaves state behind (NV and CUDA both take the GPU) cannot take `zpctl diag` down with it or change
what the parent process computes on; a new child carries on after a backend that killed or hung the last one. A backend that fails is reported with its exception type and
message; an empty message (the H200 crash: `str(e).splitlines()[0]` on `RuntimeError()`) reads
"RuntimeError (no message)". An ExceptionGroup (tinygrad tries several interfaces per GPU) lists its parts.

    python -m zeropoint.appliance.devices CUDA NV     # the child's side: one JSON line per backend
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tinygrad import Device
from tinygrad.device import ALL_DEVICES

from .nvml import error_text

# Compute backends, in tinygrad's own preference order (tinygrad.device.ALL_DEVICES) then the rest it ships.
# DISK/NPY/TINYFS/RDMA are storage or transport, not compute. NULL and PYTHON are simulated (scope.py).
NOT_COMPUTE = ("DISK", "NPY", "TINYFS", "RDMA")
SIMULATED = ("NULL", "PYTHON")
PROBE_TIMEOUT_S = 60.0


def backends() -> list[str]:
    shipped = [d for d in Device._devices if d not in NOT_COMPUTE]
    return [d for d in ALL_DEVICES if d in shipped] + sorted(d for d in shipped if d not in ALL_DEVICES)


def describe_error(e: BaseException) -> dict:
    out = {"error": error_text(e), "error_type": type(e).__name__, "error_message": str(e)}
    if isinstance(e, BaseExceptionGroup):
        out["causes"] = [error_text(x) for x in e.exceptions]
    return out


def _open(name: str):
    return Device[name]


def probe_backend(name: str, opener=_open) -> dict:
    """Open one backend in this process. `opener` is for tests (a backend with no hardware here)."""
    t0 = time.perf_counter()
    row = {"device": name, "simulated": name in SIMULATED}
    try:
        dev = opener(name)
    except Exception as e:   # each backend fails in its own way when its driver or hardware is absent
        return {**row, "opens": False, **describe_error(e), "open_s": round(time.perf_counter() - t0, 3)}
    row.update(opens=True, error=None, open_s=round(time.perf_counter() - t0, 3))
    try:   # what kernels would be built with: a compile-only backend (no renderer) is still a fact to show
        r = dev.renderer
        row["renderer"] = type(r).__name__
        row["arch"] = getattr(r, "arch", None) or getattr(dev, "arch", None)
    except Exception as e:
        row["renderer"], row["renderer_error"] = None, error_text(e)
    return row


def _child_env() -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])   # the directory holding the zeropoint package
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _failed(name: str, error_type: str, error: str, message: str = "") -> dict:
    return {"device": name, "simulated": name in SIMULATED, "opens": False, "error_type": error_type,
            "error": error, "error_message": message}


def _probe_child(names: list[str], timeout_s: float) -> tuple[list[dict], list[str]]:
    """Probe `names` in one child process, in order. -> (rows, names left unprobed after a crash or hang)."""
    p = subprocess.Popen([sys.executable, "-m", "zeropoint.appliance.devices", *names], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_child_env())
    lines: queue.Queue = queue.Queue()
    err_tail: list[str] = []
    threading.Thread(target=lambda: [lines.put(ln) for ln in p.stdout] + [lines.put(None)], daemon=True).start()
    threading.Thread(target=lambda: [err_tail.append(ln.rstrip()) for ln in p.stderr], daemon=True).start()
    rows: dict[str, dict] = {}
    current, deadline = None, time.monotonic() + timeout_s
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:   # the backend being opened hangs: give up on it, carry on with the rest
                p.kill()
                rows[current or names[0]] = _failed(current or names[0], "Timeout",
                                                    f"opening {current or names[0]} did not finish in {timeout_s:.0f} s")
                break
            if line is None:
                break
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue      # a backend printed to stdout while opening
            if "opening" in msg:
                current, deadline = msg["opening"], time.monotonic() + timeout_s
            elif "device" in msg:
                rows[msg["device"]], current = msg, None
        rc = p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    if current is not None and current not in rows:   # the child died inside a backend's open
        how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        tail = [ln for ln in err_tail if ln.strip()][-1:] or ["(no output)"]
        rows[current] = _failed(current, "ProbeCrashed", f"the probe process {how} while opening {current}: "
                                f"{tail[0][:200]}", tail[0])
    return list(rows.values()), [n for n in names if n not in rows]


def probe_backends(names: list[str] | None = None, isolate: bool = True, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
    """One row per backend: {device, opens, error, error_type, error_message, simulated, renderer, ...}.

    isolate: open them in a child process (one tinygrad import for all); a backend that kills or hangs the
    child is reported as such and a new child carries on with the backends after it."""
    names = list(names or backends())
    if not isolate:
        return [probe_backend(n) for n in names]
    rows: dict[str, dict] = {}
    todo = names
    while todo:
        got, left = _probe_child(todo, timeout_s)
        rows.update((r["device"], r) for r in got)
        if left and not got:      # the child could not even start: say so for each backend, never loop
            for n in left:
                rows[n] = _failed(n, "ProbeCrashed", "the probe process exited before probing any backend")
            break
        todo = left
    return [rows[n] for n in names]


def _main(argv: list[str]) -> int:
    for name in argv:
        print(json.dumps({"opening": name}), flush=True)
        print(json.dumps(probe_backend(name), default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
