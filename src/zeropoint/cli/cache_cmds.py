"""`zpctl cache`: what the compile cache ($ZP_CACHE, engine/jitcache.py) holds, verified, and clearing it."""
from __future__ import annotations

import typer
from rich.table import Table

from .common import JsonOpt, console, handle_errors, print_json

cache_app = typer.Typer(help="The compile cache: stored kernels, captured steps, tuned kernels ($ZP_CACHE).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@handle_errors
def info(verify: bool = typer.Option(False, "--verify", help="check every entry's SHA-256 against its manifest"),
         json_out: bool = JsonOpt):
    """Entries and sizes per store; with --verify, the entries that would be refused (and rebuilt) on use."""
    from ..engine.jitcache import inventory
    inv = inventory(verify=verify)
    if json_out:
        return print_json(inv)
    t = Table(title=f"compile cache {inv['root'] or '(off)'}")
    for c in ("store", "entries", "MiB"):
        t.add_column(c, justify="left" if c == "store" else "right")
    for kind, v in inv["stores"].items():
        t.add_row(kind, str(v["entries"]), f"{v['bytes'] / 2**20:.1f}")
    console.print(t)
    console.print(f"tune records: {', '.join(inv.get('tune_records') or []) or 'none'}")
    if verify:
        console.print(f"{len(inv['bad'])} entries fail verification" + "".join(f"\n  {b['entry']}: {b['reason']}"
                                                                               for b in inv["bad"]))


@cache_app.command("clear")
@handle_errors
def clear(tuned: bool = typer.Option(False, "--tuned", help="also remove tuned kernels and tune records"),
          bad: bool = typer.Option(False, "--bad", help="remove only the entries that fail verification"),
          json_out: bool = JsonOpt):
    """Remove stored kernels and captured steps (they are rebuilt on the next run); tuned kernels stay unless --tuned."""
    from ..engine.jitcache import clear as do_clear
    res = do_clear(("programs", "jit") + (("tuned", "tune") if tuned else ()), only_bad=bad)
    if json_out:
        return print_json(res)
    console.print(f"removed {', '.join(res['removed']) or 'nothing'} from {res.get('root')}")
