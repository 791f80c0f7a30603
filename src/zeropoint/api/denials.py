"""Coalescing the audit events of requests nobody is authenticated for.

Every request the API answers with a denial is audited, and each audit append is an fsync. Requests without a
valid token cost an attacker nothing, so one event per request would let anyone grow the log (and the disk
queue) without limit. For those requests only (actor `anonymous` or `invalid-token`), per client address and
actor: the first is written as usual, before its answer; the ones that follow within `window_s` are counted,
and one `api.denied_coalesced` event records the count, the statuses, the paths (the first few) and the first
and last times when the window closes. Nothing is lost but the per-request detail: the counts add up to the
number of requests. Requests with a valid token are always audited one by one.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

MAX_PATHS = 8   # distinct paths kept per window (the rest are counted under "other")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class DenialCoalescer:
    def __init__(self, window_s: float, write: Callable[[str, str, str, dict, str], None]):
        self.window_s, self.write = float(window_s), write
        self._open: dict[tuple[str, str], dict] = {}
        self._closed: list[tuple[tuple[str, str], dict]] = []   # windows ended by a new denial, written by flush
        self._lock = threading.Lock()

    def admit(self, actor: str, client: str | None, method: str, path: str, status: int) -> bool:
        """True: write this request's own event now (it opens a window). False: it was counted in the window.
        Never writes itself (it runs on the server's event loop); `flush` does, from a worker thread."""
        key = (actor, client or "unknown")
        now = time.monotonic()
        with self._lock:
            w = self._open.get(key)
            if w is None or now - w["opened"] >= self.window_s:
                if w is not None:
                    self._closed.append((key, w))
                self._open[key] = {"opened": now, "count": 0, "first_at": None, "last_at": None,
                                   "statuses": Counter(), "paths": Counter(), "methods": Counter()}
                return True
            ts = _now_iso()
            w["count"] += 1
            w["first_at"] = w["first_at"] or ts
            w["last_at"] = ts
            w["statuses"][str(status)] += 1
            w["methods"][method] += 1
            w["paths"][path if path in w["paths"] or len(w["paths"]) < MAX_PATHS else "other"] += 1
            return False

    def flush(self, everything: bool = False) -> int:
        """Write the summary of every window that has closed (all of them at shutdown); -> events written."""
        now = time.monotonic()
        with self._lock:
            due = [(k, w) for k, w in self._open.items() if everything or now - w["opened"] >= self.window_s]
            for k, _ in due:
                del self._open[k]
            due, self._closed = self._closed + due, []
        return sum(self._close(k, w) for k, w in due)

    def _close(self, key: tuple[str, str], w: dict) -> int:
        if not w["count"]:
            return 0
        actor, client = key
        self.write(actor, "api.denied_coalesced", f"client:{client}",
                   {"count": w["count"], "client": client, "first_at": w["first_at"], "last_at": w["last_at"],
                    "window_s": self.window_s, "statuses": dict(w["statuses"]), "methods": dict(w["methods"]),
                    "paths": dict(w["paths"])}, "denied")
        return 1
