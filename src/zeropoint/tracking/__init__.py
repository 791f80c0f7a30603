"""Runs side by side, and in the trackers teams already use.

- `series`: a run's evidence as per-step series (train rows, eval rows), final figures and a flattened config;
  what every other module here reads, so a comparison, an MLflow run and a TensorBoard log show the same numbers.
- `compare`: `compare_runs(ids)`: the curves, a final-metrics table, the config diff and the data check (a JSON-safe
  dict; no matplotlib, so the API server can serve it without loading it).
- `plots`: the figures (`compare_figure`, one run's `run_loss_png`) on matplotlib's `Figure`.
- `mlflow_export`: `export_mlflow(run)` through the MLflow client; idempotent (one MLflow run per Zeropoint run).
- `tensorboard_export`: `export_tensorboard(run, logdir)` with tensorboardX.
- `live`: `--track mlflow|tensorboard` on `zpctl train`: observers of the run's metrics.jsonl rows.

MLflow and tensorboardX are the optional `track` extra; they are imported only where used.
"""
