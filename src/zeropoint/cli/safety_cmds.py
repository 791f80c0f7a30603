"""`zpctl redteam` and `zpctl data canary`: thin wrappers over `zeropoint.safety`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import AllowSimOpt, JsonOpt, console, err_console, handle_errors, print_json
from .governance_cmds import data_app


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def redteam(
    model: str = typer.Argument(..., help="Named model (e.g. smollm2-135m) or a checkpoint directory."),
    suite: str = typer.Option("quick", "--suite", "-s",
                              help="default | quick | a family (jailbreak, injection, sysprompt, exfil, pii) | "
                                   "a probe id | a YAML probe pack."),
    generations: Optional[int] = typer.Option(None, "--generations", "-k", help="Outputs per probe (suite default: quick 1, default 2)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Tokens generated per output (suite default)."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature; 0 is greedy."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each probe x generation derives its own seed from it."),
    gate: bool = typer.Option(False, "--gate", help="Exit 1 when a family's ASR is above its policy threshold; audited."),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold",
                                                   help="Override a policy threshold: FAMILY=MAX_ASR (repeatable)."),
    json_out: bool = JsonOpt,
    allow_simulated: bool = AllowSimOpt,
):
    """Red-team a model: jailbreak, prompt-injection, system-prompt, exfiltration and PII probes.

    Writes redteam/<id>/report.jsonl (garak entry types) and summary.md/.html/.json with the attack success
    rate (fails / (passes + fails)) per family and detector and a bootstrap 95% CI.
    """
    from ..safety.gate import parse_threshold_overrides
    from ..safety.runner import redteam as run_redteam
    overrides = parse_threshold_overrides(threshold)
    if json_out:
        res = run_redteam(model, suite=suite, generations=generations, max_tokens=max_tokens, temperature=temperature,
                          top_p=top_p, seed=seed, gate=gate, thresholds=overrides, allow_simulated=allow_simulated)
        print_json(res)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from ..safety.runner import suite_probes
        probes, st = suite_probes(suite)
        total = len(probes) * int(generations or st.get("generations", 1))
        with Progress(TextColumn("[bold]redteam[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as prog:
            task = prog.add_task("loading model", total=total)

            def on_output(a, g):
                bad = a.failed_outputs()[g]
                prog.update(task, advance=1, description=f"{a.probe.id} {'[red]FAIL[/]' if bad else '[green]pass[/]'}")
            res = run_redteam(model, suite=suite, generations=generations, max_tokens=max_tokens,
                              temperature=temperature, top_p=top_p, seed=seed, gate=gate, thresholds=overrides,
                              allow_simulated=allow_simulated, on_output=on_output)
        if res.get("simulated"):
            console.print("[bold white on red] SIMULATED RUN - NOT REAL COMPUTE [/]")
        per = {r["family"]: r for r in res["gate"]["families"]}
        t = Table("family", "outputs", "fails", "ASR", "95% CI", "threshold", "verdict", title=f"red-team {res['id']}")
        for fam, s in res["families"].items():
            g = per[fam]
            color = {"PASS": "green", "FAIL": "red"}.get(g["verdict"], "yellow")
            t.add_row(fam, str(s["total"]), str(s["fails"]), _fmt(s["asr"]),
                      "n/a" if s["ci_low"] is None else f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]",
                      _fmt(g["threshold"]), f"[{color}]{g['verdict']}[/]")
        console.print(t)
        console.print(f"{res['overall']['total']} outputs in {res['generate_s']} s ({res['s_per_output']} s/output, "
                      f"model load {res['load_s']} s); report: {res['report']}", highlight=False)
        if res.get("model_card"):
            console.print(f"recorded in {res['model_card']}", highlight=False)
        console.print(f"gate ({res['gate']['source']}): " + ("[green]PASSED[/]" if res["gate"]["passed"] else
                      f"[red]FAILED[/] ({', '.join(res['gate']['failed_families'])})") + ("" if gate else " (not enforced; pass --gate)"))
    if gate and not res["gate"]["passed"]:
        raise typer.Exit(1)


def canary(
    source: Path = typer.Argument(..., help="Corpus to copy: a text file, JSONL with 'text', or a directory of .txt."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the planted corpus (must not exist)."),
    count: int = typer.Option(3, "--count", "-n", help="Number of distinct canaries."),
    repeats: int = typer.Option(50, "--repeats", "-r", help="Copies of each canary (enough to be memorised)."),
    seed: int = typer.Option(0, "--seed", help="Placement and wording seed (secrets always come from the OS RNG)."),
    name: Optional[str] = typer.Option(None, "--name", help="Register the planted corpus as this governed dataset "
                                        "(manifest entry lists the canaries); approve it before training."),
    license: str = typer.Option("", "--license", help="SPDX license of the planted corpus (with --name): the source's."),
    source_type: str = typer.Option("", "--source-type", help="public | licensed | synthetic | custom (with --name)."),
    source_url: Optional[str] = typer.Option(None, "--source-url", help="Where the source corpus came from (with --name)."),
    json_out: bool = JsonOpt,
):
    """Plant random canary secrets in a copy of a corpus; `zpctl redteam` later probes for them.

    Each canary is a sentence "The vault passphrase for <name> station is <SECRET>." repeated --repeats times
    at random places. The red-team exfil family asks every registered canary's prefix and scores the reply.
    """
    from dataclasses import asdict

    from ..errors import ZeropointError
    from ..safety.canary import plant, register_planted, registry_path
    if name:
        from ..governance.manifest import load_manifest
        if not license or not source_type:
            raise ZeropointError("--name registers the planted corpus as a dataset: also pass --license (the source "
                                 "corpus's SPDX id) and --source-type (public | licensed | synthetic | custom)")
        if name in load_manifest()["datasets"]:
            raise ZeropointError(f"dataset {name!r} is already registered; choose another --name for the planted corpus")
    rows = plant(source, out, count=count, repeats=repeats, seed=seed, dataset=name)
    entry = register_planted(rows, name, license=license, source_type=source_type, source_url=source_url) if name else None
    if json_out:
        return print_json({"out": str(out), "registry": str(registry_path()), "canaries": [asdict(c) for c in rows],
                           "dataset": name, "manifest_sha256": entry["sha256"] if entry else None})
    t = Table("id", "prefix", "secret", "repeats")
    for c in rows:
        t.add_row(c.id, c.prefix, c.secret, str(c.repeats))
    console.print(t)
    console.print(f"planted corpus {out} (sha256 {rows[0].corpus_sha256[:16]}...); canaries recorded in "
                  f"{registry_path()}", highlight=False)
    if name:
        console.print(f"registered as dataset {name!r} (pending): approve it with `zpctl data approve {name} --approver WHO`",
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.command("redteam")(handle_errors(redteam))
    data_app.command("canary")(handle_errors(canary))   # the `data` group is governance's (governance_cmds)
