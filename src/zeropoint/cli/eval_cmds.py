"""`zpctl eval`, `zpctl drift check`, `zpctl drift data`: thin wrappers over zeropoint.evals / zeropoint.drift."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import AllowSimOpt, JsonOpt, console, handle_errors, print_json

drift_app = typer.Typer(help="Regression alarms on evals (check) and distribution drift on data (data).",
                        no_args_is_help=True)


def _fmt(v) -> str:
    return "N/A" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def eval_cmd(
    model: str = typer.Argument(..., help="Model: a named model (smollm2-135m), a .gguf file, an HF directory or a checkpoint dir."),
    task: List[str] = typer.Option(..., "--task", "-t", help="mmlu_dev, fashion_mnist, bias_pairs[:CATEGORIES[:N]] (stereotype preference per category), bias_sentiment[:CATEGORIES[:N]] (counterfactual sentiment gap), heldout:DATASET (approved corpus, recipe's split), heldout:run:RUN_ID, or an lm-eval task YAML; repeatable."),
    limit: Optional[float] = typer.Option(None, "--limit", help="Only the first N documents per task (a fraction if < 1)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass."),
    max_length: int = typer.Option(2048, "--max-length", help="Context window used for scoring (tokens)."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="Override the task's num_fewshot."),
    bootstrap_iters: int = typer.Option(100000, "--bootstrap-iters", help="Bootstrap draws for stderrs lm-eval bootstraps (0 = none)."),
    save_baseline: Optional[str] = typer.Option(None, "--save-baseline", help="Also pin these results as baseline NAME for `drift check`."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Split the scoring over N Ray workers (1 CPU each); same figures as one process."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster (GCS host:port or auto) for --ray-workers; default $RAY_ADDRESS, else a new local Ray."),
    allow_simulated: bool = AllowSimOpt,
    json_out: bool = JsonOpt,
):
    """Evaluate a model on lm-eval style tasks; writes evals/<eval_id>/results.json and per-sample JSONL."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evals.harness import run_eval
    from ..evals.harness import save_baseline as _save
    lim = None if limit is None else (int(limit) if limit >= 1 else limit)
    if ray_address and ray_workers is None:
        raise typer.BadParameter("--ray-address needs --ray-workers N")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=json_out, transient=True) as prog:
        def factory(name, total):
            tid = prog.add_task(f"scoring {name}", total=total)
            return lambda n: prog.advance(tid, n)
        kw = dict(limit=lim, batch_size=batch_size, max_length=max_length, num_fewshot=num_fewshot,
                  bootstrap_iters=bootstrap_iters, allow_simulated=allow_simulated, progress_factory=factory)
        if ray_workers is None:
            res = run_eval(model, task, **kw)
        else:
            from ..orchestrator.ray_eval import run_eval_on_ray
            res = run_eval_on_ray(model, task, workers=ray_workers, address=ray_address, **kw)
    if save_baseline:
        res["baseline_saved"] = str(_save(res["eval_id"], save_baseline))
    if json_out:
        return print_json(res)
    if res.get("simulated"):
        console.print("[bold white on red] SIMULATED RUN - NOT REAL COMPUTE [/]")
    t = Table("task", "metric", "value", "stderr", "n")
    for name, tr in res["tasks"].items():
        for m, v in tr["metrics"].items():
            se = v.get("stderr") if v.get("stderr") is not None else v.get("stderr_bootstrap")
            t.add_row(name, m, _fmt(v.get("value")), _fmt(se) + ("*" if v.get("stderr") is None and se is not None else ""),
                      str(v.get("n", tr.get("n_docs"))))
    console.print(t)
    for name, tr in res["tasks"].items():   # per-group scores of tasks with a `breakdown` (the bias probes)
        for m, v in tr["metrics"].items():
            bd = v.get("breakdown")
            if not bd:
                continue
            bt = Table(bd["by"], m, f"{100 * bd['level']:g}% CI", "n", title=f"{name}: {m} by {bd['by']} "
                       f"({bd['interval']}, cluster: {bd['cluster']})")
            for g, c in bd["groups"].items():
                bt.add_row(str(g), _fmt(c["value"]), f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]", str(c.get("n")))
            console.print(bt)
    if res.get("fanout"):
        console.print(f"scored by {len(res['fanout']['workers'])} Ray workers at {res['fanout']['address'] or 'a local Ray'}")
    console.print(f"eval [bold]{res['eval_id']}[/] on {res['device']} in {res['wall_s']:.1f}s; "
                  f"model sha256 {str(res['model'].get('sha256'))[:16]}")
    if res.get("baseline_saved"):
        console.print(f"baseline saved: {res['baseline_saved']}")


