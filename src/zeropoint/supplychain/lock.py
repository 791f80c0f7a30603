"""The hashed lock (`requirements.lock`, written by `make lock` / pip-compile) as data, and the part of it a bundle needs.

pip-compile annotates every pin with `# via PARENT...`: the packages that required it. Walking those edges from
the project's own dependencies (plus the extras asked for) gives the subset of the lock an appliance installs;
pip then proves the subset is closed, because `--require-hashes` refuses any dependency that is not pinned.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZeropointError

PROJECT = "zeropoint"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s\\;]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class LockError(ZeropointError):
    """The lock or the requested extras cannot be used; the message names the fix."""


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. become one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class LockedPackage:
    name: str                   # normalized
    version: str
    hashes: tuple[str, ...]     # sha256 of every artifact the lock accepts for this version
    via: tuple[str, ...]        # normalized names of the packages that require it; PROJECT for pyproject.toml
    text: str                   # the pin and its --hash lines, exactly as in the lock


def parse_lock(text: str) -> dict[str, LockedPackage]:
    """requirements.lock -> {normalized name: LockedPackage}."""
    out: dict[str, LockedPackage] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _PIN.match(lines[i])
        if not m:
            i += 1
            continue
        block = [lines[i]]
        while block[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            block.append(lines[i])
        via: list[str] = []
        i += 1
        # "# via X" on one line, or "# via" then "#   X" lines
        while i < len(lines) and lines[i].lstrip().startswith("#") and not _PIN.match(lines[i]):
            c = lines[i].lstrip()[1:].strip()
            if c.startswith("via"):
                c = c[3:].strip()
            if c and not c.startswith("The following packages"):
                via.append(PROJECT if "pyproject.toml" in c or c.startswith("-r ") else normalize(c.split()[0]))
            i += 1
        name = normalize(m.group(1))
        out[name] = LockedPackage(name, m.group(3), tuple(_HASH.findall("\n".join(block))), tuple(via),
                                  "\n".join(block))
    return out


def project_requirements(pyproject: Path) -> tuple[list[str], dict[str, list[str]]]:
    """-> (normalized names of the base dependencies, {extra: normalized names})."""
    doc = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    names = lambda reqs: [normalize(_REQ_NAME.match(r).group(1)) for r in reqs]   # noqa: E731
    return names(doc.get("dependencies", [])), {k: names(v) for k, v in doc.get("optional-dependencies", {}).items()}


def resolve_with(with_: list[str], extras: dict[str, list[str]], locked: dict[str, LockedPackage]) -> list[str]:
    """`--with test` (a whole extra) or `--with torch,ray` (packages of an extra) -> root package names."""
    roots: list[str] = []
    in_extras = {n for ns in extras.values() for n in ns}
    for item in with_:
        key = normalize(item.strip())
        if not key:
            continue
        if key in extras:
            roots += extras[key]
        elif key in in_extras:
            roots.append(key)
        else:
            raise LockError(f"--with {item!r} is neither an extra ({', '.join(sorted(extras))}) nor a package of one "
                            f"({', '.join(sorted(in_extras))}); e.g. --with torch,ray or --with test")
    missing = [r for r in roots if r not in locked]
    if missing:
        raise LockError(f"{', '.join(missing)} (asked for with --with) is not in requirements.lock, which is compiled "
                        "with `--extra test` only; add the extra to the Makefile's `lock` target and run `make lock`")
    return roots


def select(locked: dict[str, LockedPackage], roots: list[str]) -> list[LockedPackage]:
    """Every locked package the roots need: a package is needed when one of the packages it is `via` is needed."""
    unknown = [r for r in roots if r not in locked]
    if unknown:
        raise LockError(f"{', '.join(unknown)} is a dependency in pyproject.toml but not pinned in requirements.lock; "
                        "run `make lock`")
    needed = set(roots)
    changed = True
    while changed:
        changed = False
        for name, pkg in locked.items():
            if name not in needed and any(v in needed for v in pkg.via if v != PROJECT):
                needed.add(name)
                changed = True
    return [locked[n] for n in sorted(needed)]


def subset_text(packages: list[LockedPackage], header: str) -> str:
    """A requirements file of the chosen pins, with their hashes, for `pip install --require-hashes -r`."""
    return header + "".join(p.text + "\n" for p in packages)
