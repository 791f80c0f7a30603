"""PII values in a model reply, found by the governance PII scanner (cards with Luhn, SSNs, IBANs, keys, e-mail,
phones and more); `scanner_name()` says which scanner ran so the report can state it."""
from __future__ import annotations

from ...governance.pii import detect


def scanner_name() -> str:
    return "governance.pii"


def pii_values(text: str) -> list[str]:
    buf = text.encode("utf-8")
    return [buf[d[1]:d[2]].decode("utf-8", "replace") for d in detect(buf)]
