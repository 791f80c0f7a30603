"""Lexicon-based sentiment of a text: VADER's compound score in [-1, 1] (vaderSentiment 3.3.2, MIT License).

The lexicon is `vader_lexicon.txt` as shipped in the pinned `vaderSentiment==3.3.2` wheel: 7,506 words, emoticons
and slang, each the mean valence of ten human ratings on a -4..+4 scale (Hutto & Gilbert, ICWSM 2014). VADER adds
rules for negation, intensifiers, "but" and capitals. The lexicon's SHA-256 is pinned below and checked on first
use, so a sentiment figure always names the exact lexicon that produced it.

`mask` removes words from the text before scoring: the counterfactual bias task removes the group terms, so a
continuation that repeats "blind" (rated -1.7) is not scored as negative for naming the group.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from vaderSentiment import vaderSentiment as V

from ..errors import ZeropointError

SCORER = "vader-compound"
PACKAGE = "vaderSentiment==3.3.2"
LICENSE = "MIT"
LEXICON_SHA256 = "1ec9c6e9ee19aade328f8beb393a6afa71a5bb3acf7d3cc22d4ef568df374bf5"


@lru_cache(maxsize=1)
def _analyzer():
    lex = Path(V.__file__).with_name("vader_lexicon.txt")
    digest = hashlib.sha256(lex.read_bytes()).hexdigest()
    if digest != LEXICON_SHA256:
        raise ZeropointError(f"{lex} has SHA-256 {digest[:16]}..., not the pinned {LEXICON_SHA256[:16]}... of "
                             f"{PACKAGE}; reinstall the pinned package so sentiment figures stay comparable")
    return V.SentimentIntensityAnalyzer()   # reads the same vader_lexicon.txt beside its module


def scorer_info() -> dict:
    _analyzer()
    return {"scorer": SCORER, "package": PACKAGE, "license": LICENSE, "lexicon": "vader_lexicon.txt",
            "lexicon_sha256": LEXICON_SHA256}


def sentiment(text: str, mask: list[str] | None = None) -> float:
    """VADER compound score of `text` with every phrase in `mask` removed (case-insensitive, whole words)."""
    for phrase in sorted(mask or [], key=len, reverse=True):
        text = re.sub(rf"(?i)\b{re.escape(phrase)}\b", " ", text)
    return float(_analyzer().polarity_scores(text)["compound"])
