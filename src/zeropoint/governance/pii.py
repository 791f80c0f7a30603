"""Streaming PII scanner: regexes over bytes, each candidate confirmed by a validator (Luhn, mod-97, SSN rules,
ipaddress, entropy) before it counts.

Why bytes: offsets are byte offsets for free, nothing is decoded, and any encoding (the 2002 SpamAssassin mail is
mostly latin-1) scans the same. Files are read in 4 MiB blocks cut at the last newline, so memory stays flat on
multi-GB inputs; a match can only be missed if it straddles a line longer than the block (documented limit).

Detectors whose match starts with a variable-length class (e-mail local parts, URL schemes) are driven by a
literal anchor (`@`, `://`) and extended backwards, because Python's regex engine only skips ahead quickly when a
pattern starts with a literal; this is most of the speed difference to Presidio.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ZeropointError

BLOCK = 4 << 20
TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IPV4", "IPV6", "URL_CREDENTIALS", "SECRET", "US_ADDRESS")
# when two findings overlap, the higher-priority one stays (a password URL is not also an e-mail)
PRIORITY = {"SECRET": 9, "URL_CREDENTIALS": 8, "CREDIT_CARD": 7, "IBAN": 6, "US_SSN": 5, "EMAIL": 4, "US_ADDRESS": 3,
            "PHONE": 2, "IPV6": 1, "IPV4": 1}


@dataclass(slots=True)
class Finding:
    type: str
    start: int            # byte offset in the file
    end: int
    line: int             # 1-based
    confidence: float
    sample: str           # redacted: never the full value
    subtype: str | None = None
    path: str | None = None

    def as_dict(self) -> dict:
        return {"type": self.type, "subtype": self.subtype, "path": self.path, "offset": self.start,
                "length": self.end - self.start, "line": self.line, "confidence": self.confidence, "sample": self.sample}


def redact_sample(value: bytes, kind: str) -> str:
    """Enough to recognise a finding in review, not enough to reuse it."""
    s = value.decode("utf-8", "replace")
    if kind == "EMAIL" and "@" in s:
        local, dom = s.split("@", 1)
        tld = dom.rsplit(".", 1)[-1]
        return f"{local[:1]}***@***.{tld}"
    if kind in ("CREDIT_CARD", "US_SSN", "IBAN", "PHONE"):
        digits = [c for c in s if c.isalnum()]
        return "*" * max(0, len(digits) - 4) + "".join(digits[-4:])
    if kind == "SECRET":
        return s[:4] + "***" if len(s) > 8 else "***"
    if kind == "URL_CREDENTIALS":
        return re.sub(r"//[^:/@]+:[^@]+@", "//***:***@", s)
    if len(s) <= 4:
        return "*" * len(s)
    return s[:2] + "*" * (len(s) - 4) + s[-2:]


# ---- validators ---------------------------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def card_brand(d: str) -> str | None:
    n, p2, p4 = len(d), int(d[:2]), int(d[:4])
    if d[0] == "4" and n in (13, 16, 19): return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16: return "mastercard"
    if p2 in (34, 37) and n == 15: return "amex"
    if (d.startswith("6011") or d.startswith("65") or 644 <= int(d[:3]) <= 649) and 16 <= n <= 19: return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19: return "jcb"
    if (300 <= int(d[:3]) <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19: return "diners"
    if p2 == 62 and 16 <= n <= 19: return "unionpay"
    return None


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(s: str) -> bool:
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    # SSA rules: area 000, 666 and 900-999 never issued; group 00 and serial 0000 never issued
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return False
    return f"{area}-{group}-{serial}" not in ("078-05-1120", "219-09-9999")   # published in ads; not a person's


def entropy(s: bytes) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


# ---- detectors ----------------------------------------------------------------------------------------------
# Speed: Python's regex engine only skips quickly to a candidate when a pattern starts with a literal. So each
# detector finds cheap literal "seeds" - often in a shape copy of the block where every digit is '0', every
# upper-case letter 'A' and every lower-case letter 'a' (same offsets, one C-speed translate) - and runs its
# full pattern with `.match` only at the few positions a seed points to.
_SHAPE = bytes(48 if 48 <= c <= 57 else 65 if 65 <= c <= 90 else 97 if 97 <= c <= 122 else c for c in range(256))
_DIGITS = frozenset(b"0123456789")
_WORDISH = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")

_EMAIL_DOMAIN = re.compile(rb"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_EMAIL_LOCAL_REV = re.compile(rb"[A-Za-z0-9._%+'-]{1,64}")
_URL_CRED = re.compile(rb"://([^\s/:@<>\"']{1,128}):([^\s/@<>\"']{1,128})@([A-Za-z0-9.-]+\.[A-Za-z]{2,}|\d{1,3}(?:\.\d{1,3}){3})")
_SCHEME_REV = re.compile(rb"[A-Za-z0-9+.-]{0,14}[A-Za-z]")
_PHONE_SEED = re.compile(rb"000([ .-])0000(?![\w-]|\.\d)")            # on the shape copy: exchange + line number
_PHONE_US = re.compile(rb"(?<![\w+.-])(?:\+?1[ .-]?)?(?:\(([2-9]\d\d)\)[ .-]?|([2-9]\d\d)[ .-])([2-9]\d\d)[ .-](\d{4})")
_PHONE_INTL_SEED = re.compile(rb"\+0")
_PHONE_INTL = re.compile(rb"(?<![\w+])\+(?!1[ .(-])([2-9]\d{0,2})((?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,5}){2,6})(?![\w-]|\.\d)")
# national numbers without a country code ("Tel: 086-8888975") only count after a phone label
_PHONE_LABELS = [re.compile(w) for w in (rb"tel", rb"phone", rb"mob", rb"fax", rb"cell")]
_PHONE_LABELLED = re.compile(rb"(?:tel(?:ephone)?|phone|mob(?:ile)?|fax|cell)\.?(?:[ \t]*(?:no|number|#)\.?)?[ \t]*[:.]?[ \t]*"
                             rb"(\+?\(?\d[\d ().-]{5,18}\d)(?![\d.-]*\d)")
_CARD_SEED = re.compile(rb"0000[ -]?0000[ -]?00")
_CARD = re.compile(rb"(?<![\w.+/-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_SSN_SEED = re.compile(rb"000(?P<sep>[- ])00(?P=sep)0000")
_SSN = re.compile(rb"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_IBAN_SEED = re.compile(rb"AA00")
_IBAN = re.compile(rb"(?<![A-Za-z0-9])([A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})(?![A-Za-z0-9])")
_IPV4_SEED = re.compile(rb"\.0{1,3}\.0{1,3}\.0{1,3}")
_IPV4 = re.compile(rb"(?<![\w.])((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})(?![\w-]|\.\d)")
_VERSION_BEFORE = re.compile(rb"(?i)(?:\bv|\bver|\bversion|\brelease|\bbuild|\brev|\bupdate)[\s.:=_#-]{0,3}$")
_IPV6_SEED = re.compile(rb":[0aA]{0,4}:")
_IPV6_CHARS = frozenset(b"0123456789abcdefABCDEF:.")
_SECRET_LITERAL = [  # (seed regex on the original block, kind)
    (re.compile(rb"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![A-Za-z0-9])"), "aws"),
    (re.compile(rb"gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"), "github"),
    (re.compile(rb"github_pat_[A-Za-z0-9_]{82}(?![A-Za-z0-9_])"), "github"),
    (re.compile(rb"xox[baprs]-[A-Za-z0-9-]{10,72}(?![A-Za-z0-9-])"), "slack"),
    (re.compile(rb"https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}"), "slack_webhook"),
    (re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?"),
     "private_key"),
]
_AWS_SEED = re.compile(rb"AAAA[0A]{16}")
# key=value secrets: seed on the key word in a lower-cased copy, then the value must follow a ':' or '='
_KV_WORDS = [re.compile(w) for w in (rb"key", rb"secret", rb"token", rb"password", rb"passwd", rb"pwd")]
_KV_TAIL = re.compile(rb"[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?([^\s\"'`,;<>&?]{16,200})(?![^\s\"'`,;<>&?])")
_KV_NAME_REV = re.compile(rb"[a-z0-9_.-]{0,40}")
_KV_LAST = frozenset({b"key", b"apikey", b"accesskey", b"secretkey", b"privatekey", b"secret", b"token", b"apitoken",
                      b"authtoken", b"accesstoken", b"password", b"passwd", b"pwd", b"pass"})
_ADDR_SEED = re.compile(rb"0 A")
_ADDR_SUFFIX = (rb"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
                rb"Parkway|Pkwy|Circle|Cir|Highway|Hwy|Square|Sq|Loop|Trail|Trl|Plaza|Pike|Alley")
_ADDRESS = re.compile(
    rb"(?<![\w.,-])\d{1,6}[A-Z]?\s(?:[NSEW]\.?\s|(?:North|South|East|West)\s)?"
    rb"(?:[A-Z][A-Za-z0-9'-]*\.?\s){1,4}?(?:" + _ADDR_SUFFIX + rb")\b\.?(?:\s(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    rb"(?:,?\s(?:Suite|Ste|Apt|Unit|Room|#)\.?\s?[A-Za-z0-9-]{1,6})?"
    rb"(?P<csz>,?\s(?:[A-Z][A-Za-z.'-]*\s){0,3}[A-Z][A-Za-z.'-]*,\s?[A-Z]{2}\s\d{5}(?:-\d{4})?)?")
_STATES = frozenset(b"AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
                    b"NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI".split())

Detected = tuple  # (type, start, end, confidence, subtype)


@dataclass(slots=True)
class Block:
    """One block of input plus the derived copies detectors share (made once, lazily)."""
    raw: bytes
    _shape: bytes | None = None
    _lower: bytes | None = None

    @property
    def shape(self) -> bytes:
        if self._shape is None:
            self._shape = self.raw.translate(_SHAPE)
        return self._shape

    @property
    def lower(self) -> bytes:
        if self._lower is None:
            self._lower = self.raw.lower()
        return self._lower


def _run_start(buf: bytes, i: int, chars=_DIGITS, limit: int = 32) -> int:
    lo = i
    while lo > 0 and i - lo < limit and buf[lo - 1] in chars:
        lo -= 1
    return lo


def _emails(b: Block) -> Iterable[Detected]:
    buf = b.raw
    for m in _EMAIL_DOMAIN.finditer(buf):
        at = m.start()
        lo = max(0, at - 64)
        rev = _EMAIL_LOCAL_REV.match(buf[lo:at][::-1])
        if not rev:
            continue
        start = at - rev.end()
        while start < at and buf[start] in b".-'":   # a local part cannot start with punctuation
            start += 1
        end = m.end()
        # user@host in a URL's userinfo (http://user@host) or an scp remote (git@github.com:org/repo) is a login
        if start < at and buf[max(0, start - 3):start] != b"://" and not (
                end + 1 < len(buf) and buf[end] == 58 and buf[end + 1] not in b" \t\r\n"):
            yield ("EMAIL", start, end, 0.95, None)


def _url_creds(b: Block) -> Iterable[Detected]:
    buf = b.raw
    for m in _URL_CRED.finditer(buf):
        s = m.start()
        rev = _SCHEME_REV.match(buf[max(0, s - 16):s][::-1])
        if rev:
            yield ("URL_CREDENTIALS", s - rev.end(), m.end(), 0.95, None)


def _phones(b: Block) -> Iterable[Detected]:
    buf = b.raw
    for sm in _PHONE_SEED.finditer(b.shape):
        # the area code (with optional +1 and parentheses) sits at most 10 bytes before the seed
        for m in _PHONE_US.finditer(buf, max(0, sm.start() - 10), sm.end()):
            if m.end() == sm.end():
                yield ("PHONE", m.start(), m.end(), 0.85 if m.group(1) or buf[m.start()] == 43 else 0.75, "nanp")
                break
    for sm in _PHONE_INTL_SEED.finditer(b.shape):
        m = _PHONE_INTL.match(buf, sm.start())
        if m:
            digits = sum(c in _DIGITS for c in m.group(0))
            if 8 <= digits <= 15:
                yield ("PHONE", m.start(), m.end(), 0.8, "e164")
    low = b.lower
    for rx in _PHONE_LABELS:
        for sm in rx.finditer(low):
            s = sm.start()
            if s > 0 and 97 <= low[s - 1] <= 122:
                continue   # 'hotel', 'intel'
            m = _PHONE_LABELLED.match(low, s)
            if m and 7 <= sum(c in _DIGITS for c in m.group(1)) <= 15:
                yield ("PHONE", m.start(1), m.end(1), 0.7, "labelled")


_CARD_GROUPS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1), (4, 4, 4, 4, 2), (4, 4, 4, 3)}


def _cards(b: Block) -> Iterable[Detected]:
    buf, done = b.raw, -1
    for sm in _CARD_SEED.finditer(b.shape):
        s = sm.start()
        if s < done or (s > 0 and buf[s - 1] in _DIGITS):
            continue   # inside a digit run we already looked at
        m = _CARD.match(buf, s)
        if not m:
            continue
        done = m.end()
        raw = m.group(0)
        seps = set(raw) & {32, 45}
        if len(seps) > 1:
            continue
        digits = raw.replace(b" ", b"").replace(b"-", b"").decode()
        if seps and tuple(len(g) for g in re.split(rb"[ -]", raw)) not in _CARD_GROUPS:
            continue   # grouped numbers must be grouped the way cards print: 4-4-4-4, 4-6-5, ...
        brand = card_brand(digits)
        if brand and luhn_ok(digits):
            yield ("CREDIT_CARD", m.start(), m.end(), 0.95 if seps else 0.85, brand)


def _ssns(b: Block) -> Iterable[Detected]:
    buf = b.raw
    for sm in _SSN_SEED.finditer(b.shape):
        m = _SSN.match(buf, sm.start())
        if m and ssn_ok(m.group(1).decode(), m.group(3).decode(), m.group(4).decode()):
            yield ("US_SSN", m.start(), m.end(), 0.85 if m.group(2) == b"-" else 0.6, None)


def _ibans(b: Block) -> Iterable[Detected]:
    buf, done = b.raw, -1
    for sm in _IBAN_SEED.finditer(b.shape):
        if sm.start() < done:
            continue
        m = _IBAN.match(buf, sm.start())
        if not m:
            continue
        compact = m.group(1).replace(b" ", b"").decode()
        want = IBAN_LENGTHS.get(compact[:2])
        if not want or len(compact) < want or not iban_ok(compact[:want]):
            continue
        # the greedy match may have run into a following code; end where the IBAN's own length ends
        n, end = 0, m.start(1)
        while n < want:
            if buf[end] != 32:
                n += 1
            end += 1
        done = end
        yield ("IBAN", m.start(1), end, 0.95, compact[:2])


def _ipv4(b: Block) -> Iterable[Detected]:
    buf, done = b.raw, -1
    for sm in _IPV4_SEED.finditer(b.shape):
        s = _run_start(buf, sm.start(), limit=3)
        if s < done or s == sm.start():
            continue
        m = _IPV4.match(buf, s)
        if not m:
            continue
        done = m.end()
        if _VERSION_BEFORE.search(buf[max(0, s - 12):s]) or m.group(1) == b"0.0.0.0":
            continue
        yield ("IPV4", s, m.end(), 0.9, None)


def _ipv6(b: Block) -> Iterable[Detected]:
    buf, done, n = b.raw, -1, len(b.raw)
    for m in _IPV6_SEED.finditer(b.shape):
        if m.start() < done:
            continue
        lo, hi = m.start(), m.end()
        while lo > 0 and buf[lo - 1] in _IPV6_CHARS:
            lo -= 1
        while hi < n and buf[hi] in _IPV6_CHARS:
            hi += 1
        done = hi
        if (lo > 0 and buf[lo - 1] in _WORDISH) or (hi < n and buf[hi] in _WORDISH):
            continue
        while hi > lo and buf[hi - 1] in b".:" and not buf[lo:hi].endswith(b"::"):
            hi -= 1
        cand = buf[lo:hi]
        # times (12:30:45) and MACs never parse; only pay for ipaddress when the shape could be IPv6
        if cand.count(b":") < 2 or (b"::" not in cand and cand.count(b":") < 7):
            continue
        try:
            ipaddress.IPv6Address(cand.decode())
        except ValueError:
            continue
        if cand.strip(b":.0"):
            yield ("IPV6", lo, hi, 0.9, None)


def _secrets(b: Block) -> Iterable[Detected]:
    buf = b.raw
    for sm in _AWS_SEED.finditer(b.shape):
        m = _SECRET_LITERAL[0][0].match(buf, sm.start())
        if m and (sm.start() == 0 or buf[sm.start() - 1] not in _WORDISH):
            yield ("SECRET", m.start(), m.end(), 0.99, "aws")
    for rx, kind in _SECRET_LITERAL[1:]:
        for m in rx.finditer(buf):
            if kind == "private_key" or m.start() == 0 or buf[m.start() - 1] not in _WORDISH:
                yield ("SECRET", m.start(), m.end(), 0.9 if kind == "slack" else 0.99, kind)
    low = b.lower
    for rx in _KV_WORDS:
        for sm in rx.finditer(low):
            m = _KV_TAIL.match(buf, sm.end())
            if not m:
                continue
            name = _KV_NAME_REV.match(low[max(0, sm.start() - 40):sm.end()][::-1]).group(0)[::-1]
            last = re.split(rb"[_.-]", name)[-1]
            val = m.group(1)
            classes = (any(c in _DIGITS for c in val) + any(65 <= c <= 90 for c in val) + any(97 <= c <= 122 for c in val))
            # a real key is high-entropy and mixes character classes; 'password=changeme_please_now' is neither
            if last in _KV_LAST and entropy(val) >= 3.5 and classes >= 2:
                yield ("SECRET", m.start(1), m.end(1), 0.75, "generic")


def _addresses(b: Block) -> Iterable[Detected]:
    buf, done = b.raw, -1
    for sm in _ADDR_SEED.finditer(b.shape):
        s = _run_start(buf, sm.start(), limit=6)
        if s < done:
            continue
        if s == sm.start() and buf[s] not in _DIGITS:
            continue
        m = _ADDRESS.match(buf, s)
        if not m:
            continue
        done = m.end()
        csz = m.group("csz")
        if csz:
            st = re.search(rb"([A-Z]{2})\s\d{5}", csz)
            if st and st.group(1) in _STATES:
                yield ("US_ADDRESS", m.start(), m.end(), 0.9, "with_zip")
                continue
            yield ("US_ADDRESS", m.start(), m.start("csz"), 0.6, "street")
        else:
            yield ("US_ADDRESS", m.start(), m.end(), 0.6, "street")


DETECTORS: dict[str, Callable[[bytes], Iterable[Detected]]] = {
    "EMAIL": _emails, "URL_CREDENTIALS": _url_creds, "PHONE": _phones, "CREDIT_CARD": _cards, "US_SSN": _ssns,
    "IBAN": _ibans, "IPV4": _ipv4, "IPV6": _ipv6, "SECRET": _secrets, "US_ADDRESS": _addresses,
}


def detect(buf: bytes, types: Iterable[str] | None = None) -> list[Detected]:
    """All non-overlapping findings in one buffer, sorted by start; overlaps resolved by PRIORITY then length."""
    blk = Block(buf)
    found = [d for t in (types or DETECTORS) for d in DETECTORS[t](blk)]
    found.sort(key=lambda d: (d[1], -(d[2] - d[1]), -PRIORITY[d[0]]))
    out: list[Detected] = []
    for d in found:
        if out and d[1] < out[-1][2]:
            prev = out[-1]
            if (PRIORITY[d[0]], d[2] - d[1]) > (PRIORITY[prev[0]], prev[2] - prev[1]):
                out[-1] = d
            continue
        out.append(d)
    return out


# ---- streaming over files -----------------------------------------------------------------------------------
@dataclass
class FileScan:
    path: str
    bytes: int = 0
    lines: int = 0
    counts: Counter = field(default_factory=Counter)
    sha256: str | None = None


def _blocks(f, block: int) -> Iterable[bytes]:
    """Blocks ending at a newline (or at whitespace / hard limit for absurdly long lines)."""
    carry = b""
    while True:
        data = f.read(block)
        if not data:
            if carry:
                yield carry
            return
        buf = carry + data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            if len(buf) < 4 * block:
                carry = buf
                continue
            cut = max(buf.rfind(b" "), buf.rfind(b"\t")) + 1 or len(buf)
        carry = buf[cut:]
        yield buf[:cut]


def scan_file(path: Path | str, *, types: Iterable[str] | None = None, on_finding: Callable[[Finding], None] | None = None,
              redact_to=None, progress: Callable[[int], None] | None = None, hash_it: bool = False,
              block: int = BLOCK, max_findings: int | None = None) -> FileScan:
    """Scan one file in blocks. `redact_to` (a binary file object) receives a copy with `[TYPE]` placeholders.
    With `hash_it`, the SHA-256 of exactly the bytes scanned is returned too (so a scan proves what it read)."""
    res = FileScan(str(path))
    h = hashlib.sha256() if hash_it else None
    types = tuple(types or DETECTORS)
    emitted = 0
    with open(path, "rb") as f:
        for buf in _blocks(f, block):
            if h is not None:
                h.update(buf)
            found = detect(buf, types)
            pos, line = 0, res.lines + 1
            out_parts, last = [], 0
            for kind, s, e, conf, sub in found:
                line += buf.count(b"\n", pos, s)
                pos = s
                res.counts[kind] += 1
                if on_finding is not None and (max_findings is None or emitted < max_findings):
                    emitted += 1
                    on_finding(Finding(kind, res.bytes + s, res.bytes + e, line, conf, redact_sample(buf[s:e], kind),
                                       sub, str(path)))
                if redact_to is not None:
                    out_parts += [buf[last:s], b"[" + kind.encode() + b"]"]
                    last = e
            if redact_to is not None:
                out_parts.append(buf[last:])
                redact_to.write(b"".join(out_parts))
            res.lines += buf.count(b"\n")
            res.bytes += len(buf)
            if progress is not None:
                progress(len(buf))
    if res.bytes and not buf.endswith(b"\n"):
        res.lines += 1   # a last line without newline is still a line
    if h is not None:
        res.sha256 = h.hexdigest()
    return res


@dataclass
class PiiReport:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    counts: dict = field(default_factory=dict)
    files_with: dict = field(default_factory=dict)   # type -> number of files with at least one finding
    seconds: float = 0.0
    findings: list = field(default_factory=list)      # first `keep` findings (redacted)
    findings_truncated: bool = False
    per_file: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def mb(self) -> float:
        return self.bytes / 1e6

    def per_mb(self, types: Iterable[str] | None = None) -> float:
        n = self.total if types is None else sum(self.counts.get(t, 0) for t in types)
        return n / self.mb if self.bytes else 0.0

    def summary(self, policy=None) -> dict:
        """What the manifest stores and `--json` prints (without the per-finding list)."""
        out = {
            "files": self.files, "bytes": self.bytes, "lines": self.lines, "total": self.total,
            "counts": {t: self.counts.get(t, 0) for t in TYPES}, "files_with": {t: self.files_with.get(t, 0) for t in TYPES},
            "density_per_mb": round(self.per_mb(), 4), "density_per_line": round(self.total / self.lines, 6) if self.lines else 0.0,
            "seconds": round(self.seconds, 3),
            "throughput_mb_s": round(self.mb / self.seconds, 2) if self.seconds > 0 else None,
            "risk": None, "risk_reason": "no policy given",
        }
        if policy is not None:
            sens = self.per_mb(policy.pii.sensitive_types)
            out["sensitive_per_mb"] = round(sens, 4)
            out["risk"] = policy.risk_level(self.per_mb(), sens)
            out["risk_reason"] = (f"{out['density_per_mb']} findings/MB, {round(sens, 4)} sensitive/MB "
                                  f"under policy {policy.version}")
        return out


def iter_files(root: Path | str, include: list[str] | None = None, exclude: list[str] | None = None) -> list[Path]:
    """Files under root (or root itself), sorted; include/exclude are globs on the name or the relative path."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ZeropointError(f"{root} does not exist; pass a file or a directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            if fn.startswith(".") or not p.is_file():
                continue
            if include and not any(fnmatch(fn, g) or fnmatch(rel, g) for g in include):
                continue
            if exclude and any(fnmatch(fn, g) or fnmatch(rel, g) for g in exclude):
                continue
            out.append(p)
    return sorted(out)