@drift_app.command("check")
@handle_errors
def drift_check(
    baseline: str = typer.Option(..., "--baseline", help="Baseline name saved with `zpctl eval --save-baseline`."),
    current: str = typer.Option(..., "--current", help="Eval id (or results.json path) to check."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="YAML thresholds: z, default {abs, rel}, metrics {name: {abs, rel}}."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who ran the check (audit log)."),
    json_out: bool = JsonOpt,
):
    """Compare an eval with a baseline per metric; exit 3 if any metric regressed beyond policy."""
    from ..drift.check import check
    rep = check(baseline, current, str(policy) if policy else None, actor)
    if json_out:
        print_json(rep)
    else:
        t = Table("task", "metric", "baseline", "current", "worse by", "significance", "alarm")
        for r in rep["comparisons"]:
            t.add_row(r["task"], r["metric"], _fmt(r["baseline"]), _fmt(r["current"]), _fmt(r["worse_by"]),
                      r["significance"], "[bold red]ALARM[/]" if r["alarm"] else "[green]ok[/]")
        console.print(t)
        console.print(f"report: {rep['report_path']}")
        console.print("[bold red]regression alarm[/]" if rep["alarm"] else "[green]no regression[/]")
    raise typer.Exit(rep["exit_code"])


@drift_app.command("data")
@handle_errors
def drift_data(
    reference: str = typer.Option(..., "--reference", help="Reference corpus (dir of .txt/.json, .jsonl, .txt) or images (dir, IDX .gz)."),
    current: Optional[str] = typer.Option(None, "--current", help="Current corpus/images (same kinds)."),
    halves: Optional[int] = typer.Option(None, "--halves", help="No --current: compare two random halves of --reference (seed)."),
    kind: str = typer.Option("auto", "--kind", help="text, image or auto."),
    max_items: Optional[int] = typer.Option(None, "--max-items", help="Random sample of at most N items per side."),
    drift_share: float = typer.Option(0.5, "--drift-share", help="Share of drifted features that flags the dataset."),
    embed_model: Optional[str] = typer.Option(None, "--embed-model", help="Images: a vit_classify checkpoint whose features add embedding-space (PCA) drift features."),
    json_out: bool = JsonOpt,
):
    """Per-feature drift tests (Evidently's selection: KS / Wasserstein / Jensen-Shannon, plus PSI); exit 3 on drift."""
    from ..drift.data import run_data_drift
    if kind not in ("auto", "text", "image"):
        raise typer.BadParameter("--kind must be text, image or auto")
    rep = run_data_drift(reference, current, kind=kind, halves_seed=halves, max_items=max_items, drift_share=drift_share,
                         embed_model=embed_model)
    if json_out:
        print_json(rep)
    else:
        t = Table("feature", "test", "statistic", "threshold", "PSI", "drift")
        for f in rep["features"]:
            t.add_row(f["feature"], f["test"], _fmt(f["statistic"]), _fmt(f["threshold"]),
                      f"{_fmt(f['psi'])} ({f['psi_level']})", "[bold red]DRIFT[/]" if f["drifted"] else "[green]ok[/]")
        console.print(t)
        console.print(f"{rep['n_drifted']}/{rep['n_features']} features drifted (share {rep['share_drifted']:.2f}, "
                      f"threshold {rep['drift_share_threshold']}); report {rep['report_dir']}")
        console.print("[bold red]dataset drift[/]" if rep["dataset_drift"] else "[green]no dataset drift[/]")
    raise typer.Exit(3 if rep["dataset_drift"] else 0)


def register(app: typer.Typer) -> None:
    app.command("eval")(handle_errors(eval_cmd))
    app.add_typer(drift_app, name="drift")
