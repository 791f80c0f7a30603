"""The job store: the queue every executor and front end shares.

`JobStore` is the interface (a Protocol) so a PostgreSQL store can stand in for the embedded one; `SqliteStore`
keeps it in `$ZP_HOME/jobs/jobs.db` in WAL mode, so readers (API, `zpctl jobs ls`) never block the executor.
State changes are compare-and-set (`transition`), which is what keeps a job from being started twice or
finished twice when the API, the CLI and an executor race.

API tokens live here too: only a salted SHA-256 of each secret is stored, never the secret.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Protocol

from ..clock import utcnow
from ..errors import ZeropointError
from ..workspace import workspace

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
ROLES = ("viewer", "submitter", "approver", "admin")


def new_job_id() -> str:
    return f"job-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


@dataclass
class Job:
    id: str
    kind: str
    argv: list[str]                       # the zpctl arguments after `zpctl` (e.g. ["train", ".../config.yaml"])
    submitter: str
    state: str = "queued"
    config: dict | None = None
    config_sha256: str | None = None
    inputs_sha256: str | None = None      # SHA-256 over kind, args and config: what the audit log records
    args: dict = field(default_factory=dict)
    dry_run: bool = False
    resources: dict = field(default_factory=dict)
    executor: str = "local"
    idempotency_key: str | None = None
    created_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    external_id: str | None = None        # e.g. the Ray submission id
    run_dir: str | None = None            # the job's own directory: job.log, config.yaml
    run_ids: list[str] = field(default_factory=list)  # evidence runs the job's process created
    error: str | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass
class Token:
    id: str
    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    last_used_at: str | None = None


class JobStore(Protocol):
    """What executors and front ends need from a job store; implement it over PostgreSQL for a shared cluster."""

    def create(self, job: Job) -> tuple[Job, bool]: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def transition(self, job_id: str, from_states: Iterable[str], to_state: str, **fields) -> bool: ...
    def update(self, job_id: str, **fields) -> None: ...
    def next_queued(self, limit: int) -> list[Job]: ...
    def running(self, executor: str | None = None) -> list[Job]: ...
    def cancel_pending(self) -> list[Job]: ...


_JSON_FIELDS = ("argv", "config", "args", "resources", "run_ids")
_COLUMNS = [f for f in Job.__dataclass_fields__]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL, argv TEXT NOT NULL, submitter TEXT NOT NULL, state TEXT NOT NULL,
  config TEXT, config_sha256 TEXT, inputs_sha256 TEXT, args TEXT, dry_run INTEGER NOT NULL DEFAULT 0,
  resources TEXT, executor TEXT NOT NULL, idempotency_key TEXT UNIQUE,
  created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT, exit_code INTEGER, pid INTEGER, external_id TEXT,
  run_dir TEXT, run_ids TEXT, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, salt TEXT NOT NULL, digest TEXT NOT NULL,
  created_at TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at TEXT, last_used_at TEXT
);
"""


