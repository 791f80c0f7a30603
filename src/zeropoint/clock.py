"""The one timestamp format of every record: UTC, ISO 8601, milliseconds unless a record says otherwise."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow(timespec: str = "milliseconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec)
