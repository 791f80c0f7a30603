"""The hashed lock installs on a fresh machine: every `name[extra]` a locked package requires is pinned too.

pip 23.2's --require-hashes mode (a fresh `python3.11 -m venv`) refused the lock when dataproperty's
`typepy[datetime]` had no pin of its own; `make lock` now adds those pins (scripts/lock_extras.py)."""
import subprocess
import sys

from tests.helpers import REPO


def test_lock_pins_the_extras_forms_its_packages_require():
    r = subprocess.run([sys.executable, "scripts/lock_extras.py", "--check", "requirements.lock"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
