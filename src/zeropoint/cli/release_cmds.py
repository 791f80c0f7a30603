"""`zpctl release CKPT --baseline NAME`, `zpctl release verify BUNDLE`, `zpctl keys init|show|export-public`:
thin wrappers over zeropoint.release."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from .common import AllowSimOpt, JsonOpt, console, err_console, handle_errors, print_json


class _DefaultToCreate(TyperGroup):
    """`zpctl release CKPT ...` means `zpctl release create CKPT ...`; `verify` stays a subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


release_app = typer.Typer(cls=_DefaultToCreate, no_args_is_help=True,
                          help="Release gate: `zpctl release CKPT --baseline NAME` runs every gate and writes a signed "
                               "evidence bundle; `zpctl release verify BUNDLE` checks one.")
keys_app = typer.Typer(help="The appliance's Ed25519 signing key ($ZP_HOME/keys).", no_args_is_help=True)


def _verdict(passed) -> str:
    return {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]not run[/]"}[passed]


@release_app.command("create")
@handle_errors
def create(
    checkpoint: str = typer.Argument(..., metavar="CKPT", help="Checkpoint dir (runs/<id>/checkpoints/step-N) or a run "
                                                               "dir/id (its newest verified checkpoint)."),
    baseline: str = typer.Option(..., "--baseline", help="Saved eval baseline to check drift against "
                                                        "(`zpctl eval ... --save-baseline NAME`)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Release policy YAML (default: "
                                                                 "configs/release/default.yaml, sized for SmolLM2 on CPU)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Bundle directory to create (default "
                                                          "$ZP_HOME/releases/<release_id>); BUNDLE.tar is written beside it."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model",
                                                 help="If the baseline does not exist yet, evaluate this model "
                                                      "(e.g. smollm2-135m) with the release's settings and save it."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Run the compute gates even when governance or "
                                                                "checkpoint verification failed."),
    allow_simulated: bool = AllowSimOpt,
    json_out: bool = JsonOpt,
):
    """Run every release gate (or reuse results whose inputs' hashes match), decide, write the signed bundle.

    Gates: governance (approved, unchanged training data), checkpoint (hashes, finished real run), eval + drift
    against --baseline, export(s) + parity, red-team, bias (stereotype preference vs the baseline model), bench;
    then the harms checklist. Exit 0 when the release passes, 1 when a gate or a harms item fails (the bundle is
    written either way and records why)."""
    from ..release.pipeline import release
    status = None

    def say(msg: str) -> None:
        if json_out:
            return
        if status is not None:
            status.update(f"[bold]release[/] {escape(msg)}")
        if msg.startswith(("governance:", "checkpoint:", "eval_drift:", "export:", "redteam:", "bias:", "bench:")) and (
                " PASS - " in msg or " FAIL - " in msg):
            err_console.print(escape(msg), highlight=False)
    if json_out:
        res = release(checkpoint, baseline, policy, out, baseline_model=baseline_model, keep_going=keep_going,
                      allow_simulated=allow_simulated, say=say)
        print_json(res)
    else:
        with err_console.status("[bold]release[/] starting") as status:
            res = release(checkpoint, baseline, policy, out, baseline_model=baseline_model, keep_going=keep_going,
                          allow_simulated=allow_simulated, say=say)
        if res.get("simulated"):
            console.print("[bold white on red] SIMULATED RUN - NOT REAL COMPUTE [/]")
        t = Table("gate", "result", "reused", "rule", "why", title=f"release {res['release_id']}", show_lines=True)
        for g in res["gates"]:
            t.add_row(g["name"], _verdict(g["passed"]), "yes" if g["reused"] else "", escape(g["rule"]),
                      escape(g["reason"]))
        console.print(t)
        h = Table("harms item", "status", "evidence or reason", title="harms checklist", show_lines=True)
        tone = {"pass": "[green]pass[/]", "fail": "[red]fail[/]", "not assessed": "[yellow]not assessed[/]"}
        for i in res["harms_checklist"]["items"]:
            h.add_row(i["title"], tone[i["status"]], escape(", ".join(i["evidence"]) if i["status"] != "not assessed"
                                                            else i["reason"]))
        console.print(h)
        console.print(f"bundle: {res['bundle']}\ntar:    {res['tar']} (sha256 {res['tar_sha256'][:16]}...)\n"
                      f"signed with key {res['public_key_sha256'][:16]}", highlight=False)
        console.print("[bold green]RELEASE PASSED[/]" if res["passed"] else
                      "[bold red]RELEASE FAILED[/]: " + escape("; ".join(
                          [f"{g['name']}: {g['reason']}" for g in res["failed_gates"]]
                          + [f"harms {i['id']}: {i['reason']}" for i in res.get("failed_harms") or []])))
    raise typer.Exit(0 if res["passed"] else 1)


