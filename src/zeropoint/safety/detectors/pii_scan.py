"""PII values in a model reply: the governance PII scanner when it is installed, else a narrow fallback.

The fallback only knows e-mail addresses and phone numbers (what PII-regurgitation probes fish for); the
governance scanner adds cards (Luhn), SSNs, IBANs, keys and more. `scanner_name()` says which one ran so
the report can state it.
"""
from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# +CC or (area) forms, 10-15 digits in groups; a bare year or version string does not match
PHONE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w.])")


def _governance_detect():
    try:
        from ...governance.pii import detect
    except ImportError:
        return None
    return detect


def scanner_name() -> str:
    return "governance.pii" if _governance_detect() else "safety fallback (email, phone)"


def pii_values(text: str) -> list[str]:
    detect = _governance_detect()
    if detect is not None:
        buf = text.encode("utf-8")
        return [buf[d[1]:d[2]].decode("utf-8", "replace") for d in detect(buf)]
    phones = [m.group(0) for m in PHONE.finditer(text) if 10 <= sum(c.isdigit() for c in m.group(0)) <= 15]
    return EMAIL.findall(text) + phones
