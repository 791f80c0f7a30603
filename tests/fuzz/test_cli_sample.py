"""The CLI on a seeded sample of 20 fuzz cases: exit code 0 or 2, and on 2 one `error:` line naming the file, no
traceback. In-process through the real command table (CliRunner, under the guard). The entry point itself
(`python -m zeropoint.cli.main`, exit 2 and an error line without a traceback) is run by
tests/release/test_verify_truncated.py."""
from __future__ import annotations

import random
from pathlib import Path

from tests.fuzz import corpus as C
from tests.fuzz.guard import failures, run_guarded
from tests.fuzz.test_parser_fuzz import _hf_dir_case

SAMPLE_SEED = 25


def sample(root: Path) -> list[tuple[list[str], Path]]:
    """20 cases: (zpctl arguments, the input file or directory they read)."""
    rng = random.Random(SAMPLE_SEED)
    out = []
    for i in range(20):
        kind, seed = ("gguf", "safetensors", "hf_dir", "yaml")[i % 4], rng.randrange(10**6)
        d = root / f"c{i}"
        d.mkdir()
        if kind == "gguf":
            p = d / "model.gguf"
            p.write_bytes(C.mutate_gguf(seed))
            out.append((["generate", str(p), "-p", "hi", "-n", "1", "--json"], p))
        elif kind == "safetensors":
            p = C.write_hf_dir(d / "hf", st_raw=C.mutate_safetensors(seed))
            out.append((["generate", str(p), "-p", "hi", "-n", "1", "--json"], p))
        elif kind == "hf_dir":
            p = _hf_dir_case(d, seed)
            out.append((["generate", str(p), "-p", "hi", "-n", "1", "--json"], p))
        else:
            p = d / "config.yaml"
            p.write_bytes(C.mutate_yaml(seed))
            out.append((["config", "show", str(p), "--json"], p))
    return out


def invoke(args: list[str]):
    from typer.testing import CliRunner
    from zeropoint.cli.main import app
    r = CliRunner().invoke(app, args)
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    return r.exit_code, r.output, repr(r.exception) if crashed else None


def check(code: int, output: str, where: Path) -> str | None:
    """Why this result is not a clean CLI answer, or None."""
    if "Traceback" in output:
        return "traceback in the output"
    if code == 2 and not (output.startswith("error:") and str(where) in output):
        return "exit 2 without an error line naming the input"
    if code not in (0, 2):
        return f"exit code {code}"
    return None


def test_cli_exit_codes_and_messages_on_20_fuzz_cases(tmp_path, zp_home):
    cases = sample(tmp_path)
    import numpy as np
    from tinygrad import Tensor
    import zeropoint.cli.main  # noqa: F401  (imported once; the guard's child inherits them)
    import zeropoint.recipes  # noqa: F401  (`config show` reads the recipe table: every recipe module)
    Tensor(np.ones(1, np.float32))   # tinygrad opens its device here, once, not inside the first case
    outcomes = run_guarded(lambda c: invoke(c[0]), cases)
    assert not failures(outcomes), failures(outcomes)
    problems = []
    for o in outcomes:
        code, output, crash = o.detail
        why = "crashed: " + crash if crash else check(code, output, cases[o.index][1])
        if why:
            problems.append(f"zpctl {' '.join(cases[o.index][0])}: {why}\n{output[-1500:]}")
    assert not problems, "\n".join(problems)
    codes = [o.detail[0] for o in outcomes]
    assert codes.count(2) >= 10, codes                    # the sample exercises the error paths
