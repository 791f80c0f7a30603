"""`runs/<id>/perf.json` and `perf.png` (loss and tok/s per step, memory), live or from a run's metrics.

`write_run_perf(run)` needs nothing but the run directory: step times, tokens/s and losses come from
`metrics.jsonl` (written by `engine.fit` through `Run.log_step`), the model shape from the run's config, so
any finished run (and `zpctl perf report RUN`) gets the same report as a live meter would give, minus energy,
which can only be measured while the run is going (it is then null with that reason).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from ..evidence import read_metrics, throughput
from ..models.llama import get_config
from ..models.lora import LoRASpec, count_lora_params
from ..workspace import atomic_write_bytes, atomic_write_text
from .cost import load_policy, run_cost
from .flops import step_flops
from .meter import summarize_steps


def plot_perf(steps: list[dict], path: Path, title: str = "") -> Path:

    matplotlib.use("Agg")
    xs = [s["step"] for s in steps]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(xs, [s.get("loss") for s in steps], marker=".")
    axes[0].set_ylabel("loss")
    key = next((k for k in (steps[0] if steps else {}) if k.endswith("_per_s")), "tokens_per_s")
    axes[1].plot(xs, [s.get(key) for s in steps], marker=".", color="tab:green")
    axes[1].set_ylabel(key.replace("_per_s", "/s"))
    mem = [(s.get("device_mem_bytes") or 0) / 2**20 for s in steps]
    rss = [(s.get("rss_peak_bytes") or 0) / 2**20 for s in steps]
    if any(mem):
        axes[2].plot(xs, mem, label="device (tinygrad allocator)")
    if any(rss):
        axes[2].plot(xs, rss, label="peak RSS")
    axes[2].set_ylabel("MiB")
    axes[2].set_xlabel("step")
    if any(mem) or any(rss):
        axes[2].legend()
    else:
        axes[2].text(0.5, 0.5, "memory not recorded per step for this run", ha="center", transform=axes[2].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_perf(run_dir: Path, summary: dict, steps: list[dict], cost: dict | None = None, title: str = "") -> dict:
    run_dir = Path(run_dir)
    doc = {**summary, "cost": cost, "per_step": steps}
    atomic_write_text(run_dir / "perf.json", json.dumps(doc, indent=2, default=str) + "\n")
    plot_perf(steps, run_dir / "perf.png", title=title)
    return doc


def llm_step_flops(config: dict):
    """StepFlops for an llm_finetune run config (dict as stored in run.json)."""
    mc = get_config(config["model"]["config"], **(config["model"].get("overrides") or {}))
    t, d = config.get("train", {}), config.get("data", {})
    seq = int(d.get("seq_len", 128))
    tokens = int(t.get("micro_batch_size", 4)) * int(t.get("grad_accum", 1)) * seq
    method = config.get("method", "lora")
    n_lora = count_lora_params(mc, LoRASpec.from_section(config.get("lora"))) if method == "lora" else 0
    return step_flops(mc, seq_len=seq, tokens_per_step=tokens, method=method, n_lora=n_lora)


def write_run_perf(run, *, energy: dict | None = None, cost_policy=None) -> dict:
    """perf.json + perf.png for a run from its metrics.jsonl (call at the end of a recipe, or afterwards)."""
    metrics = read_metrics(run)
    rows = [r for r in metrics if r.get("event") == "step"]
    warm = [r for r in metrics if r.get("event") == "warm_start"]
    unit = throughput(rows[0])[1] if rows else "tokens"      # tokens (language models) or images (vision)
    steps = []
    for r in rows:
        sec = (r.get("step_ms") or 0) / 1000.0
        tps = r.get(f"{unit}_per_s")
        steps.append({"step": r["step"], "seconds": sec, unit: round(tps * sec) if tps else None,
                      f"{unit}_per_s": tps, "loss": r.get("loss"),
                      "device_mem_bytes": r.get("device_mem_bytes"), "rss_peak_bytes": r.get("rss_peak_bytes")})
    cfg = run.record.get("config") or {}
    flops = None
    if run.record.get("kind") == "llm_finetune" and cfg.get("model"):
        try:
            flops = llm_step_flops(cfg)
        except Exception:   # unknown config name etc.: FLOPs stay null rather than wrong
            flops = None
    device = (run.record.get("device") or "CPU")
    precision = (cfg.get("train") or {}).get("precision", "fp32")
    summary = summarize_steps(steps, unit=unit, flops_per_step=flops.per_step if flops else None, device=device,
                              precision=precision, energy=energy or {
                                  "energy_j": None, "reason": "energy is only measured live during a run; this report was built from metrics.jsonl"})
    summary["flops"] = flops.to_dict() if flops else None
    # cold or warm start (engine/jitcache.py): the first session's first step, and whether its steps were loaded
    sessions = [{k: v for k, v in w.items() if k != "event"} for w in warm]   # a resumed run has one per process
    summary["warm_start"] = ({**sessions[0], "later_sessions": sessions[1:]} if sessions else
                             {"reason": "no warm_start event in metrics.jsonl (run made before the compile cache)"})
    summary["memory"]["rss_peak_bytes"] = max((s.get("rss_peak_bytes") or 0 for s in steps), default=0) or None
    summary["memory"]["device_mem_peak_bytes"] = max((s.get("device_mem_bytes") or 0 for s in steps), default=0) or None
    wall = sum(s["seconds"] for s in steps)
    tokens = sum(s["tokens"] or 0 for s in steps) if unit == "tokens" else 0   # cost is per 1M tokens
    pol = cost_policy or load_policy()
    cost = run_cost(pol, wall_s=wall, energy_kwh=(summary["energy"] or {}).get("energy_kwh"), tokens=tokens or None)
    return write_perf(run.dir, summary, steps, cost, title=f"{run.id}")
