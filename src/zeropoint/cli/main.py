"""`zpctl`: the command line. Thin: every command calls a library function and renders its result."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from . import (
    appliance_cmds,
    cache_cmds,
    eval_cmds,
    export_cmds,
    governance_cmds,
    model_cmds,
    perf_cmds,
    release_cmds,
    safety_cmds,
    serve_cmds,
    tracking_cmds,
    train_cmds,
)
from .common import JsonOpt, SetOpt, console, handle_errors, print_json

app = typer.Typer(name="zpctl", help="Zeropoint training appliance: governed data, tinygrad recipes, evidence.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
scope_app = typer.Typer(help="Scope controls: find mock flags in config trees.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs recorded under $ZP_HOME/runs.", no_args_is_help=True)
config_app = typer.Typer(help="Typed recipe configs.", no_args_is_help=True)
app.add_typer(scope_app, name="scope")
app.add_typer(runs_app, name="runs")
app.add_typer(config_app, name="config")


@app.command()
@handle_errors
def version(json_out: bool = JsonOpt):
    """Package version, git commit, tinygrad and Python versions."""
    from ..appliance.identity import version_info
    info = version_info()
    if json_out:
        return print_json(info)
    for k, v in info.items():
        console.print(f"[bold]{k:>18}[/] {v}")


@scope_app.command("check")
@handle_errors
def scope_check(path: Path = typer.Argument(Path("."), help="File or directory to scan."), json_out: bool = JsonOpt):
    """Scan YAML/TOML/JSON/.env files for mock flags set true; exit 1 listing each hit."""
    from ..scope import MOCK_FLAGS, scan_tree
    hits = scan_tree(path)
    if json_out:
        print_json({"path": str(path), "flags": list(MOCK_FLAGS), "hits": [h.__dict__ for h in hits], "ok": not hits})
    elif hits:
        for h in hits:
            # soft_wrap: a FILE:LINE is copied into an editor, so it is never broken across lines
            console.print(f"[red]{h.file}:{h.line}[/]: {h.key} = {h.value}", highlight=False, soft_wrap=True)
        console.print(f"[bold red]{len(hits)} mock flag(s) set[/] under {path}", soft_wrap=True)
    else:
        console.print(f"[green]no mock flags set[/] under {path}", soft_wrap=True)
    raise typer.Exit(1 if hits else 0)


@runs_app.command("ls")
@handle_errors
def runs_ls(json_out: bool = JsonOpt):
    """List runs with status, device and whether they were simulated."""
    from ..evidence import list_runs
    runs = list_runs()
    if json_out:
        return print_json([{k: r.get(k) for k in ("id", "kind", "status", "started_at", "ended_at", "device", "simulated")}
                           for r in runs])
    t = Table("run", "kind", "status", "started", "device", "simulated")
    for r in runs:
        st = r.get("status")
        color = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(st, "white")
        t.add_row(r.get("id"), r.get("kind"), f"[{color}]{st}[/]", str(r.get("started_at")), str(r.get("device")),
                  "[bold red]SIMULATED[/]" if r.get("simulated") else "no")
    console.print(t)


@runs_app.command("show")
@handle_errors
def runs_show(run: str = typer.Argument(..., help="Run id or run directory."), json_out: bool = JsonOpt):
    """Show a run's record and its last metrics."""
    from ..evidence import effective_status, load_run, read_metrics, throughput
    r = load_run(run)
    rec = dict(r.record, status=effective_status(r.record))
    metrics = read_metrics(r)
    steps = [m for m in metrics if m.get("event") == "step"]
    perf = _perf_summary(r.dir)
    if json_out:
        return print_json({"run": rec, "steps": len(steps), "last_step": steps[-1] if steps else None,
                           "events": [m for m in metrics if m.get("event") != "step"], "perf": perf})
    if rec.get("simulated"):
        console.print("[bold white on red] SIMULATED RUN - NOT REAL COMPUTE [/]")
    t = Table("field", "value", show_header=False)
    for k in ("id", "kind", "status", "command", "device", "seed", "config_sha256", "hardware_fingerprint",
              "git_commit", "tinygrad_version", "started_at", "ended_at", "error"):
        t.add_row(k, str(rec.get(k)))
    for d in rec.get("datasets") or []:
        t.add_row("dataset", f"{d.get('name')} {d.get('sha256', '')}")
    console.print(t)
    if steps:
        last = steps[-1]
        rate, unit = throughput(last)
        console.print(f"{len(steps)} steps; last: step {last['step']} loss {last['loss']:.4f} "
                      f"({rate or 0:.1f} {'tok' if unit == 'tokens' else unit}/s)")
    if perf:
        pt = Table("perf (perf.json)", "value", show_header=True)
        ss = perf.get("steady_step_s") or {}
        fmt = lambda v, f="{:.3g}": "null" if v is None else f.format(v)   # noqa: E731
        unit = "images" if "images_per_s" in perf else "tokens"
        pt.add_row(f"{unit}/s (steady median)", fmt(perf.get(f"{unit}_per_s"), "{:.2f}"))
        pt.add_row("step s (steady median, min-max, n)", f"{fmt(ss.get('median'))} ({fmt(ss.get('min'))}-{fmt(ss.get('max'))}, {ss.get('n')})")
        pt.add_row("first step s / compile s", f"{fmt(perf.get('first_step_s'))} / {fmt(perf.get('compile_s'))}")
        pt.add_row("MFU", fmt(perf.get("mfu")) if perf.get("mfu") is not None else "null (no FLOP count or no peak)")
        mem = perf.get("memory") or {}
        pt.add_row("RSS peak MB", fmt((mem.get("rss_peak_bytes") or 0) / 1e6 or None, "{:.0f}"))
        en = perf.get("energy") or {}
        pt.add_row("energy J", fmt(en.get("energy_j")) if en.get("energy_j") is not None else f"null: {en.get('reason')}")
        cost = perf.get("cost") or {}
        if cost:
            pt.add_row("cost", ", ".join(f"{k}={v}" for k, v in cost.items() if not isinstance(v, (dict, list)))[:200])
        console.print(pt)


