"""The committed ruff config (pyproject.toml) holds over the whole tree: CI runs it with the suite."""
import subprocess
import sys

from tests.helpers import REPO


def test_ruff_check_passes():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