def _servable_json(value, column: str) -> str:
    """JSON for a column, refusing what could not be served back (NaN, inf, lone surrogates): a stored job that
    cannot be rendered would break every listing of the store, even after a restart."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as e:
        raise ZeropointError(f"job {column} cannot be stored: {e}; send finite numbers and UTF-8 text") from None
    return text


def default_db_path() -> Path:
    return workspace().root / "jobs" / "jobs.db"


def _hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


class SqliteStore:
    """Embedded store. One connection per thread; every write is a short IMMEDIATE transaction."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)   # executescript manages its own transaction

    # -- connections ---------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a commit survives a process kill
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    class _Tx:
        def __init__(self, conn): self.c = conn
        def __enter__(self):
            self.c.execute("BEGIN IMMEDIATE")
            return self.c
        def __exit__(self, et, e, tb):
            self.c.execute("COMMIT" if et is None else "ROLLBACK")

    def _tx(self):
        return self._Tx(self._conn())

    # -- jobs ----------------------------------------------------------------------------------------------
    @staticmethod
    def _row(job: Job) -> dict:
        d = job.to_dict()
        for k in _JSON_FIELDS:
            d[k] = _servable_json(d[k], k) if d[k] is not None else None
        d["dry_run"] = int(d["dry_run"])
        d["cancel_requested"] = int(d["cancel_requested"])
        return d

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        d = {k: row[k] for k in _COLUMNS}
        for k in _JSON_FIELDS:   # NaN/Infinity a store from before validation may hold come back as strings
            d[k] = json.loads(d[k], parse_constant=str) if d[k] is not None else None
        d["args"] = d["args"] or {}
        d["resources"] = d["resources"] or {}
        d["run_ids"] = d["run_ids"] or []
        d["dry_run"] = bool(d["dry_run"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        return Job(**d)

    def create(self, job: Job) -> tuple[Job, bool]:
        """Insert a job; with an idempotency key already used, return that job instead (created=False)."""
        row = self._row(job)
        cols = ",".join(row)
        with self._tx() as c:
            if job.idempotency_key:
                hit = c.execute("SELECT * FROM jobs WHERE idempotency_key=?", (job.idempotency_key,)).fetchone()
                if hit:
                    return self._job(hit), False
            c.execute(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(row))})", tuple(row.values()))
        return job, True

    def get(self, job_id: str) -> Job | None:
        r = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._job(r) if r else None

    def get_by_key(self, key: str) -> Job | None:
        r = self._conn().execute("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
        return self._job(r) if r else None

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        q, args = "SELECT * FROM jobs", []
        if state:
            q += " WHERE state=?"
            args.append(state)
        q += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        return [self._job(r) for r in self._conn().execute(q, (*args, int(limit), int(offset)))]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for r in self._conn().execute("SELECT state, COUNT(*) n FROM jobs GROUP BY state"):
            out[r["state"]] = r["n"]
        return out

    def transition(self, job_id: str, from_states: Iterable[str], to_state: str, **fields) -> bool:
        """Set state (and fields) only if the job is in one of from_states; True if this call made the change."""
        if to_state not in STATES:
            raise ValueError(f"unknown job state {to_state!r}")
        from_states = list(from_states)
        sets = {"state": to_state, **self._encode(fields)}
        q = (f"UPDATE jobs SET {','.join(f'{k}=?' for k in sets)} WHERE id=? "
             f"AND state IN ({','.join('?' * len(from_states))})")
        with self._tx() as c:
            return c.execute(q, (*sets.values(), job_id, *from_states)).rowcount == 1

    def update(self, job_id: str, **fields) -> None:
        if not fields:
            return
        sets = self._encode(fields)
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET {','.join(f'{k}=?' for k in sets)} WHERE id=?", (*sets.values(), job_id))

    @staticmethod
    def _encode(fields: dict) -> dict:
        bad = set(fields) - set(_COLUMNS)
        if bad:
            raise ValueError(f"unknown job fields {sorted(bad)}")
        out = {}
        for k, v in fields.items():
            out[k] = _servable_json(v, k) if k in _JSON_FIELDS and v is not None else int(v) if isinstance(v, bool) else v
        return out

    def next_queued(self, limit: int) -> list[Job]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE state='queued' AND cancel_requested=0 ORDER BY seq LIMIT ?",
                                    (int(limit),))
        return [self._job(r) for r in rows]

    def running(self, executor: str | None = None) -> list[Job]:
        q, args = "SELECT * FROM jobs WHERE state='running'", []
        if executor:
            q += " AND executor=?"
            args.append(executor)
        return [self._job(r) for r in self._conn().execute(q + " ORDER BY seq", args)]

    def cancel_pending(self) -> list[Job]:
        return [self._job(r) for r in self._conn().execute(
            "SELECT * FROM jobs WHERE cancel_requested=1 AND state IN ('queued','running') ORDER BY seq")]

    def queue_length(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]

    # -- tokens --------------------------------------------------------------------------------------------
    def create_token(self, name: str, role: str, created_by: str) -> tuple[Token, str]:
        """Make a token; returns (record, secret). The secret is shown once and only its salted hash is kept."""
        if role not in ROLES:
            raise ZeropointError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        tid = secrets.token_hex(6)
        secret = f"zp_{tid}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_hex(16)
        tok = Token(id=tid, name=name, role=role, created_at=utcnow(), created_by=created_by)
        with self._tx() as c:
            c.execute("INSERT INTO tokens (id,name,role,salt,digest,created_at,created_by) VALUES (?,?,?,?,?,?,?)",
                      (tid, name, role, salt, _hash_secret(salt, secret), tok.created_at, created_by))
        return tok, secret

    def authenticate(self, secret: str) -> Token | None:
        """The live token for a presented secret, or None. Constant-time compare of the salted hash."""
        parts = secret.split("_", 2) if secret else []
        if len(parts) != 3 or parts[0] != "zp":
            return None
        r = self._conn().execute("SELECT * FROM tokens WHERE id=?", (parts[1],)).fetchone()
        if r is None or r["revoked_at"] or not hmac.compare_digest(r["digest"], _hash_secret(r["salt"], secret)):
            return None
        return Token(**{k: r[k] for k in Token.__dataclass_fields__})

    def list_tokens(self) -> list[Token]:
        return [Token(**{k: r[k] for k in Token.__dataclass_fields__})
                for r in self._conn().execute("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as c:
            return c.execute("UPDATE tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                             (utcnow(), token_id)).rowcount == 1


def open_store(url: str | None = None) -> SqliteStore:
    """`ZP_JOBS_DB` (a path) or the workspace default. A `postgresql://` URL would select a PostgreSQL store."""
    url = url or os.environ.get("ZP_JOBS_DB")
    if url and url.startswith(("postgres://", "postgresql://")):
        raise ZeropointError("a PostgreSQL job store is not built into this release; unset ZP_JOBS_DB to use the "
                             "embedded SQLite store (see docs/scale-out.md)")
    return SqliteStore(url)
