"""Issue 25 #13: a truncated bundle tar is reported as truncated by `zpctl release verify` and by the standalone
verify.py (exit 2, a message, no traceback)."""
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import zpctl
from zeropoint.release.verify import BundleError, verify_bundle

VERIFY_PY = Path(__file__).resolve().parents[2] / "src" / "zeropoint" / "release" / "verify.py"


@pytest.fixture
def tar_path(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, size in (("b/bundle.json", 300), ("b/release.json", 5000), ("b/audit/segment.jsonl", 20000)):
            data = (name.encode() * (size // len(name) + 1))[:size]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    p = tmp_path / "b.tar"
    p.write_bytes(buf.getvalue())
    return p


CUTS = [100, 700, 3000, 6656, 12000, 25000, 27648]   # 6656 and 27648 are member boundaries


def test_truncated_tar_is_named_as_truncated(tar_path, tmp_path):
    from typer.testing import CliRunner
    from zeropoint.cli.main import app
    data = tar_path.read_bytes()
    for cut in CUTS:
        p = tmp_path / f"cut{cut}.tar"
        p.write_bytes(data[:cut])
        with pytest.raises(BundleError, match="truncated"):
            verify_bundle(p)
        r = CliRunner().invoke(app, ["release", "verify", str(p)])
        crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
        assert r.exit_code == 2 and "truncated" in r.output and not crashed, (cut, r.output, r.exception)
    # as a user runs them: the CLI entry point, and verify.py on its own (stdlib + cryptography)
    p = tmp_path / "cut12000.tar"
    r = zpctl("release", "verify", p)
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(VERIFY_PY), str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "truncated" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