def _perf_summary(run_dir: Path) -> dict | None:
    """perf.json without its per-step rows (the summary `runs show` prints), or None."""
    f = Path(run_dir) / "perf.json"
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    doc.pop("per_step", None)
    return doc


@config_app.command("show")
@handle_errors
def config_show(config: Path, set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt):
    """Print the resolved, validated config (with overrides applied) and its SHA-256."""
    import yaml

    from ..config import config_dict, config_hash
    from ..recipes import load_config
    cfg, _ = load_config(config, set_)
    if json_out:
        return print_json({"config": config_dict(cfg), "sha256": config_hash(cfg)})
    console.print(yaml.safe_dump(config_dict(cfg), sort_keys=False), end="", highlight=False)
    console.print(f"# sha256: {config_hash(cfg)}", highlight=False)


# The command table (litgpt's PARSER_DATA): every `zpctl` command and group, the module that defines it, in the
# order `--help` lists them (commands first, then groups). Each module's `register(app)` adds exactly its names;
# tests/cli/test_command_table.py keeps this table and the app in sync.
COMMANDS: list[tuple[object, tuple[str, ...]]] = [
    (sys.modules[__name__], ("version", "scope", "runs", "config")),
    (appliance_cmds, ("diag", "health", "appliance")),
    (cache_cmds, ("cache",)),
    (eval_cmds, ("eval", "drift")),
    (export_cmds, ("export", "parity")),
    (governance_cmds, ("data", "pii", "audit")),
    (model_cmds, ("generate",)),
    (perf_cmds, ("bench", "tune", "perf")),
    (release_cmds, ("release", "keys")),
    (safety_cmds, ("redteam", "data canary")),
    (serve_cmds, ("serve", "token", "jobs")),
    (tracking_cmds, ("runs compare", "runs export")),
    (train_cmds, ("train", "resume", "ckpt", "lora", "model")),
]
for _module, _ in COMMANDS[1:]:
    _module.register(app)


def main() -> None:
    from ..orchestrator.lifeline import die_with_supervisor
    die_with_supervisor()   # a job started by `zpctl serve` ends with the server (no-op otherwise)
    app()


if __name__ == "__main__":
    main()
