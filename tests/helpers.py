"""Test helpers: run zpctl in a subprocess exactly as a user would."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def zpctl(*args, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "zeropoint.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=cwd or REPO)


def zpctl_json(*args, **kw):
    r = zpctl(*args, **kw)
    return r, json.loads(r.stdout) if r.stdout.strip() else None
