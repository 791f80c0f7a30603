"""`zpctl diag`, `zpctl health` and `zpctl appliance pack|verify|sbom`: thin renderings of appliance.diag,
appliance.health and supplychain (the offline bundle and the SBOM)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import JsonOpt, console, err_console, handle_errors, print_json

appliance_app = typer.Typer(help="The offline appliance: pack a signed bundle that installs with no network, "
                                 "verify one, and the SBOM (docs/appliance.md).", no_args_is_help=True)

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
    sb = r.get("sbom") or {}
    t.add_row("sbom", f"{sb['path']} sha256 {sb['sha256']} ("
              + ("matches this installation" if sb.get("matches") else "OUT OF DATE: run `zpctl appliance sbom --out "
                 f"{sb['path']}`") + ")" if sb.get("path") else f"none: {sb.get('reason')}")
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
        from ..supplychain.sbom import sbom_status
        r = run_diag(with_parity=parity)
        r["sbom"] = sbom_status()
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

    app.add_typer(appliance_app, name="appliance")


def _split(v: str) -> list[str]:
    return [x.strip() for x in (v or "").split(",") if x.strip()]


@appliance_app.command("pack")
@handle_errors
def pack_cmd(
    out: Path = typer.Option(..., "--out", help="Bundle directory to create; OUT.tar is written beside it."),
    with_: str = typer.Option("", "--with", help="Test extras to add: `test` (all of them) or packages of it, "
                                                 "e.g. torch,ray."),
    without: str = typer.Option("", "--without", help="Leave out: browser (chromium), debs (every Debian package), "
                                                      "weights, data, python or runtime (Debian groups)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Keep downloads here between packs (wheels, "
                                                               "debs, data packs; every one is hash-checked)."),
    json_out: bool = JsonOpt,
):
    """Pack the appliance into a signed bundle that installs with no network (packing needs the network).

    The bundle holds wheels, weights, data packs, Debian packages, install.sh, an SBOM, and a SHA-256 manifest
    signed with this appliance's Ed25519 key (`zpctl keys init`)."""
    from ..supplychain.pack import PackOptions, pack
    say = (lambda m: None) if json_out else (lambda m: err_console.print(f"[bold]pack[/] {escape(m)}", highlight=False))
    res = pack(PackOptions(out=out, with_=_split(with_), without=_split(without), cache=cache), say=say)
    if json_out:
        return print_json(res)
    t = Table("part", "MB", title=f"bundle {res['bundle']} ({res['files']} files, signer {res['signer'][:16]})")
    for part, n in sorted(res["bytes_by_part"].items()):
        t.add_row(part, f"{n / 1e6:.1f}")
    t.add_row("[bold]directory / tar[/]", f"{res['dir_bytes'] / 1e6:.1f} / {res['tar_bytes'] / 1e6:.1f}")
    console.print(t)
    console.print(f"{res['wheels']} wheels, {res['weights']} weight wheels, {res['data_packs']} data packs, "
                  f"{res['debs']} Debian packages; {res['seconds']['total']} s. Install elsewhere with: "
                  f"bash {res['bundle']}/install.sh --pubkey appliance.pub", highlight=False, soft_wrap=True)


@appliance_app.command("verify")
@handle_errors
def verify_cmd(
    bundle: Path = typer.Argument(..., help="An unpacked bundle directory (tar xf BUNDLE.tar)."),
    pubkey: Path = typer.Option(..., "--pubkey", help="The packer's public key (`zpctl keys export-public`); never "
                                                      "one from the bundle."),
    json_out: bool = JsonOpt,
):
    """The checks install.sh makes before installing: signature with --pubkey, every file's SHA-256, no extra file."""
    from ..supplychain.seal import BundleRejected, verify
    try:
        res = verify(bundle, pubkey)
    except BundleRejected as e:
        if json_out:
            print_json({"ok": False, "bundle": str(bundle), "reason": str(e), "files": e.files})
            raise typer.Exit(1)
        raise
    if json_out:
        return print_json(res)
    console.print(f"[green]VERIFIED[/] {res['bundle']}: {res['files']} files, signed by {res['signer'][:16]}",
                  highlight=False, soft_wrap=True)


@appliance_app.command("sbom")
@handle_errors
def sbom_cmd(
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Report a bundle's SBOM instead of this "
                                                                 "installation's."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the CycloneDX JSON here (default: print it)."),
):
    """CycloneDX 1.6 JSON SBOM of the appliance installed here (or of --bundle DIR), validated against the schema.

    It lists every Python and Debian package, the weights, the data packs and the governed datasets, with hashes
    and licenses."""
    from ..supplychain import sbom
    if bundle is not None:
        p = Path(bundle) / sbom.SBOM_NAME
        if not p.is_file():
            raise sbom.SbomError(f"{bundle} has no {sbom.SBOM_NAME}; is it an appliance bundle (zpctl appliance pack)?")
        text = p.read_text(encoding="utf-8")
        sbom.validate(text)
    else:
        text = sbom.installed_sbom()
    if out is None:
        return print(text, end="")
    s = sbom.summary(text)
    if sbom.same_contents(out, text):
        # the serial number is derived from the components: same contents, same file, so its hash stays put
        kept = sbom.summary(out.read_text(encoding="utf-8"))["sha256"]
        err_console.print(f"SBOM {out}: unchanged (same components as recorded); sha256 {kept}", highlight=False,
                          soft_wrap=True)
        return
    from ..workspace import atomic_write_text
    atomic_write_text(out, text)
    err_console.print(f"SBOM {out}: CycloneDX {s['spec_version']}, valid; "
                      + ", ".join(f"{n} {k}" for k, n in sorted(s["components"].items()))
                      + f"; sha256 {s['sha256']}", highlight=False, soft_wrap=True)
