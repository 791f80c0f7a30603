"""Running the API: pick the executor, open the store, hand the app to uvicorn."""
from __future__ import annotations

import os

import uvicorn

from ..errors import ZeropointError
from ..orchestrator.executor import Executor, LocalExecutor
from ..orchestrator.ray_executor import RayExecutor
from ..orchestrator.store import SqliteStore, open_store
from .app import create_app


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
          ray_address: str | None = None, log_level: str = "info") -> None:

    store = open_store()
    app = create_app(store, make_executor(store, executor, max_concurrent=max_concurrent, ray_address=ray_address))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10, limit_concurrency=1000)