@release_app.command("verify")
@handle_errors
def verify(
    bundle: Path = typer.Argument(..., help="Bundle directory or its .tar."),
    pubkey: Optional[Path] = typer.Option(None, "--pubkey", help="The appliance's public key (PEM). Default: this "
                                                                 "appliance's key, else the key inside the bundle "
                                                                 "(integrity only, not origin)."),
    json_out: bool = JsonOpt,
):
    """Check the signature, every file's SHA-256, the audit segment's chain and that every gate passed; exit 1 if not.

    Needs no $ZP_HOME state: the same check runs anywhere as `python verify.py BUNDLE --pubkey KEY`
    (src/zeropoint/release/verify.py: stdlib + cryptography only)."""
    from ..errors import ZeropointError
    from ..release.keys import key_paths
    from ..release.verify import BundleError, verify_bundle
    if pubkey is None and key_paths()[1].is_file():
        pubkey = key_paths()[1]
    try:
        rep = verify_bundle(bundle, pubkey)
    except BundleError as e:
        raise ZeropointError(str(e)) from None
    if json_out:
        print_json(rep)
    else:
        for c in rep["checks"]:
            mark = "[green]ok[/]  " if c["ok"] else "[red]FAIL[/]"
            console.print(f"{mark} {c['check']}: {escape(c['detail'])}", highlight=False)
        console.print("[bold green]VERIFIED[/]" if rep["ok"] else
                      "[bold red]NOT VERIFIED[/]" + (f" ({', '.join(rep['failed_files'])})" if rep["failed_files"] else ""))
    raise typer.Exit(0 if rep["ok"] else 1)


@keys_app.command("init")
@handle_errors
def keys_init(json_out: bool = JsonOpt):
    """Create the appliance's Ed25519 signing key (private key 0600); never replaces an existing one."""
    from ..release.keys import init_keys
    info = init_keys()
    if json_out:
        return print_json(info)
    console.print(f"signing key created: {info['private_key']} (0600)\npublic key: {info['public_key']}\n"
                  f"fingerprint (sha256): {info['fingerprint']}", highlight=False)


@keys_app.command("show")
@handle_errors
def keys_show(json_out: bool = JsonOpt):
    """Where the key is, its mode and its fingerprint."""
    from ..release.keys import key_info
    info = key_info()
    if json_out:
        return print_json(info)
    for k, v in info.items():
        console.print(f"[bold]{k:>12}[/] {v}", highlight=False)


@keys_app.command("export-public")
@handle_errors
def keys_export(out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the PEM here (default: stdout)."),
                json_out: bool = JsonOpt):
    """Print (or write) the public key that verifies this appliance's bundles."""
    import sys

    from ..release.keys import export_public
    pem, info = export_public(out)
    if json_out:
        return print_json({**info, "pem": pem.decode()})
    if out is None:
        sys.stdout.write(pem.decode())
    else:
        console.print(f"public key written to {out} (fingerprint {info['fingerprint']})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
    app.add_typer(keys_app, name="keys")
