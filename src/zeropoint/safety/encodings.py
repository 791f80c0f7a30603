"""The obfuscations a probe payload can be sent in: probes encode with them, detectors decode with them."""
from __future__ import annotations

import base64
import codecs

from ..errors import ZeropointError

ENCODINGS = ("base64", "rot13", "leetspeak", "unicode_tags")

LEET = str.maketrans({"a": "4", "A": "4", "e": "3", "E": "3", "i": "1", "I": "1", "o": "0", "O": "0",
                      "s": "5", "S": "5", "t": "7", "T": "7"})


def encode(text: str, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(text.encode()).decode()
    if encoding == "rot13":
        return codecs.encode(text, "rot13")
    if encoding == "leetspeak":
        return text.translate(LEET)
    if encoding == "unicode_tags":
        # ASCII shifted into the invisible tag block: renders as nothing, still reaches the tokenizer
        return "".join(chr(0xE0000 + ord(c)) for c in text if 0x20 <= ord(c) < 0x7F)
    raise ZeropointError(f"unknown probe encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
