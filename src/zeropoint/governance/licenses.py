"""SPDX license expressions: normalise, categorise (ScanCode license DB bundled with license-expression), decide.

The decision walks the expression tree: `OR` passes if any branch passes, `AND` needs every branch, and each
leaf is decided by the policy's explicit lists first, then by its category. Every decision carries the rules
that made it, so a refusal can say exactly why.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from license_expression import AND, OR, LicenseWithExceptionSymbol, get_license_index, get_spdx_licensing

from ..errors import ZeropointError

# ScanCode category -> policy category
SCANCODE_CATEGORY = {
    "Permissive": "permissive", "Public Domain": "permissive",
    "Copyleft": "copyleft", "Copyleft Limited": "copyleft",
    "Source-available": "noncommercial", "Free Restricted": "noncommercial",
    "Commercial": "proprietary", "Proprietary Free": "proprietary",
    "CLA": "unknown", "Patent License": "unknown", "Unstated License": "unknown",
}
CATEGORIES = ("permissive", "copyleft", "noncommercial", "proprietary", "unknown")
DECISIONS = ("allow", "review", "deny")   # ordered from best to worst
_RANK = {d: i for i, d in enumerate(DECISIONS)}


class LicenseError(ZeropointError):
    """A license expression that cannot be parsed."""


@functools.lru_cache(maxsize=1)
def _licensing():
    return get_spdx_licensing()


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    """SPDX id (lower-case, including aliases) -> ScanCode index entry."""
    out = {}
    for e in get_license_index():
        for key in [e.get("spdx_license_key")] + list(e.get("other_spdx_license_keys") or []):
            if key:
                out.setdefault(key.lower(), e)
    return out


def parse(expression: str):
    if not expression or not expression.strip():
        raise LicenseError("empty license; pass an SPDX expression such as --license MIT or --license 'CC-BY-4.0'")
    try:
        return _licensing().parse(expression.strip(), validate=False)
    except Exception as e:  # license_expression raises several unrelated exception types
        raise LicenseError(f"license {expression!r} is not a valid SPDX expression ({e}); "
                           "use ids joined by AND / OR, e.g. 'Apache-2.0 OR GPL-2.0-only'") from None


def normalize(expression: str) -> str:
    return parse(expression).render()


@dataclass
class LicenseInfo:
    key: str
    category: str               # policy category
    scancode_category: str | None
    known: bool
    is_exception: bool = False

    @property
    def attribution(self) -> bool:
        # public-domain dedications (CC0, PDDL, Unlicense) ask for nothing; every other license asks for credit
        return self.scancode_category != "Public Domain"

    @property
    def share_alike(self) -> bool:
        return self.category == "copyleft"

    @property
    def commercial_use(self) -> bool:
        return self.category in ("permissive", "copyleft") and "-nc" not in self.key.lower()


def license_info(key: str) -> LicenseInfo:
    e = _index().get(key.lower())
    if e is None:
        # LicenseRef-<org>-proprietary and friends: the name itself is the only evidence we have
        low = key.lower()
        cat = "proprietary" if low.startswith("licenseref-") and ("proprietary" in low or "commercial" in low) else "unknown"
        return LicenseInfo(key, cat, None, False)
    cat = SCANCODE_CATEGORY.get(e.get("category"), "unknown")
    if "-nc" in key.lower() and cat != "proprietary":   # CC-BY-NC-* are "Source-available" in ScanCode; be explicit
        cat = "noncommercial"
    return LicenseInfo(key, cat, e.get("category"), True, bool(e.get("is_exception")))


@dataclass
class Decision:
    decision: str                     # allow | review | deny
    rules: list[dict] = field(default_factory=list)   # [{rule, license, decision, why}]

    def as_dict(self) -> dict:
        return {"decision": self.decision, "rules": self.rules}


def _leaf(key: str, lic_policy) -> Decision:
    low = key.lower()
    for lst in ("deny", "allow", "review"):   # deny wins if an id sits on two lists
        if low in {x.lower() for x in getattr(lic_policy, lst)}:
            return Decision(lst, [{"rule": f"licenses.{lst}", "license": key, "decision": lst,
                                   "why": f"{key} is on the policy's explicit {lst} list"}])
    info = license_info(key)
    dec = lic_policy.categories.get(info.category, "review")
    why = (f"{key} is {info.scancode_category} in the ScanCode license DB -> category {info.category}" if info.known
           else f"{key} is not in the SPDX/ScanCode license DB -> category unknown")
    return Decision(dec, [{"rule": f"licenses.categories.{info.category}", "license": key, "decision": dec, "why": why}])


def _walk(node, lic_policy) -> Decision:
    if isinstance(node, LicenseWithExceptionSymbol):
        # "GPL-2.0-only WITH Classpath-exception-2.0": the exception only relaxes the base license
        return _leaf(node.license_symbol.key, lic_policy)
    if isinstance(node, (AND, OR)):
        kids = [_walk(a, lic_policy) for a in node.args]
        if isinstance(node, OR):
            best = min(kids, key=lambda d: _RANK[d.decision])
            return Decision(best.decision, [r for k in kids for r in k.rules] + [
                {"rule": "licenses.or", "license": node.render(), "decision": best.decision,
                 "why": "OR passes if any branch passes; best branch decides"}])
        worst = max(kids, key=lambda d: _RANK[d.decision])
        return Decision(worst.decision, [r for k in kids for r in k.rules] + [
            {"rule": "licenses.and", "license": node.render(), "decision": worst.decision,
             "why": "AND needs every branch; worst branch decides"}])
    return _leaf(node.key, lic_policy)


def decide(expression: str, lic_policy) -> Decision:
    """Decide an SPDX expression under `lic_policy` (the `licenses` section of a Policy)."""
    return _walk(parse(expression), lic_policy)


def _flags(node) -> dict:
    if isinstance(node, LicenseWithExceptionSymbol):
        node = node.license_symbol
    if isinstance(node, (AND, OR)):
        kids = [_flags(a) for a in node.args]
        if isinstance(node, AND):   # obligations add up; commercial use needs every part to allow it
            return {"attribution": any(k["attribution"] for k in kids), "share_alike": any(k["share_alike"] for k in kids),
                    "commercial_use": all(k["commercial_use"] for k in kids)}
        # OR: the licensee picks a branch; report the least demanding one
        best = min(kids, key=lambda k: (not k["commercial_use"], k["share_alike"], k["attribution"]))
        return best
    info = license_info(node.key)
    return {"attribution": info.attribution, "share_alike": info.share_alike, "commercial_use": info.commercial_use}


def describe(expression: str) -> dict:
    """Manifest `license` block: normalised expression, per-id categories, derived flags."""
    tree = parse(expression)
    keys = [s.key for s in _licensing().license_symbols(tree)]
    infos = [license_info(k) for k in dict.fromkeys(keys)]
    return {"expression": tree.render(),
            "ids": [{"id": i.key, "category": i.category, "scancode_category": i.scancode_category, "known": i.known}
                    for i in infos],
            **_flags(tree)}


# ---- license text -------------------------------------------------------------------------------------------
TEXT_NAMES = ("license", "licence", "copying", "notice", "readme", "terms")


def is_license_text_name(name: str) -> bool:
    low = name.lower()
    return any(low.startswith(n) for n in TEXT_NAMES)


def find_phrases(text: str, phrases: list[str]) -> list[str]:
    """Deny phrases present in a license text: case-insensitive, whole words, any run of spaces or hyphens between
    words (so GPL-3.0's "noncommercially" does not count as "noncommercial")."""
    out = []
    for p in phrases:
        words = [re.escape(w) for w in re.split(r"[\s\-_]+", p.strip()) if w]
        if words and re.search(r"\b" + r"[\s\-_]+".join(words) + r"\b", text, re.IGNORECASE):
            out.append(p)
    return out


# ---- what a license text actually is --------------------------------------------------------------------------
# Title lines / fixed phrases of common license texts (whitespace-normalised, lower-case). A dataset that declares
# one license but ships another's text is a declared-vs-real mismatch that a human must look at.
_TEXT_SIGNATURES = [
    ("Apache-2.0", r"apache license,? version 2\.0"),
    ("GPL-1.0-only", r"gnu general public license version 1, february 1989"),
    ("GPL-2.0-only", r"gnu general public license version 2, june 1991"),
    ("GPL-3.0-only", r"gnu general public license version 3, 29 june 2007"),
    ("LGPL-2.1-only", r"gnu lesser general public license version 2\.1"),
    ("LGPL-3.0-only", r"gnu lesser general public license version 3, 29 june 2007"),
    ("LGPL-2.0-only", r"gnu library general public license version 2, june 1991"),
    ("GFDL-1.3-only", r"gnu free documentation license version 1\.3"),
    ("GFDL-1.2-only", r"gnu free documentation license version 1\.2"),
    ("MPL-2.0", r"mozilla public license,? version 2\.0"),
    ("MPL-1.1", r"mozilla public license,? version 1\.1"),
    ("CC0-1.0", r"cc0 1\.0 universal"),
    ("CC-BY-NC-SA-4.0", r"attribution-noncommercial-sharealike 4\.0 international"),
    ("CC-BY-NC-4.0", r"attribution-noncommercial 4\.0 international"),
    ("CC-BY-SA-4.0", r"attribution-sharealike 4\.0 international"),
    ("CC-BY-4.0", r"creative commons attribution 4\.0 international"),
    ("MIT", r"permission is hereby granted, free of charge, to any person obtaining a copy"),
    ("BSD-3-Clause", r"redistribution and use in source and binary forms.{0,800}neither the name"),
    ("BSD-2-Clause", r"redistribution and use in source and binary forms"),
    ("Artistic-1.0", r"the \"artistic license\""),
]


def identify_text(text: str) -> list[str]:
    """SPDX ids whose license text this is (or contains), from title lines and fixed phrases."""
    norm = re.sub(r"\s+", " ", text[:200_000].lower())
    found = []
    for spdx, sig in _TEXT_SIGNATURES:
        if re.search(sig, norm) and not (spdx == "BSD-2-Clause" and "BSD-3-Clause" in found) \
                and not (spdx == "CC-BY-NC-4.0" and "CC-BY-NC-SA-4.0" in found):
            found.append(spdx)
    return found


def _family(key: str) -> str:
    k = key.lower()
    for suffix in ("-only", "-or-later", "+"):
        if k.endswith(suffix):
            return k[: -len(suffix)]
    return k


def declared_covers(expression: str, text_id: str) -> bool:
    """Does the declared expression name the license a text turned out to be (GPL-2.0-only ~ GPL-2.0-or-later)?"""
    keys = {_family(s.key) for s in _licensing().license_symbols(parse(expression))}
    return _family(text_id) in keys
