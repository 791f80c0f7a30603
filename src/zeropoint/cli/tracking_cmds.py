"""`zpctl runs compare` and `zpctl runs export`: runs side by side, and into MLflow or TensorBoard."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import JsonOpt, console, handle_errors, print_json


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


@handle_errors
def runs_compare(runs: List[str] = typer.Argument(..., help="Two or more run ids (or run directories)."),
                 png: Optional[Path] = typer.Option(None, "--png", help="Write the overlaid curves to this PNG."),
                 json_out: bool = JsonOpt):
    """Overlay loss and validation curves, tabulate final metrics, and list the config keys that differ.

    Says loudly when the runs did not read the same data (dataset names and SHA-256)."""
    from ..tracking.compare import compare_runs
    from ..tracking.plots import compare_figure, save_png
    cmp = compare_runs(runs)
    if png is not None:
        save_png(compare_figure(cmp), png)
        cmp["png"] = str(png)
    if json_out:
        return print_json(cmp)
    for w in cmp["warnings"]:
        console.print(f"[bold white on red] WARNING [/] [bold red]{escape(w)}[/]", soft_wrap=True)
    ids = [r["id"] for r in cmp["runs"]]
    t = Table("metric", *ids, title="final metrics")
    why_null: dict[tuple, None] = {}   # each (metric, reason) once, however many runs share it
    for row in cmp["metrics"]:
        pairs = list(zip(row["values"], row["null_reasons"]))
        t.add_row(row["metric"], *["null*" if v is None and why else _fmt(v) for v, why in pairs])
        why_null.update({(row["metric"], why): None for v, why in pairs if v is None and why})
    console.print(t)
    for metric, why in why_null:
        console.print(f"[dim]* {metric} null: {escape(why)}[/]", soft_wrap=True)
    d = Table("config key", *ids, title="config diff (only keys that differ)")
    for k, vals in cmp["config_diff"].items():
        d.add_row(k, *[_fmt(v) for v in vals])
    console.print(d if cmp["config_diff"] else "[green]configs are identical[/]")
    ds = Table("run", "datasets (name, version, sha256)", title="data")
    for r in cmp["runs"]:
        names = [f"{x['name']} v{x['version']} {(x['sha256'] or '')[:16]}" for x in r["datasets"]]
        ds.add_row(r["id"], "\n".join(names) or "—")
    console.print(ds)
    console.print("[green]same data in every run[/]" if cmp["data"]["same"] else "[bold red]DIFFERENT DATA[/]")
    if png is not None:
        console.print(f"curves: {png}", highlight=False, soft_wrap=True)


@handle_errors
def runs_export(run: str = typer.Argument(..., help="Run id or run directory."),
                mlflow: bool = typer.Option(False, "--mlflow",
                                            help="Log the run to MLflow (params, metrics, tags, artifacts)."),
                tracking_uri: Optional[str] = typer.Option(
                    None, "--tracking-uri",
                    help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else $ZP_HOME/mlruns)."),
                experiment: str = typer.Option("zeropoint", "--experiment", help="MLflow experiment name."),
                tensorboard: Optional[Path] = typer.Option(
                    None, "--tensorboard", help="Write TensorBoard event files under DIR/<run id>/.", metavar="DIR"),
                json_out: bool = JsonOpt):
    """Export a run to MLflow and/or TensorBoard. Exporting again updates the same MLflow run (no duplicate)."""
    from ..errors import ZeropointError
    from ..evidence import load_run
    if not mlflow and tensorboard is None:
        raise ZeropointError("say where to export: --mlflow [--tracking-uri URI] and/or --tensorboard DIR")
    r = load_run(run)
    out = {}
    if mlflow:
        from ..tracking.mlflow_export import export_mlflow
        out["mlflow"] = export_mlflow(r, tracking_uri=tracking_uri, experiment=experiment)
    if tensorboard is not None:
        from ..tracking.tensorboard_export import export_tensorboard
        out["tensorboard"] = export_tensorboard(r, tensorboard)
    if json_out:
        return print_json(out)
    if "mlflow" in out:
        m = out["mlflow"]
        verb = "created" if m["created"] else "updated"
        console.print(f"[green]MLflow[/] {verb} run {m['mlflow_run_id']} in experiment {m['experiment']!r} at "
                      f"{m['tracking_uri']}: {m['metric_points_logged']} new metric points "
                      f"({m['metric_points_already_there']} already there), {m['params_logged']} new params, "
                      f"{len(m['artifacts'])} artifacts", highlight=False, soft_wrap=True)
        if m["model_card"] is None:
            console.print(f"[yellow]no model card:[/] {m['model_card_reason']}", highlight=False, soft_wrap=True)
    if "tensorboard" in out:
        tb = out["tensorboard"]
        console.print(f"[green]TensorBoard[/] {tb['scalars']} scalars in {tb['logdir']}; view: {tb['view']}",
                      highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    runs_app = next(g.typer_instance for g in app.registered_groups if g.name == "runs")
    runs_app.command("compare")(runs_compare)
    runs_app.command("export")(runs_export)