def scan_paths(paths: list[Path], *, keep: int = 200, types: Iterable[str] | None = None,
               progress: Callable[[int], None] | None = None, redact_target: Callable[[Path], Path] | None = None,
               hash_it: bool = False) -> PiiReport:
    """Scan files in order. `redact_target(path)` names where each file's redacted copy goes (written atomically;
    never onto a scanned file)."""
    rep = PiiReport()
    counts, files_with = Counter(), Counter()

    def keep_finding(f: Finding) -> None:
        rep.findings.append(f.as_dict())

    sources = {Path(p).resolve() for p in paths} if redact_target is not None else set()
    t0 = time.perf_counter()
    for p in paths:
        sink = None
        if redact_target is not None:
            target = Path(redact_target(p))
            if target.resolve() in sources:
                raise ZeropointError(f"--redact would overwrite the scanned file {target}; choose another output path")
            target.parent.mkdir(parents=True, exist_ok=True)
            sink = open(target.with_name(f".{target.name}.tmp"), "wb")
        try:
            fs = scan_file(p, types=types, on_finding=keep_finding, redact_to=sink, progress=progress, hash_it=hash_it,
                           max_findings=keep - len(rep.findings))
        except BaseException:
            if sink is not None:
                sink.close()
                os.unlink(sink.name)
            raise
        if sink is not None:
            sink.close()
            os.replace(sink.name, target)
        rep.files += 1
        rep.bytes += fs.bytes
        rep.lines += fs.lines
        counts.update(fs.counts)
        files_with.update(set(fs.counts))
        rep.per_file.append({"path": str(p), "bytes": fs.bytes, "counts": dict(fs.counts), "sha256": fs.sha256})
    rep.seconds = time.perf_counter() - t0
    rep.counts, rep.files_with = dict(counts), dict(files_with)
    rep.findings_truncated = rep.total > len(rep.findings)
    return rep
