"""Shared CLI plumbing: JSON vs rich output, and turning ZeropointError into a message and an exit code."""
from __future__ import annotations

import functools
import json
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ZeropointError

console = Console()
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of tables.")
AllowSimOpt = typer.Option(False, "--allow-simulated",
                           help="Run even with a mock flag or a simulated device; the run is stamped SIMULATED.")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set train.lr=3e-4 (repeatable).")


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def handle_errors(fn):
    """Show a ZeropointError as one clear message (no traceback) and exit with its code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZeropointError as e:
            # escape: messages quote user text and rule names like "[deny]" that rich would take as markup
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
    return wrapper
