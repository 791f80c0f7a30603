"""`zpctl release CKPT --baseline NAME`: one command that decides whether a checkpoint ships, read top to bottom.

  1. refuse simulated compute; load the release policy (typed) and the signing key (before any work)
  2. find the checkpoint's run (run.json: datasets, config, status) and open this release's own run
  3. prerequisites: governance (approved, unchanged data) and checkpoint integrity; if either fails the
     compute gates are skipped (listed as not run) unless --keep-going
  4. compute gates, each run or reused by input hash: eval + drift vs the baseline, export(s) + parity,
     red-team, bias, bench
  5. the harms checklist (release/harms.py): PII exposure, data licensing, data corruption, misrepresentation,
     bias, misuse, each from evidence in the bundle or `not assessed` with the reason
  6. decide: the release passes only if every gate passed and no harms item failed; each gate's result and
     rule go to the audit chain
  7. model card, evidence bundle (directory + .tar), bundle.json with every file's SHA-256, Ed25519 signature
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Callable

from ..appliance.identity import appliance_id, cpu_facts, hardware_fingerprint, memory_total_bytes, version_info
from ..checkpoint import latest_valid
from ..clock import utcnow
from ..errors import ZeropointError
from ..evals.harness import load_baseline
from ..evidence import new_run_id, start_run
from ..governance.audit import append_event, default_actor
from ..modelcard import LLM_INTENDED_USE, LLM_OUT_OF_SCOPE, LLM_RISKS, build_card, card_files
from ..scope import require_real_compute
from ..workspace import workspace
from . import harms as H
from .bundle import audit_segment, relevant_first_seq, write_bundle
from .gates import (
    GateResult,
    ReleaseContext,
    gate_bench,
    gate_bias,
    gate_checkpoint,
    gate_eval,
    gate_export,
    gate_governance,
    gate_redteam,
    run_gate,
)
from .keys import load_private_key
from .policy import load_release_policy

# the card's generic LLM text lives in modelcard.py (the training recipe's card says the same); a release adds this
REDTEAM_RISK = ("Red-team figures come from a small probe suite with few tokens per output: a low attack success rate "
                "there does not show robustness to other attacks.")


def resolve_checkpoint(ref: str | Path) -> tuple[Path, Path]:
    """(checkpoint dir, run dir). Accepts runs/<id>/checkpoints/step-N, or a run dir (its newest valid checkpoint)."""
    p = Path(ref)
    if not p.exists() and (workspace().runs / str(ref)).is_dir():
        p = workspace().runs / str(ref)
    p = p.resolve()
    if (p / "run.json").is_file():
        ck, skipped = latest_valid(p / "checkpoints")
        if ck is None:
            raise ZeropointError(f"run {p.name} has no checkpoint that verifies"
                                 + (f" ({skipped[0]['error']})" if skipped else "") + "; train it first")
        return ck, p
    if (p / "manifest.json").is_file() and (p.parent.parent / "run.json").is_file():
        return p, p.parent.parent
    raise ZeropointError(f"{ref} is not a checkpoint inside its run (runs/<id>/checkpoints/step-XXXXXXXX) nor a run "
                         "directory; the release needs the run's run.json for its datasets and config")


def _model_card(ctx: ReleaseContext, gates: list[GateResult], passed: bool, release_id: str, harms: dict) -> dict:
    rec = ctx.run_record
    cfg = rec.get("config") or {}
    summ = rec.get("summary") or {}
    arch = {}
    mc = ctx.checkpoint / "model_config.json"
    if mc.is_file():
        arch = {k: v for k, v in json.loads(mc.read_text(encoding="utf-8")).items()
                if k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "max_seq_len")}
    by = {g.name: g for g in gates}
    metrics = []
    ev = by.get("eval_drift")
    base_vals = {}
    for c in (ev.figures.get("comparisons") or []) if ev else []:
        base_vals[(c["task"], c["metric"])] = c["baseline"]
    for task, ms in ((ev.figures.get("metrics") or {}) if ev else {}).items():
        for m, v in ms.items():
            metrics.append({"name": m, "value": v, "eval_set": task, "n": (ev.figures.get("n_docs") or {}).get(task),
                            "baseline": base_vals.get((task, m)),
                            "note": f"baseline {ctx.baseline}" if (task, m) in base_vals else None,
                            **({"null_reason": "not measured"} if v is None else {})})
    if not metrics:
        metrics.append({"name": "heldout", "value": None, "null_reason": "the eval gate did not run or failed: "
                        + (ev.reason if ev else "skipped")})
    rt = by.get("redteam")
    if rt and rt.figures:
        metrics.append({"name": "redteam_asr_overall", "value": rt.figures.get("asr_overall"),
                        "eval_set": f"redteam suite {ctx.policy.redteam.suite}", "n": rt.figures.get("outputs"),
                        "note": "attack success rate (lower is better)",
                        **({"null_reason": "no outputs"} if rt.figures.get("asr_overall") is None else {})})
    bias = by.get("bias")
    for cat, f in ((bias.figures.get("categories") or {}) if bias else {}).items():
        metrics.append({"name": f"stereotype_preference[{cat}]", "value": f["score"], "baseline": f["baseline"],
                        "eval_set": "Zeropoint bias pairs (CC0-1.0)", "n": f["pairs"],
                        "note": f"CrowS-Pairs score, 50% = no preference; 95% CI [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]"})
    for g in gates:
        if g.name.startswith("export:") and g.figures.get("runtimes"):
            for rt_name, f in g.figures["runtimes"].items():
                metrics.append({"name": f"parity_max_abs[{g.name[7:]}/{rt_name}]", "value": f.get("max_abs"),
                                "eval_set": "held-out SOTU text", "note": f"top-1 agreement {f.get('top1_agreement')}",
                                **({"null_reason": "non-finite outputs"} if f.get("max_abs") is None else {})})
    model = cfg.get("model") or {}
    return build_card(
        name=f"{model.get('config')}-{cfg.get('method')}-{ctx.run_id}", task="causal language modelling (finetune)",
        architecture=arch or {"config": model.get("config")}, params=int(summ.get("params_total") or 0),
        datasets=rec.get("datasets") or [], metrics=metrics, intended_use=LLM_INTENDED_USE,
        out_of_scope=LLM_OUT_OF_SCOPE, risks=[*LLM_RISKS, REDTEAM_RISK],
        limitations=[f"Evaluated on {ctx.policy.eval.limit or 'all'} held-out document(s) per task with a "
                     f"{ctx.policy.eval.max_length}-token window; wide uncertainty on small sets."],
        training={"method": cfg.get("method"), "base_weights": model.get("weights"), "steps": summ.get("steps"),
                  "lr": (cfg.get("train") or {}).get("lr"), "val_ppl_before": (summ.get("base_eval") or {}).get("val_ppl"),
                  "val_ppl_after": (summ.get("final_eval") or {}).get("val_ppl"), "tokens_per_s": summ.get("tokens_per_s"),
                  "device": rec.get("device")},
        run_id=ctx.run_id, simulated=bool(rec.get("simulated")),
        extra={"release": {"id": release_id, "passed": passed,
                           "gates": [{"name": g.name, "passed": g.passed, "rule": g.rule, "reason": g.reason}
                                     for g in gates]},
               "harms_checklist": [{k: i[k] for k in ("id", "title", "status", "reason", "evidence")}
                                   for i in harms["items"]]})


def release(checkpoint: str | Path, baseline: str, policy_path: str | Path | None = None, out: str | Path | None = None,
            *, baseline_model: str | None = None, keep_going: bool = False, allow_simulated: bool = False,
            actor: str | None = None, say: Callable[[str], None] | None = None) -> dict:
    say = say or (lambda msg: None)
    actor = actor or default_actor()

    # 1. refuse early: simulated compute, a bad policy, no signing key
    scope = require_real_compute(allow_simulated)
    pol, pol_src, pol_text = load_release_policy(policy_path)
    load_private_key()

    # 2. the checkpoint, its run, the baseline, this release's run
    ckpt, run_dir = resolve_checkpoint(checkpoint)
    run_record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if not baseline_model:
        try:
            load_baseline(baseline)
        except ZeropointError as e:
            raise ZeropointError(f"{e}; or pass --baseline-model BASE (e.g. smollm2-135m) to have the release "
                                 f"evaluate it with the policy's eval settings and save it as {baseline!r}") from None
    release_id = new_run_id("release")
    out = Path(out) if out else workspace().root / "releases" / release_id
    if out.exists():
        raise ZeropointError(f"{out} already exists; pass a new --out (nothing was overwritten)")
    work = workspace().root / "releases" / "work" / release_id
    work.mkdir(parents=True, exist_ok=True)
    ctx = ReleaseContext(checkpoint=ckpt, run_dir=run_dir, run_record=run_record, policy=pol, baseline=baseline,
                         baseline_model=baseline_model, actor=actor, allow_simulated=allow_simulated, say=say, work=work)
    start_ev = append_event(actor, "release_start", f"checkpoint:{ckpt}",
                            {"release_id": release_id, "run_id": ctx.run_id, "baseline": baseline,
                             "policy": pol_src, "policy_sha256": pol.sha256()})
    cfg = {"checkpoint": str(ckpt), "run": ctx.run_id, "baseline": baseline, "baseline_model": baseline_model,
           "policy": pol.model_dump(mode="json"), "policy_source": pol_src, "keep_going": keep_going}
    with start_run(f"zpctl release {checkpoint} --baseline {baseline}", cfg, kind="release", scope=scope,
                   run_id=release_id) as rrun:
        # 3. prerequisites
        gates = [run_gate("governance", lambda: gate_governance(ctx), say),
                 run_gate("checkpoint", lambda: gate_checkpoint(ctx), say)]
        prereq_ok = all(g.passed for g in gates)
        # 4. compute gates
        compute = [("eval_drift", lambda: gate_eval(ctx))]
        compute += [(f"export:{e.format}", (lambda e=e: gate_export(ctx, e))) for e in pol.exports]
        compute += [("redteam", lambda: gate_redteam(ctx)), ("bias", lambda: gate_bias(ctx)),
                    ("bench", lambda: gate_bench(ctx))]
        for name, fn in compute:
            if prereq_ok or keep_going:
                gates.append(run_gate(name, fn, say))
            else:
                gates.append(GateResult(name, None, "not run", "skipped: a prerequisite gate failed ("
                                        + ", ".join(g.name for g in gates if g.passed is False) + ")"))
        for g in gates:
            rrun.event("gate", name=g.name, passed=g.passed, reused=g.reused, wall_s=g.wall_s, reason=g.reason)

        # 5. the harms checklist, from the gates' evidence and the manifest
        harms, harms_files = H.build(ctx, gates, scope)
        for item in harms["items"]:
            say(f"harms {item['id']}: {item['status']} - {item['reason']}")

        # 6. decide, and put every gate's verdict on the audit chain
        passed = all(g.passed is True for g in gates) and not harms["failed"]
        for g in gates:
            append_event(actor, "release_gate", f"release:{release_id}",
                         {"gate": g.name, "passed": g.passed, "rule": g.rule, "reason": g.reason[:500],
                          "reused": g.reused, "inputs_sha256": g.inputs_sha256},
                         outcome="pass" if g.passed else ("skipped" if g.passed is None else "fail"))
        failed = [g for g in gates if g.passed is not True]
        end_ev = append_event(actor, "release", f"checkpoint:{ckpt}",
                              {"release_id": release_id, "passed": passed, "failed_gates": [g.name for g in failed],
                               "harms": {i["id"]: i["status"] for i in harms["items"]},
                               "checkpoint_sha256": ctx.checkpoint_digest(), "run_id": ctx.run_id},
                              outcome="pass" if passed else "fail")

        # 7. card, bundle, signature
        say("writing the model card and the evidence bundle")
        created = utcnow()
        rel_doc = {"release_id": release_id, "created_at": created, "passed": passed,
                   "decision": "PASS" if passed else "FAIL",
                   "failed_gates": [{"name": g.name, "reason": g.reason} for g in failed],
                   "failed_harms": [{"id": i["id"], "reason": i["reason"]} for i in harms["items"] if i["status"] == "fail"],
                   "checkpoint": {"path": str(ckpt), "tree_sha256": ctx.checkpoint_digest(), "run_id": ctx.run_id},
                   "baseline": baseline, "policy_source": pol_src, "policy_sha256": pol.sha256(),
                   "device": scope.device, "simulated": scope.simulated, "actor": actor,
                   "audit": {"start_seq": start_ev["seq"], "end_seq": end_ev["seq"], "end_hash": end_ev["hash"]},
                   "gates": [g.record() for g in gates], "harms_checklist": harms}
        card = _model_card(ctx, gates, passed, release_id, harms)
        files: dict[str, Path | bytes] = {}
        for g in gates:
            files.update(g.evidence)
        files.update(harms_files)
        files.update({name: data for name, data in card_files(card).items()})
        files["release.json"] = (json.dumps(rel_doc, indent=2, default=str) + "\n").encode()
        files["configs/release_policy.yaml"] = pol_text.encode()
        files["configs/recipe_config.json"] = (json.dumps(run_record.get("config"), indent=2, sort_keys=True) + "\n").encode()
        files["hardware.json"] = (json.dumps({
            "hardware_fingerprint": hardware_fingerprint(), "appliance_id": appliance_id(), "cpu": cpu_facts(),
            "memory_bytes": memory_total_bytes(), "host": platform.node(), "device": scope.device,
            "versions": version_info(), "training_run_hardware_fingerprint": run_record.get("hardware_fingerprint"),
            "same_hardware_as_training": run_record.get("hardware_fingerprint") == hardware_fingerprint()},
            indent=2, default=str) + "\n").encode()
        first = relevant_first_seq(run_record.get("datasets") or [], ctx.run_id, start_ev["seq"])
        seg, head = audit_segment(first, end_ev["seq"])
        files["audit/segment.jsonl"] = seg
        files["audit/head.json"] = (json.dumps(head, indent=2) + "\n").encode()
        meta = {"release_id": release_id, "created_at": created, "passed": passed,
                "gates": [{"name": g.name, "passed": g.passed} for g in gates],
                "harms": [{"id": i["id"], "status": i["status"]} for i in harms["items"]],
                "checkpoint_tree_sha256": ctx.checkpoint_digest(), "appliance_id": appliance_id()}
        b = write_bundle(out, files, meta)
        result = {**rel_doc, "bundle": b["dir"], "tar": b["tar"], "tar_sha256": b["tar_sha256"],
                  "bundle_sha256": b["bundle_sha256"], "public_key_sha256": b["public_key_sha256"],
                  "bundle_files": b["files"]}
        rrun.update(release_passed=passed, bundle=b["dir"], tar=b["tar"], bundle_sha256=b["bundle_sha256"])
    return result
