"""Append-only, hash-chained audit log (`datasets/audit.jsonl`), shared by governance, the API, evals and red-team.

Each line is one event `{seq, ts, actor, action, resource, details, outcome, prev_hash, hash}`; `hash` is the
SHA-256 of the canonical JSON of every other field, and `prev_hash` is the previous line's `hash` (64 zeros for
the first). `seq` equals the 1-based line number, so an insertion, deletion or reordering breaks either the seq
or the chain. Deleting the *last* lines leaves a valid prefix, which a chain alone cannot notice: a small head
file (`audit.jsonl.head`, rewritten atomically under the same lock) records the last seq and hash, and
`verify_chain` checks the log ends there. Deleting the head with the lines is caught by the chain itself: the
event that creates the head file says so in its details (`audit_head: created`), and an append that finds the
head gone from a log that has events says that (`audit_head: missing`); `verify_chain` fails on a missing head
once the chain records one, and on any `missing` record.

Appends from several processes are serialised with `fcntl.flock` on a sidecar lock file; each line goes out in
one `write` on an O_APPEND descriptor followed by fsync, so a reader never sees half a line from a live writer.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import socket
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ZeropointError
from ..hashing import canonical_json, sha256_bytes
from ..workspace import atomic_write_text, workspace

GENESIS = "0" * 64
FIELDS = ("seq", "ts", "actor", "action", "resource", "details", "outcome", "prev_hash")


class AuditError(ZeropointError):
    """The audit log is damaged or cannot be appended to."""


def default_actor() -> str:
    """Who is acting when the caller does not say: the OS user at this host (never blank)."""
    user = os.environ.get("ZP_ACTOR") or os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def log_path(path: Path | str | None = None) -> Path:
    return Path(path) if path is not None else workspace().audit_log


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _recordable(value):
    """The value with what JSON/UTF-8 cannot hold made visible instead of fatal: a lone surrogate (e.g. from a
    non-UTF-8 command-line argument) becomes its backslash escape, NaN/inf their names. An event that could not be
    written would leave the chain without the request it was for."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_recordable(str(k)): _recordable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_recordable(v) for v in value]
    return value


def event_hash(event: dict) -> str:
    return sha256_bytes(canonical_json({k: event.get(k) for k in FIELDS}))


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lk:
        fcntl.flock(lk.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lk.fileno(), fcntl.LOCK_UN)


