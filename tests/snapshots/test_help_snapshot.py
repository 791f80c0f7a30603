"""`zpctl <command> --help` for every command, against the committed snapshot (tests/snapshots/zpctl_help.txt)."""
import os
import subprocess
import sys

from tests.helpers import REPO
from tests.snapshots import assert_snapshot


def test_zpctl_help_of_every_command_matches_the_snapshot():
    env = dict(os.environ, TERMINAL_WIDTH="100", _TYPER_FORCE_DISABLE_TERMINAL="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "tests.snapshots.help_dump"], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(exit 0)" in r.stdout and "(exit 1)" not in r.stdout and "(exit 2)" not in r.stdout
    assert_snapshot("zpctl_help.txt", r.stdout)
