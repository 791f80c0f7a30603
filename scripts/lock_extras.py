"""Pin, in requirements.lock, every `name[extra]` that a locked package itself requires.

pip-compile --strip-extras writes `typepy==1.3.5` once, but dataproperty requires `typepy[datetime]<3,>=1.3.2`, and
pip's --require-hashes mode (pip 23.2, what `python3.11 -m venv` ships on a fresh machine) treats the extras form as
a separate, unpinned requirement: it picks typepy 2.0.0 and refuses the install. So after each `make lock` this
adds a copy of the pinned block under the extras name. It reads the requirements from the installed packages of the
Python that runs it (the project venv), so run it from a venv installed from the lock.

    python scripts/lock_extras.py requirements.lock          # rewrite in place
    python scripts/lock_extras.py --check requirements.lock  # exit 1 and name what is missing
"""
import argparse
import importlib.metadata
import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", re.M)


def blocks(text: str) -> dict[str, str]:
    """name (canonical, with sorted extras) -> its block: the `==` line and its hash lines, no comments."""
    out = {}
    for m in PIN.finditer(text):
        end = text.find("\n", m.start())
        lines = [text[m.start():end]]
        while lines[-1].endswith("\\"):
            nxt = text.find("\n", end + 1)
            lines.append(text[end + 1:nxt])
            end = nxt
        out[canonicalize_name(m.group(1)) + (m.group(2) or "")] = "\n".join(lines)
    return out


def missing_extras(text: str) -> list[str]:
    """`name[extras]` forms that a locked, installed package requires and the lock does not pin."""
    pinned = blocks(text)
    need = set()
    for dist in importlib.metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in pinned:
            continue
        for spec in dist.requires or []:
            req = Requirement(spec)
            if not req.extras or canonicalize_name(req.name) not in pinned:
                continue
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            key = f"{canonicalize_name(req.name)}[{','.join(sorted(req.extras))}]"
            if key not in pinned:
                need.add(key)
    return sorted(need)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock")
    ap.add_argument("--check", action="store_true", help="only report; exit 1 when an extras pin is missing")
    args = ap.parse_args()
    text = open(args.lock).read()
    need = missing_extras(text)
    if args.check:
        for key in need:
            print(f"{args.lock}: no pin for {key} (a locked package requires it); run `make lock`", file=sys.stderr)
        return 1 if need else 0
    pinned = blocks(text)
    for key in need:
        name = key.split("[")[0]
        base = pinned[name]
        extras_block = base.replace(base.split("==")[0], key, 1)
        comment = f"    # via scripts/lock_extras.py: the extras form of {name}, same pin and hashes\n"
        text = text.replace(base, extras_block + "\n" + comment + base, 1)
    with open(args.lock, "w") as f:
        f.write(text)
    print(f"{args.lock}: added {', '.join(need) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
