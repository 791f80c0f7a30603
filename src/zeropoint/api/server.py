"""Running the API: pick the executor, open the store, hand the app to uvicorn."""
from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from ..errors import ZeropointError
from ..orchestrator.executor import Executor, LocalExecutor
from ..orchestrator.ray_executor import RayExecutor
from ..orchestrator.store import SqliteStore, open_store
from .app import create_app
from .connections import guarded_h11


def make_executor(store: SqliteStore, kind: str | None = None, *, max_concurrent: int | None = None,
                  ray_address: str | None = None) -> Executor:
    """`ZP_EXECUTOR=local` (default) or `ray` (with `ZP_RAY_ADDRESS`, e.g. http://127.0.0.1:8265)."""
    kind = (kind or os.environ.get("ZP_EXECUTOR") or "local").lower()
    n = max_concurrent or int(os.environ.get("ZP_MAX_CONCURRENT_JOBS", "2"))
    # a recipe checks for SIGTERM between steps; a step mid-compile can take a while on a busy box
    grace = float(os.environ.get("ZP_JOB_TERM_GRACE_S", "30"))
    if kind == "local":
        return LocalExecutor(store, max_concurrent=n, term_grace_s=grace)
    if kind == "ray":
        address = ray_address or os.environ.get("ZP_RAY_ADDRESS")
        if not address:
            raise ZeropointError("ZP_EXECUTOR=ray needs the Ray dashboard address: set ZP_RAY_ADDRESS=http://HOST:8265 "
                                 "(or pass --ray-address)")
        return RayExecutor(store, address=address, max_concurrent=n)
    raise ZeropointError(f"unknown executor {kind!r}; use ZP_EXECUTOR=local or ZP_EXECUTOR=ray")


def serve(host: str = "127.0.0.1", port: int = 8080, *, executor: str | None = None, max_concurrent: int | None = None,
          ray_address: str | None = None, log_level: str = "info", data_root: Path | str | None = None) -> None:
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if not root.is_dir():
            raise ZeropointError(f"--data-root {data_root} is not a directory; create it or pass another one")
        os.environ["ZP_DATA_ROOT"] = str(root)   # the jobs this server starts inherit it
    store = open_store()
    app = create_app(store, make_executor(store, executor, max_concurrent=max_concurrent, ray_address=ray_address),
                     denial_window_s=_env_float("ZP_API_DENIAL_WINDOW_S", 10.0))
    protocol = guarded_h11(header_timeout_s=_env_float("ZP_API_HEADER_TIMEOUT_S", 10.0),
                           body_idle_s=_env_float("ZP_API_BODY_IDLE_S", 30.0),
                           max_per_ip=int(_env_float("ZP_API_MAX_CONN_PER_IP", 64)))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, http=protocol,
                timeout_keep_alive=5, timeout_graceful_shutdown=10, limit_concurrency=1000)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = float("nan")
    if not (0 < value < 1e6):
        raise ZeropointError(f"{name}={raw!r} must be a positive number (default {default:g})")
    return value
