"""`zpctl diag` and `zpctl health`: thin renderings of appliance.diag / appliance.health."""
from __future__ import annotations

import typer
from rich.table import Table

from .common import JsonOpt, console, handle_errors, print_json

COLORS = {"green": "green", "yellow": "yellow", "red": "red", "PASS": "green", "FAIL": "red"}


def _gib(n) -> str:
    return "-" if n is None else f"{n / (1 << 30):.1f} GiB"


def render_diag(r: dict) -> None:
    if r["simulated"]:
        console.print(f"[bold white on red] SIMULATED: {'; '.join(r['simulated_reasons'])} [/]")
    hw, cpu = r["hardware"], r["hardware"]["cpu"]
    t = Table(title=f"Zeropoint appliance {r['appliance_id']}", show_header=False)
    t.add_row("version", f"{r['version']['zeropoint']} (commit {r['commit'] or 'unknown'})")
    t.add_row("tinygrad / python", f"{r['version']['tinygrad']} / {r['version']['python']}")
    t.add_row("cpu", f"{cpu['model']} ({cpu['arch']}, {cpu['logical_cores']} logical, {cpu['usable_cores']} usable)")
    t.add_row("isa flags", " ".join(cpu["flags"]) or "-")
    t.add_row("memory", _gib(hw["memory_bytes"]))
    for d in hw["disks"]:
        t.add_row(f"disk {d['path']}", f"{_gib(d['free_bytes'])} free of {_gib(d['total_bytes'])}")
    acc = hw["accelerators"]
    opens = [d["device"] for d in acc["tinygrad"] if d["opens"]]
    t.add_row("tinygrad devices", f"default {acc['default_device']}; open: {', '.join(opens) or 'none'}")
    nv = acc.get("nvml") or {}
    for g in nv.get("gpus", []):
        t.add_row(f"gpu {g['index']}", f"{g['name']} {_gib(g['memory_total_bytes'])}, cc {g['compute_capability']}, "
                  f"ECC {(g['ecc'] or {}).get('current')}, {g['power_limit_w']} W, {g['uuid']}")
    if nv.get("available"):
        t.add_row("nvidia driver", f"{nv['driver_version']} (CUDA {nv['cuda_driver_version']})")
    else:
        t.add_row("nvml", str(nv.get("reason")))
    t.add_row("fingerprint", hw["fingerprint"])
    console.print(t)
    bt = Table("backend", "opens", "renderer / error", title="tinygrad backends")
    for d in acc["tinygrad"]:
        note = d.get("renderer") or "" if d["opens"] else d["error"]
        bt.add_row(d["device"] + (" (simulated)" if d.get("simulated") else ""),
                   "[green]yes[/]" if d["opens"] else "[red]no[/]", note)
    console.print(bt)
    lt = Table("library", "version", "path", "sha256", title="Libraries")
    for lib in r["libraries"]:
        lt.add_row(lib["name"], str(lib.get("version")), str(lib.get("path")), str(lib.get("sha256") or lib.get("reason")))
    console.print(lt)
    p = r["parity"]
    if p["results"]:
        pt = Table("n", "max rel err", "tol", "status", "tinygrad GFLOP/s", "numpy GFLOP/s", "first call s",
                   title=f"fp32 matmul parity on {p['device']}: {p['status']}")
        for row in p["results"]:
            pt.add_row(str(row["size"]), f"{row['max_rel_error']:.2e}", f"{row['tolerance']:.0e}",
                       f"[{COLORS[row['status']]}]{row['status']}[/]", f"{row['tinygrad_gflops']:.2f}",
                       f"{row['numpy_gflops']:.2f}", f"{row['tinygrad_first_call_s']:.3f}")
        console.print(pt)
    else:
        console.print(f"parity: {p['status']} ({p.get('reason')})")


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def diag(json_out: bool = JsonOpt,
             parity: bool = typer.Option(True, "--parity/--no-parity", help="Run the matmul parity check.")):
        """Measured diagnostics: hardware, accelerators, library hashes, tinygrad-vs-numpy matmul parity."""
        from ..appliance.diag import run_diag
        r = run_diag(with_parity=parity)
        print_json(r) if json_out else render_diag(r)
        if r["parity"]["status"] in ("FAIL", "ERROR"):
            raise typer.Exit(1)

    @app.command()
    @handle_errors
    def health(json_out: bool = JsonOpt):
        """green | yellow | red from named checks; exit code 0, 1 or 2."""
        from ..appliance.health import run_health
        r = run_health()
        if json_out:
            print_json(r)
        else:
            t = Table("check", "status", "detail", title=f"health: [{COLORS[r['status']]}]{r['status']}[/]")
            for c in r["checks"]:
                t.add_row(c["name"], f"[{COLORS[c['status']]}]{c['status']}[/]", c["detail"])
            console.print(t)
        raise typer.Exit(r["exit_code"])
