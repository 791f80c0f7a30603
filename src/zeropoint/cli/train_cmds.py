"""`zpctl train`, `zpctl resume`, `zpctl ckpt verify`, `zpctl lora merge`, `zpctl model info`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import AllowSimOpt, JsonOpt, SetOpt, console, handle_errors, print_json

ckpt_app = typer.Typer(help="Training checkpoints: verify integrity.", no_args_is_help=True)
lora_app = typer.Typer(help="LoRA adapters: merge into the base weights.", no_args_is_help=True)
model_app = typer.Typer(help="Model sizing and facts (no weights loaded).", no_args_is_help=True)
NoProgressOpt = typer.Option(False, "--no-progress", help="No progress bar (logs still go to the run directory).")
TrackOpt = typer.Option(None, "--track", help="Also stream metrics live to `mlflow` or `tensorboard` (the `track` "
                        "extra); a tracker that fails leaves a warning in the run and never stops it.")
TrackUriOpt = typer.Option(None, "--track-uri", help="--track mlflow: tracking URI (default $MLFLOW_TRACKING_URI, else "
                           "$ZP_HOME/mlruns); --track tensorboard: log dir (default runs/<id>/tensorboard).")


def _gib(b) -> str:
    return f"{b / 2 ** 30:,.3f} GiB" if b >= 2 ** 27 else f"{b / 2 ** 20:,.2f} MiB"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _show_vision_summary(out: dict) -> None:
    """A vision run: what it learned (held-out accuracy or retrieval against its baselines) and how fast."""
    t = Table(title=f"run {out['run_id']}", show_header=False)
    unit = "images" if "images_per_s" in out else "pairs"
    rows = [("run dir", out["run_dir"]), ("steps", f"{out['start_step']} -> {out['steps']} ({out['epochs']} epochs)"),
            ("loss first/last", " / ".join("-" if x is None else f"{x:.4f}" for x in (out.get("first_loss"),
                                                                                       out.get("last_loss"))))]
    if "test" in out:
        te = out["test"]
        rows += [(f"test top-1 (n={te['n']})", f"[bold]{_pct(te.get('top1'))}[/] (chance {_pct(te['chance_top1'])}, "
                                              f"majority class {_pct(te['majority_baseline'])})"),
                 ("test top-5", _pct(te.get("top5"))), ("confusion matrix", out["confusion_matrix_png"])]
    else:
        r, zs = out["retrieval"], out["zero_shot"]
        rows += [(f"image->text R@1/5/10 (n={r['n']})", " / ".join(_pct(r["image_to_text"][k]) for k in ("R@1", "R@5", "R@10"))
                  + f" (random R@10 {_pct(r['random_baseline']['R@10'])})"),
                 ("text->image R@1/5/10", " / ".join(_pct(r["text_to_image"][k]) for k in ("R@1", "R@5", "R@10"))),
                 ("zero-shot top-1", f"{_pct(zs['top1'])} (chance {_pct(zs['chance'])})")]
    rows += [(f"{unit}/s (steady)", str(out.get(f"{unit}_per_s"))), ("first step (compile) s", str(out.get("first_step_s"))),
             ("train wall s", str(out.get("train_wall_s"))), ("params", f"{out['params']:,}"),
             ("last checkpoint", str(out.get("checkpoint"))), ("HF export", str(out.get("hf_export")))]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def _show_summary(out: dict) -> None:
    if "test" in out or "retrieval" in out:
        return _show_vision_summary(out)
    t = Table(title=f"run {out['run_id']}", show_header=False)
    be, fe = out.get("base_eval") or {}, out.get("final_eval") or {}
    rows = [("run dir", out["run_dir"]), ("steps", f"{out['start_step']} -> {out['steps']}"),
            ("loss first/last", f"{out.get('first_loss')} / {out.get('last_loss')}"),
            ("val ppl before -> after", f"{be.get('val_ppl', float('nan')):.3f} -> {fe.get('val_ppl', float('nan')):.3f}"
             f" ({out.get('ppl_change_pct')}%)"),
            ("tokens/s (steady)", str(out.get("tokens_per_s"))), ("first step (compile) s", str(out.get("first_step_s"))),
            ("train wall s", str(out.get("train_wall_s"))), ("skipped steps", str(out.get("skipped_steps"))),
            ("params trainable/total", f"{out.get('params_trainable'):,} / {out.get('params_total'):,}"),
            ("last checkpoint", str(out.get("checkpoint")))]
    if "base_weights_unchanged" in out:
        rows.append(("base weights unchanged", str(out["base_weights_unchanged"])))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(ckpt_app, name="ckpt")
    app.add_typer(lora_app, name="lora")
    app.add_typer(model_app, name="model")

    @app.command()
    @handle_errors
    def train(config: Path = typer.Argument(..., help="Recipe YAML, e.g. configs/llm/tiny_full.yaml"),
              set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt, allow_simulated: bool = AllowSimOpt,
              no_progress: bool = NoProgressOpt, track: Optional[str] = TrackOpt, track_uri: Optional[str] = TrackUriOpt):
        """Train a recipe config on approved data; evidence, loss curve and checkpoints go to runs/<id>/.

        Short run: --set train.steps=10. Every step is logged; checkpoints every train.ckpt_every steps."""
        from ..recipes import load_config
        from ..tracking.live import live_tracking
        cfg, run_fn = load_config(config, set_)
        with live_tracking(track, track_uri):
            out = run_fn(cfg, allow_simulated=allow_simulated, progress=not no_progress and not json_out,
                         command=f"zpctl train {config}" + "".join(f" --set {s}" for s in set_ or [])
                         + (f" --track {track}" if track else ""))
        return print_json(out) if json_out else _show_summary(out)

    @app.command()
    @handle_errors
    def resume(run: str = typer.Argument(..., help="Run id (runs/<id>) or run directory"),
               json_out: bool = JsonOpt, allow_simulated: bool = AllowSimOpt, no_progress: bool = NoProgressOpt,
               track: Optional[str] = TrackOpt, track_uri: Optional[str] = TrackUriOpt):
        """Continue a run from its newest checkpoint that verifies (same config, same batches, same losses)."""
        from ..config import validate
        from ..errors import ZeropointError
        from ..evidence import effective_status, load_run
        from ..recipes import recipe_entry
        r = load_run(run)
        if effective_status(r.record) == "running":
            raise ZeropointError(f"run {r.id} is still running (pid {r.record.get('pid')}); stop it before resuming")
        if effective_status(r.record) == "succeeded":
            raise ZeropointError(f"run {r.id} already finished; start a new run with `zpctl train`")
        raw = r.record.get("config") or {}
        cls, run_fn = recipe_entry(raw.get("recipe", ""))
        cfg = validate(cls, raw, f"{r.dir}/run.json")
        from ..tracking.live import live_tracking
        with live_tracking(track, track_uri):   # mlflow: the run's MLflow run is found by its tag and continued
            out = run_fn(cfg, allow_simulated=allow_simulated, run_id=r.id, resume=True,
                         progress=not no_progress and not json_out, command=f"zpctl resume {run}")
        return print_json(out) if json_out else _show_summary(out)

    @ckpt_app.command("verify")
    @handle_errors
    def ckpt_verify(path: Path = typer.Argument(..., help="A checkpoint dir (runs/<id>/checkpoints/step-N) or a run dir"),
                    json_out: bool = JsonOpt):
        """Re-hash every file against manifest.json; exit 1 naming the first file that does not match."""
        from ..checkpoint import CheckpointError, list_checkpoints, verify_checkpoint
        targets = [path] if (path / "manifest.json").exists() or not (path / "checkpoints").is_dir() \
            else list_checkpoints(path / "checkpoints")
        results = []
        for p in targets:
            try:
                results.append(verify_checkpoint(p))
            except CheckpointError as e:
                results.append({"path": str(p), "ok": False, "error": str(e)})
        ok = bool(results) and all(r["ok"] for r in results)
        if json_out:
            print_json({"ok": ok, "checkpoints": results})
        else:
            for r in results:
                if r["ok"]:
                    console.print(f"[green]ok[/] {r['path']} step {r['step']}: {len(r['files'])} files, "
                                  f"{r['bytes']:,} bytes verified", highlight=False, soft_wrap=True)
                else:
                    console.print(f"[bold red]FAILED[/] {r['error']}", highlight=False, soft_wrap=True)
            if not results:
                console.print(f"[red]no checkpoints under {path}[/]")
        raise typer.Exit(0 if ok else 1)

    @lora_app.command("merge")
    @handle_errors
    def lora_merge(checkpoint: Path = typer.Argument(..., help="A LoRA checkpoint dir (verified before use)"),
                   out: Path = typer.Option(..., "--out", help="Directory to write the merged HF model into (new)"),
                   json_out: bool = JsonOpt):
        """Fold the adapters into the base weights and write a Hugging Face directory (config + safetensors)."""
        from ..models.llm import merge_checkpoint_to_hf
        res = merge_checkpoint_to_hf(checkpoint, out)
        if json_out:
            return print_json(res)
        console.print(f"[green]merged[/] {res['merged_modules']} adapted projections into {res['out']}", highlight=False)

    @model_app.command("info")
    @handle_errors
    def model_info_cmd(config: Path = typer.Argument(..., help="Recipe YAML, e.g. configs/llm/llama-3-8b_lora.yaml "
                                                                "or configs/vision/vit-tiny_fashion-mnist.yaml"),
                       set_: Optional[List[str]] = SetOpt, json_out: bool = JsonOpt):
        """Parameter count (vs published), trainable count, and the memory plan of one training step.

        LLM configs: the plan at the configured batch, sequence length, precision, lora.base_quant and
        train.activation_checkpointing (docs/memory.md). For the vision recipes: FLOPs per image (per
        image-caption pair for CLIP) and the memory plan of training every weight; no data is read and no
        weights are loaded."""
        from ..recipes import MODEL_INFO, load_config
        cfg, _ = load_config(config, set_)
        info = MODEL_INFO[cfg.recipe](cfg)
        if json_out:
            return print_json(info)
        if cfg.recipe == "llm_finetune":
            ck = info["activation_checkpointing"]
            t = Table(title=f"{info['config']} ({info['method']}, {info['precision']}, batch {info['micro_batch_size']}"
                            f" x {info['seq_len']} tokens, base {info['base_quant']}, checkpointing {ck}"
                            + (f" k={info['activation_checkpointing_k']}" if ck == "every_k" else "") + ")",
                      show_header=False)
            pub = info["published_params"]
            t.add_row("parameters", f"{info['params']:,}" + (f" (published {pub:,}; {info['params_vs_published_pct']:+.3f}%)" if pub else ""))
            t.add_row("trainable", f"{info['trainable_params']:,} ({info['trainable_pct']:.3f}%)")
        else:
            fl = info["flops"]
            t = Table(title=f"{info['model']} ({info['recipe']}, {info['precision']}, batch {info['micro_batch_size']}"
                            f" x accum {info['grad_accum']})", show_header=False)
            t.add_row("parameters", f"{info['params']:,} (all trainable)")
            t.add_row(f"FLOPs per {fl['unit']}", f"{fl['forward_per_sample']:,} forward, {fl['train_per_sample']:,} "
                                                 "training step")
            t.add_row("FLOPs per optimizer step", f"{fl['per_step']:.3e}")
        for k, v in info["memory"].items():
            t.add_row(k.replace("_bytes", ""), _gib(v))
        console.print(t)
        console.print(f"[dim]{info['note']}[/]")