def _last_line(path: Path) -> bytes | None:
    """The last non-empty line, read backwards from the end so appends stay O(1) however long the log is."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        block, buf, pos = 1 << 14, b"", end
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            stripped = buf.rstrip(b"\n")
            if b"\n" in stripped:
                return stripped.rsplit(b"\n", 1)[1]
        return buf.rstrip(b"\n") or None


def append_event(actor: str | None, action: str, resource: str, details: dict | None = None, outcome: str = "ok",
                 *, path: Path | str | None = None) -> dict:
    """Append one event to the chain and return it (with seq and hash). Safe across processes."""
    if not action or not resource:
        raise AuditError("audit events need an action and a resource (e.g. action='approve', resource='dataset:sotu')")
    p = log_path(path)
    with _locked(p):
        last = _last_line(p)
        if not _head_path(p).exists():   # recorded in the chain, so deleting the head later cannot go unnoticed
            details = dict(details or {}, audit_head="created" if last is None else "missing")
        if last is None:
            seq, prev = 1, GENESIS
        else:
            try:
                ev = json.loads(last)
                seq, prev = int(ev["seq"]) + 1, str(ev["hash"])
            except (ValueError, KeyError, TypeError):
                raise AuditError(f"the last line of {p} is not a valid audit event; run `zpctl audit verify` "
                                 "to find the damage, and restore the log from a backup") from None
        event = {"seq": seq, "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                 "actor": _recordable(actor or default_actor()), "action": _recordable(action),
                 "resource": _recordable(resource), "details": json.loads(canonical_json(_recordable(details or {}))),
                 "outcome": _recordable(outcome), "prev_hash": prev}
        event["hash"] = event_hash(event)
        line = canonical_json(event) + b"\n"
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, line) != len(line):
                raise AuditError(f"short write to {p}; the disk may be full")
            os.fsync(fd)
        finally:
            os.close(fd)
        atomic_write_text(_head_path(p), json.dumps({"seq": seq, "hash": event["hash"]}) + "\n")
    return event


@dataclass
class ChainReport:
    ok: bool
    path: str
    events: int
    first_bad_line: int | None = None
    reason: str | None = None
    head: dict | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verify_chain(path: Path | str | None = None) -> ChainReport:
    """Recompute the chain line by line; report the first line that was edited, inserted, moved or removed."""
    p = log_path(path)
    head_file = _head_path(p)
    head = None
    if head_file.exists():
        try:
            head = json.loads(head_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            head = {"error": "unreadable"}
    if not p.exists():
        if head and head.get("seq"):
            return ChainReport(False, str(p), 0, 1, f"log is missing but its head records {head.get('seq')} events", head)
        return ChainReport(True, str(p), 0, head=head)
    prev, n, head_line_hash, head_since = GENESIS, 0, None, None
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            def bad(why: str) -> ChainReport:
                return ChainReport(False, str(p), n - 1, n, f"line {n}: {why}", head)
            if not raw.endswith(b"\n"):
                return bad("truncated (no newline at end)")
            try:
                ev = json.loads(raw)
            except ValueError:
                return bad("not valid JSON")
            if not isinstance(ev, dict) or set(ev) != set(FIELDS) | {"hash"}:
                return bad("not an audit event (fields missing or added)")
            if ev["seq"] != n:
                return bad(f"seq is {ev['seq']}, expected {n} (a line was inserted, deleted or moved before here)")
            if ev["prev_hash"] != prev:
                return bad("prev_hash does not match the previous line's hash (line inserted, deleted or reordered)")
            if event_hash(ev) != ev["hash"]:
                return bad("content does not match its hash (the line was edited)")
            if canonical_json(ev) + b"\n" != raw:
                return bad("line is not in canonical form (the line was edited)")
            prev = ev["hash"]
            if head and ev["seq"] == head.get("seq"):
                head_line_hash = ev["hash"]
            marker = ev["details"].get("audit_head") if isinstance(ev["details"], dict) else None
            if marker == "missing":
                return bad(f"the head file was missing when seq {n} was appended (seq {head_since} recorded its "
                           "creation): lines may have been deleted from the end before it")
            if marker == "created" and head_since is None:
                head_since = n
    problems = []
    if head is None and head_since is not None:
        return ChainReport(False, str(p), n, n + 1,
                           f"{head_file.name} is missing, but the chain records it since seq {head_since}: lines may "
                           "have been deleted from the end; restore the log and its head from a backup", head)
    if head is None and n:
        problems.append("no head file and none recorded in the chain: deleting lines from the end of this log "
                        "would not be noticed")
    if head is not None:
        hs = head.get("seq")
        if not isinstance(hs, int) or hs > n or head_line_hash != head.get("hash"):
            return ChainReport(False, str(p), n, n + 1,
                               f"line {n + 1}: missing; the log ends at seq {n} but its head records seq {hs} "
                               "with another hash (lines were deleted from the end, or the head was edited)", head)
        if hs < n:
            # a writer died between appending its line and updating the head: the chain itself is intact
            problems.append(f"head lags the log ({hs} < {n}): an append was interrupted before the head update")
    return ChainReport(True, str(p), n, head=head, problems=problems)


def read_events(path: Path | str | None = None, *, last: int | None = None) -> list[dict]:
    """Events as stored (unverified; call `verify_chain` before trusting them)."""
    p = log_path(path)
    if not p.exists():
        return []
    out: deque = deque(maxlen=last)
    with open(p, "rb") as f:
        for raw in f:
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"unparseable": raw.decode("utf-8", "replace").rstrip("\n")})
    return list(out)
