"""One optimizer step of a recipe, timed from process start (`zpctl bench --startup` runs it twice, cold then warm).

    python -m zeropoint.cli.startup_probe CONFIG [--set k=v ...]

prints one line, `ZP_STARTUP {json}` (perf/startup.py `first_step`)."""
from __future__ import annotations

import argparse
import json
import sys


def command(config: str, overrides: list[str]) -> list[str]:
    """The probe's command line for `perf.startup.cold_and_warm`."""
    return [sys.executable, "-m", __name__, str(config)] + [a for o in overrides for a in ("--set", o)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one optimizer step of a recipe, timed from process start")
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)
    from ..perf.startup import MARK, first_step
    from ..recipes import load_config
    cfg, _ = load_config(a.config, a.overrides)
    print(MARK + json.dumps(first_step(cfg), default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
