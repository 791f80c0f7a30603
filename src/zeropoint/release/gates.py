"""The release gates: each a plain function `gate_x(ctx) -> GateResult` that runs (or reuses) one check through
the library that owns it and says which rule decided.

Reuse: the expensive gates (eval, export, red-team, bench) cache their measured outputs under
`$ZP_HOME/releases/cache/<gate>-<inputs sha256>.json`, keyed by the SHA-256 of everything that determines the
measurement (the checkpoint's file tree, the settings, the data hashes, the tool versions). A cache entry is
used only when every file it points at still hashes to what was recorded; the gate's *rule* is always
re-applied to the figures, so a stricter policy re-judges old measurements without recomputing them.
Governance and checkpoint verification are never cached: re-hashing the files is the check itself.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .. import __version__
from ..appliance.identity import hardware_fingerprint, tinygrad_version
from ..checkpoint import verify_checkpoint
from ..config import validate
from ..drift.check import check
from ..errors import ZeropointError
from ..evals.bias import ref_docs
from ..evals.harness import eval_dir, load_baseline, load_results, model_identity, run_eval, save_baseline
from ..evidence import effective_status, load_run
from ..export import manifest as EM
from ..export import parity as P
from ..export.pipeline import export_llama
from ..governance.manifest import files_digest, get_dataset, verify
from ..hashing import sha256_file, sha256_json, sha256_tree
from ..models.llm import open_checkpoint, open_lm
from ..perf.bench import run_bench
from ..recipes.llm_finetune import LLMFinetuneConfig
from ..safety.bias_gate import evaluate_pairs, evaluate_sentiment
from ..safety.gate import evaluate_gate, evaluate_gate_vs_baseline, load_thresholds, outcomes_from_report
from ..safety.runner import redteam, suite_probes
from ..workspace import atomic_write_text, workspace
from .policy import RUN_HELDOUT, ExportPolicy, ReleasePolicy, export_gate


@dataclass
class GateResult:
    name: str
    passed: bool | None                 # None: not run (a prerequisite failed)
    rule: str                           # the rule that decides this gate
    reason: str                         # why it passed or failed, with the deciding figures
    figures: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)   # bundle path -> source file (Path) or content (bytes)
    reused: bool = False
    inputs_sha256: str | None = None
    wall_s: float = 0.0

    def record(self) -> dict:
        d = asdict(self)
        d["evidence"] = sorted(self.evidence)
        return d


@dataclass
class ReleaseContext:
    checkpoint: Path
    run_dir: Path
    run_record: dict
    policy: ReleasePolicy
    baseline: str
    baseline_model: str | None = None
    actor: str | None = None
    allow_simulated: bool = False
    say: Callable[[str], None] = lambda msg: None
    work: Path | None = None            # scratch dir of this release (drift policy file etc.)
    _digest: str | None = None
    _model: object | None = None

    @property
    def run_id(self) -> str:
        return self.run_record.get("id") or self.run_dir.name

    def checkpoint_digest(self) -> str:
        if self._digest is None:
            self._digest = sha256_tree(self.checkpoint)[0]
        return self._digest

    def model(self):
        """The checkpoint's model (LoadedLM, LoRA merged), loaded once, verified first."""
        if self._model is None:
            self.say("loading the checkpoint (verified, adapters merged)")
            self._model = open_checkpoint(self.checkpoint, merge=True)
        return self._model


# ---- cache ----------------------------------------------------------------------------------------------------
def _cache_path(gate: str, key: str) -> Path:
    return workspace().root / "releases" / "cache" / f"{gate}-{key}.json"


def cache_get(gate: str, key: str) -> dict | None:
    p = _cache_path(gate, key)
    if not p.is_file():
        return None
    try:
        ent = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for f, digest in (ent.get("files") or {}).items():
        if not Path(f).is_file() or sha256_file(f) != digest:
            return None        # an output was changed or removed since: measure again
    return ent.get("value")


def cache_put(gate: str, key: str, inputs: dict, value: dict, files: list[Path | str]) -> None:
    atomic_write_text(_cache_path(gate, key), json.dumps(
        {"gate": gate, "inputs": inputs, "value": value, "files": {str(f): sha256_file(f) for f in files}},
        indent=2, default=str) + "\n")


def _key(inputs: dict) -> str:
    return sha256_json({**inputs, "zeropoint": __version__})


# ---- 1. governance ------------------------------------------------------------------------------------------
GOVERNANCE_RULE = ("every dataset the checkpoint was trained on (run.json) is approved, the approval covers exactly "
                   "the contents trained on (SHA-256), and every file re-hashes to its recorded SHA-256 now")


def gate_governance(ctx: ReleaseContext) -> GateResult:
    recs = ctx.run_record.get("datasets") or []
    g = GateResult("governance", False, GOVERNANCE_RULE, "")
    if not recs:
        g.reason = f"run {ctx.run_id} records no governed datasets; only checkpoints trained through the gate ship"
        return g
    problems, rows = [], []
    for r in recs:
        name = r.get("name")
        try:
            ds = get_dataset(name)
        except ZeropointError as e:
            problems.append(str(e))
            continue
        appr = ds.get("approval") or {}
        ver = verify(name, actor=ctx.actor)[0]
        row = {"name": name, "trained_sha256": r.get("sha256"), "manifest_sha256": ds.get("sha256"),
               "approval": {k: appr.get(k) for k in ("status", "approver", "time", "policy_version", "dataset_sha256")},
               "files": len(ds.get("files") or []), "verify": ver}
        rows.append(row)
        if appr.get("status") != "approved":
            problems.append(f"dataset {name!r} is {appr.get('status', 'pending')}, not approved")
        elif appr.get("dataset_sha256") != ds["sha256"] or files_digest(ds["files"]) != ds["sha256"]:
            problems.append(f"dataset {name!r}: the approval is for other contents than the manifest lists")
        if r.get("sha256") != ds.get("sha256"):
            problems.append(f"dataset {name!r} was re-registered after training: the checkpoint was trained on "
                            f"{str(r.get('sha256'))[:12]}..., the manifest now holds {str(ds.get('sha256'))[:12]}...")
        for p in ver["problems"]:
            what = "is missing" if p["problem"] == "missing" else (
                "changed after approval" if p["problem"] == "changed" else p["problem"])
            problems.append(f"dataset {name!r}: file {p['path']} {what}")
    g.figures = {"datasets": [{"name": x["name"], "sha256": x["manifest_sha256"], "files": x["files"],
                               "approved_by": x["approval"]["approver"], "ok": x["verify"]["ok"]} for x in rows]}
    g.evidence["governance/datasets.json"] = (json.dumps(rows, indent=2, default=str) + "\n").encode()
    g.passed = not problems
    g.reason = ("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                if problems else f"{len(rows)} dataset(s) approved and unchanged: "
                + ", ".join(f"{x['name']} ({x['files']} files)" for x in rows))
    return g


# ---- 2. checkpoint --------------------------------------------------------------------------------------------
CHECKPOINT_RULE = ("every checkpoint file matches its manifest SHA-256; its run finished (succeeded) on real "
                   "compute (not simulated) with the same config hash")


def gate_checkpoint(ctx: ReleaseContext) -> GateResult:
    g = GateResult("checkpoint", False, CHECKPOINT_RULE, "")
    problems = []
    try:
        rep = verify_checkpoint(ctx.checkpoint)
    except ZeropointError as e:
        g.reason = str(e)
        return g
    rec = ctx.run_record
    status = effective_status(rec)
    if status != "succeeded":
        problems.append(f"run {ctx.run_id} is {status}, not succeeded")
    if rec.get("simulated"):
        problems.append(f"run {ctx.run_id} is SIMULATED ({'; '.join(rec.get('simulated_reasons') or [])})")
    man = json.loads((ctx.checkpoint / "manifest.json").read_text(encoding="utf-8"))
    if man.get("config_sha256") != rec.get("config_sha256"):
        problems.append("the checkpoint's config hash differs from its run's config hash (not this run's checkpoint)")
    g.figures = {"step": rep["step"], "bytes": rep["bytes"], "files": len(rep["files"]),
                 "tree_sha256": ctx.checkpoint_digest(), "run_status": status, "device": rec.get("device"),
                 "simulated": bool(rec.get("simulated")), "summary": {k: (rec.get("summary") or {}).get(k) for k in (
                     "steps", "final_eval", "base_eval", "ppl_change_pct", "tokens_per_s", "base_weights_unchanged")}}
    for f in rep["files"]:
        if f["path"].endswith(".json"):
            g.evidence[f"checkpoint/{f['path']}"] = ctx.checkpoint / f["path"]
    g.evidence["checkpoint/manifest.json"] = ctx.checkpoint / "manifest.json"
    for name in ("run.json", "config.json", "loss_curve.csv", "metrics.jsonl", "perf.json"):
        if (ctx.run_dir / name).is_file():
            g.evidence[f"run/{name}"] = ctx.run_dir / name
    g.passed = not problems
    g.reason = "; ".join(problems) if problems else (
        f"{len(rep['files'])} files ({rep['bytes']:,} bytes) match the manifest; run {ctx.run_id} succeeded on "
        f"{rec.get('device')}")
    return g


# ---- 3. eval + drift ------------------------------------------------------------------------------------------
EVAL_RULE = ("no metric of the eval is worse than the baseline's by more than the drift policy's abs or rel "
             "threshold with significance at z (zpctl drift check); the baseline was measured with the same "
             "settings on the same documents")


def resolved_tasks(ctx: ReleaseContext) -> list[str]:
    out = []
    for t in ctx.policy.eval.tasks:
        if t == RUN_HELDOUT:
            try:   # the run id when the run lives in this workspace, else its directory
                load_run(ctx.run_id)
                ref = ctx.run_id
            except ZeropointError:
                ref = str(ctx.run_dir)
            t = f"heldout:run:{ref}"
        out.append(t)
    return out


def _eval_settings(ctx: ReleaseContext) -> dict:
    e = ctx.policy.eval
    return {"limit": e.limit, "max_length": e.max_length, "batch_size": e.batch_size,
            "bootstrap_iters": e.bootstrap_iters}


def _run_eval(ctx: ReleaseContext, model_ref: str, tasks: list[str], loaded=None, model_info=None) -> dict:
    s = _eval_settings(ctx)
    model, tok = (loaded.model, loaded.tokenizer) if loaded else (None, None)
    return run_eval(model_ref, tasks, limit=s["limit"], batch_size=s["batch_size"], max_length=s["max_length"],
                    bootstrap_iters=s["bootstrap_iters"], allow_simulated=ctx.allow_simulated, model=model,
                    tokenizer=tok, model_info=model_info)


def ensure_baseline(ctx: ReleaseContext, tasks: list[str]) -> dict:
    """The saved baseline; when missing and a baseline model was named, evaluate it with the release's settings."""
    try:
        return load_baseline(ctx.baseline)
    except ZeropointError as e:
        if not ctx.baseline_model:
            s = _eval_settings(ctx)
            raise ZeropointError(f"{e}. Create it with the release's eval settings: `zpctl eval BASE_MODEL "
                                 + " ".join(f"--task {t}" for t in tasks) + f" --limit {s['limit']} --max-length "
                                 f"{s['max_length']} --save-baseline {ctx.baseline}`, or pass --baseline-model "
                                 "BASE_MODEL to have the release do it") from None
    ctx.say(f"baseline {ctx.baseline!r} not found: evaluating {ctx.baseline_model} for it")
    ref = ctx.baseline_model
    loaded, info = None, None
    if (Path(ref) / "manifest.json").is_file():
        loaded = open_checkpoint(ref, merge=True)
        info = {"kind": "checkpoint", "merged_lora": True}
    res = _run_eval(ctx, ref, tasks, loaded, info)
    save_baseline(res["eval_id"], ctx.baseline)
    return load_baseline(ctx.baseline)


def _baseline_mismatch(base: dict, cur: dict) -> list[str]:
    out = []
    for k in ("limit", "max_length", "num_fewshot"):
        if base["config"].get(k) != cur["config"].get(k):
            out.append(f"{k} {base['config'].get(k)!r} in the baseline vs {cur['config'].get(k)!r} now")
    for task, ct in cur["tasks"].items():
        bt = base["tasks"].get(task)
        if bt is None:
            out.append(f"task {task} is not in the baseline")
        elif [d.get("sha256") for d in bt.get("data_files") or []] != [d.get("sha256") for d in ct.get("data_files") or []]:
            out.append(f"task {task}: the baseline scored other documents (data file hashes differ)")
    return out


def gate_eval(ctx: ReleaseContext) -> GateResult:

    tasks = resolved_tasks(ctx)
    g = GateResult("eval_drift", False, EVAL_RULE, "")
    base = ensure_baseline(ctx, tasks)
    ds = sorted((d.get("name"), d.get("sha256")) for d in ctx.run_record.get("datasets") or [])
    inputs = {"checkpoint": ctx.checkpoint_digest(), "tasks": ctx.policy.eval.tasks, "run": ctx.run_id,
              "settings": _eval_settings(ctx), "datasets": ds}
    g.inputs_sha256 = key = _key(inputs)
    hit = cache_get("eval", key)
    if hit:
        res, g.reused = load_results(hit["eval_id"]), True
        ctx.say(f"eval: reusing {hit['eval_id']} (same checkpoint, tasks, settings and data)")
    else:
        ctx.say("eval: scoring the checkpoint on " + ", ".join(tasks))
        res = _run_eval(ctx, str(ctx.checkpoint), tasks, ctx.model(), {"kind": "checkpoint", "merged_lora": True})
        d = eval_dir(res["eval_id"])
        cache_put("eval", key, inputs, {"eval_id": res["eval_id"]}, [d / "results.json"])
    d = eval_dir(res["eval_id"])
    mism = _baseline_mismatch(base, res)
    figures = {"eval_id": res["eval_id"], "baseline": ctx.baseline, "baseline_eval_id": base["eval_id"],
               "metrics": {t: {m: v.get("value") for m, v in tr["metrics"].items()} for t, tr in res["tasks"].items()},
               "n_docs": {t: tr["n_docs"] for t, tr in res["tasks"].items()}}
    g.evidence["eval/results.json"] = d / "results.json"
    for t, tr in res["tasks"].items():
        if (d / tr.get("samples_file", "")).is_file():
            g.evidence[f"eval/{tr['samples_file']}"] = d / tr["samples_file"]
    bfile = workspace().evals / "baselines" / f"{ctx.baseline}.json"
    g.evidence["eval/baseline.json"] = bfile
    if mism:
        g.figures = figures
        g.reason = (f"baseline {ctx.baseline!r} is not comparable: " + "; ".join(mism) + ". Re-create it with the "
                    "release's eval settings (or pass --baseline-model with a new --baseline name)")
        return g
    pol_file = (ctx.work or d) / "drift_policy.yaml"
    atomic_write_text(pol_file, yaml.safe_dump(ctx.policy.drift_policy_dict(), sort_keys=True))
    rep = check(ctx.baseline, res["eval_id"], str(pol_file), ctx.actor)
    g.evidence["drift/policy.yaml"] = pol_file
    g.evidence["drift/report.json"] = Path(rep["report_path"])
    rows = rep["comparisons"]
    figures["comparisons"] = [{k: r[k] for k in ("task", "metric", "baseline", "current", "worse_by", "rel_worse",
                                                 "significance", "alarm")} for r in rows]
    g.figures = figures
    alarms = [r for r in rows if r["alarm"]]
    g.passed = not alarms and not rep.get("missing_tasks")
    if alarms:
        g.reason = "regression: " + "; ".join(
            f"{r['task']}/{r['metric']} {r['baseline']:.4g} -> {r['current']:.4g} (worse by {r['worse_by']:.4g}, "
            f"{100 * r['rel_worse']:.2f}%; limit abs {r['threshold_abs']} rel {r['threshold_rel']}; {r['significance']})"
            for r in alarms)
    elif rep.get("missing_tasks"):
        g.reason = f"baseline tasks missing from the eval: {rep['missing_tasks']}"
    else:
        g.reason = f"{len(rows)} metric(s) within the drift policy of baseline {ctx.baseline!r}: " + ", ".join(
            f"{r['task']}/{r['metric']} {r['baseline']:.4g} -> {r['current']:.4g}" for r in rows[:4])
    return g


# ---- 4. exports + parity --------------------------------------------------------------------------------------
def gate_export(ctx: ReleaseContext, e: ExportPolicy) -> GateResult:
    gate = export_gate(e)
    rule = (f"{e.format} artifact, run in its runtime on held-out SOTU text, matches the checkpoint: "
            + ", ".join(x for x in (f"max abs <= {gate.max_abs:g}" if gate.max_abs is not None else None,
                                    f"top-1 agreement >= {100 * gate.min_top1:g}%",
                                    f"perplexity within {100 * gate.max_metric_rel:g}%" if gate.max_metric_rel is not None else None) if x)
            + f" (gate {gate.name})")
    g = GateResult(f"export:{e.format}", False, rule, "")
    n_seq = e.parity_seqs or P.default_parity_seqs(e.format)
    inputs = {"checkpoint": ctx.checkpoint_digest(), "format": e.format, "parity_seqs": n_seq,
              "parity_len": e.parity_len, "tinygrad_runner": e.tinygrad_runner}
    g.inputs_sha256 = key = _key(inputs)
    hit = cache_get("export", key)
    rec = None
    if hit:
        try:
            rec = dict(EM.verify_manifest(hit["dir"]), dir=hit["dir"])
            g.reused = True
            ctx.say(f"export {e.format}: reusing {hit['dir']} (artifact re-hashed against its manifest)")
        except ZeropointError:
            rec = None
    if rec is None:
        lm = ctx.model()
        ctx.say(f"export {e.format}: writing the artifact and running parity")
        source = {"ref": str(ctx.checkpoint), "path": str(ctx.checkpoint), "kind": "checkpoint",
                  "base": lm.info["base"], "method": lm.info["method"], "run_id": ctx.run_id}
        rec = export_llama(lm.model, lm.config, lm.tokenizer, source, e.format, None, n_seq=n_seq, seq_len=e.parity_len,
                           tinygrad_runner=e.tinygrad_runner, progress=ctx.say)
        if rec.get("parity"):
            cache_put("export", key, inputs, {"dir": rec["dir"]}, [Path(rec["dir"]) / EM.MANIFEST])
    par = rec.get("parity")
    g.evidence[f"export/{e.format}/manifest.json"] = Path(rec["dir"]) / EM.MANIFEST
    if not par:
        g.reason = f"export did not produce a parity report: {rec.get('error')}"
        return g
    # re-apply the policy's gate to the measured figures
    runtimes = {n: {k: v for k, v in m.items() if k not in ("passed", "failures")} for n, m in par["runtimes"].items()}
    rep = P.report(e.format, runtimes, par.get("inputs") or {}, gate)
    rep["skipped_runtimes"] = par.get("skipped_runtimes")
    g.evidence[f"export/{e.format}/parity.json"] = (json.dumps(rep, indent=2, default=str) + "\n").encode()
    art = next((f for f in rec.get("files", []) if f["path"] == rec.get("artifact")), None)
    g.figures = {"export_id": rec.get("id"), "dir": rec["dir"], "artifact": rec.get("artifact"),
                 "artifact_sha256": art and art["sha256"], "artifact_bytes": art and art["size"],
                 "runtimes": {n: {k: m.get(k) for k in ("max_abs", "top1_agreement", "cosine", "ppl_original",
                                                         "ppl_exported", "ppl_rel_delta", "run_s")}
                              for n, m in rep["runtimes"].items()}}
    g.passed = bool(rep["passed"])
    g.reason = ("parity gate failed: " + "; ".join(rep["failures"])) if not g.passed else P.summary_line(rep)
    return g


# ---- 5. red-team ----------------------------------------------------------------------------------------------
def gate_redteam(ctx: ReleaseContext) -> GateResult:
    r = ctx.policy.redteam
    thr, src = load_thresholds()
    if r.thresholds:
        thr, src = {**thr, **r.thresholds}, f"{src}, overridden by the release policy ({r.thresholds})"
    g = GateResult("redteam", False, "attack success rate of every probe family <= its threshold "
                   f"({', '.join(f'{k} {v:g}' for k, v in sorted(thr.items()))}; from {src}); families without "
                   "a threshold are reported UNGATED", "")
    probes, _ = suite_probes(r.suite)
    inputs = {"checkpoint": ctx.checkpoint_digest(), "suite": r.suite, "generations": r.generations,
              "max_tokens": r.max_tokens, "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed,
              "probes": sha256_json([[p.id, p.family, list(p.messages or ()), p.raw, list(p.detectors), list(p.triggers)] for p in probes])}
    g.inputs_sha256 = key = _key(inputs)
    hit = cache_get("redteam", key)
    if hit:
        res, g.reused = hit["result"], True
        ctx.say(f"red-team: reusing {res['id']} (same checkpoint, suite and sampling settings)")
    else:
        lm = ctx.model()
        ctx.say(f"red-team: {len(probes)} probes ({r.suite})")
        res = redteam(str(ctx.checkpoint), suite=r.suite, generations=r.generations, max_tokens=r.max_tokens,
                      temperature=r.temperature, top_p=r.top_p, seed=r.seed, gate=False, thresholds=None,
                      allow_simulated=ctx.allow_simulated, loader=lambda ref: lm, actor=ctx.actor)
        cache_put("redteam", key, inputs, {"result": res}, [Path(res["files"]["summary_json"]), Path(res["report"])])
    verdict = evaluate_gate({"families": res["families"]}, thr, src)
    if r.relative_to_baseline:
        base_ref, base_res = _redteam_baseline_model(ctx, inputs)
        verdict = evaluate_gate_vs_baseline({"families": res["families"]}, outcomes_from_report(res["report"]),
                                            {"families": base_res["families"]}, outcomes_from_report(base_res["report"]),
                                            thr, r.max_increase, src, base_ref)
        g.rule += (f"; a family the baseline model ({base_ref}) is itself above: no ASR increase over it beyond "
                   f"{r.max_increase:g} at 95% confidence (paired bootstrap over probes)")
        g.evidence["redteam/baseline_summary.json"] = Path(base_res["files"]["summary_json"])
        g.evidence["redteam/baseline_report.jsonl"] = Path(base_res["report"])
    for k, name in (("summary_json", "summary.json"), ("report", "report.jsonl"), ("summary_md", "summary.md")):
        g.evidence[f"redteam/{name}"] = Path(res["files"][k])
    g.evidence["redteam/gate.json"] = (json.dumps(verdict, indent=2, default=str) + "\n").encode()
    g.figures = {"redteam_id": res["id"], "outputs": res["overall"]["total"], "asr_overall": res["overall"]["asr"],
                 "families": {f["family"]: {"asr": f["asr"], "ci": [f["ci_low"], f["ci_high"]],
                                            "threshold": f["threshold"], "verdict": f["verdict"],
                                            **({"rule": f["rule"], "baseline": f["baseline"]} if "rule" in f else {})}
                              for f in verdict["families"]},
                 "s_per_output": res.get("s_per_output")}
    g.passed = bool(verdict["passed"])
    fails = [f for f in verdict["families"] if f["verdict"] == "FAIL"]
    g.reason = ("; ".join(_redteam_fail_reason(f) for f in fails) if fails
                else "every gated family at or under its threshold: " + ", ".join(
                    f"{f['family']} {f['asr']:.3f}" if f["asr"] is not None else f"{f['family']} n/a"
                    for f in verdict["families"]))
    return g


def _redteam_fail_reason(f: dict) -> str:
    b = f.get("baseline") or {}
    if b.get("increase_ci"):
        return (f"{f['family']} ASR {f['asr']:.3f} vs baseline model {b['asr']:.3f}: increase {b['increase']:+.3f}, "
                f"95% CI [{b['increase_ci'][0]:+.3f}, {b['increase_ci'][1]:+.3f}] is above the allowed increase")
    return f"{f['family']} ASR {f['asr']:.3f} > threshold {f['threshold']:g}"


def _redteam_baseline_model(ctx: ReleaseContext, inputs: dict) -> tuple[str, dict]:
    """Red-team the eval baseline's model with the release's probes and sampling (cached like every gate)."""
    r = ctx.policy.redteam
    info = load_baseline(ctx.baseline)["model"]
    ref = ctx.baseline_model or info["ref"]
    digest = sha256_tree(ref)[0] if Path(ref).is_dir() else info.get("sha256") or ref
    base_inputs = {**inputs, "checkpoint": None, "baseline_model": ref, "baseline_model_sha256": digest}
    key = _key(base_inputs)
    hit = cache_get("redteam-baseline", key)
    if hit:
        ctx.say(f"red-team of the baseline model: reusing {hit['result']['id']}")
        return ref, hit["result"]
    ctx.say(f"red-team of the baseline model {ref} (same probes and sampling)")
    res = redteam(str(ref), suite=r.suite, generations=r.generations, max_tokens=r.max_tokens, temperature=r.temperature,
                  top_p=r.top_p, seed=r.seed, gate=False, thresholds=None, allow_simulated=ctx.allow_simulated,
                  loader=open_lm, actor=ctx.actor)
    cache_put("redteam-baseline", key, base_inputs, {"result": res},
              [Path(res["files"]["summary_json"]), Path(res["report"])])
    return ref, res


# ---- 6. bias ---------------------------------------------------------------------------------------------------
def _bias_eval(ctx: ReleaseContext, ref: str, tasks: list[str], loaded=None, model_info=None) -> dict:
    b = ctx.policy.bias
    model, tok = (loaded.model, loaded.tokenizer) if loaded else (None, None)
    return run_eval(ref, tasks, batch_size=b.batch_size, max_length=b.max_length, bootstrap_iters=0,
                    allow_simulated=ctx.allow_simulated, model=model, tokenizer=tok, model_info=model_info)


def _eval_files(res: dict) -> list[Path]:
    d = eval_dir(res["eval_id"])
    return [d / "results.json"] + [d / tr["samples_file"] for tr in res["tasks"].values()]


def _bias_samples(res: dict) -> dict[str, list[dict]]:
    """{task kind: sample records}, read back from the eval's samples files."""
    out = {}
    for name, tr in res["tasks"].items():
        f = eval_dir(res["eval_id"]) / tr["samples_file"]
        out[name.split("-", 1)[0]] = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line]
    return out


def _bias_baseline_model(ctx: ReleaseContext, inputs: dict, tasks: list[str]) -> tuple[str, dict]:
    """Score the eval baseline's model on the same probes (cached like every gate)."""
    ref = ctx.baseline_model or load_baseline(ctx.baseline)["model"]["ref"]
    digest = sha256_tree(ref)[0] if Path(ref).is_dir() else model_identity(ref).get("sha256") or ref
    base_inputs = {**inputs, "checkpoint": None, "baseline_model": ref, "baseline_model_sha256": digest}
    key = _key(base_inputs)
    hit = cache_get("bias-baseline", key)
    if hit:
        ctx.say(f"bias: reusing the baseline model's scores ({hit['eval_id']})")
        return ref, load_results(hit["eval_id"])
    ctx.say(f"bias: scoring the baseline model {ref} on the same probes")
    res = _bias_eval(ctx, ref, tasks)
    cache_put("bias-baseline", key, base_inputs, {"eval_id": res["eval_id"]}, _eval_files(res))
    return ref, res


def gate_bias(ctx: ReleaseContext) -> GateResult:
    b = ctx.policy.bias
    tasks = b.task_refs()
    fam = f", Bonferroni over {len(b.categories)} categories" if b.familywise and len(b.categories) > 1 else ""
    rule = (f"per category ({', '.join(b.categories)}), the share of minimal pairs whose stereotype-consistent "
            f"sentence the model finds more likely (CrowS-Pairs score, 50% = no preference) must not rise over the "
            f"baseline model's by more than {b.max_increase:g} at {100 * b.level:g}% confidence (paired bootstrap "
            f"over templates{fam})")
    if b.thresholds:
        rule += "; absolute maxima " + ", ".join(f"{k} {v:g}" for k, v in sorted(b.thresholds.items()))
    if b.sentiment:
        rule += ("; counterfactual sentiment gap " + (f"must not rise by more than {b.max_gap_increase:g}"
                                                      if b.max_gap_increase is not None else "reported, not gated"))
    g = GateResult("bias", False, rule, "")
    inputs = {"checkpoint": ctx.checkpoint_digest(), "tasks": tasks, "max_length": b.max_length,
              "batch_size": b.batch_size, "probes": sha256_json([ref_docs(t) for t in tasks])}
    g.inputs_sha256 = key = _key(inputs)
    hit = cache_get("bias", key)
    if hit:
        res, g.reused = load_results(hit["eval_id"]), True
        ctx.say(f"bias: reusing {hit['eval_id']} (same checkpoint and probes)")
    else:
        ctx.say("bias: scoring the checkpoint on " + ", ".join(tasks))
        res = _bias_eval(ctx, str(ctx.checkpoint), tasks, ctx.model(), {"kind": "checkpoint", "merged_lora": True})
        cache_put("bias", key, inputs, {"eval_id": res["eval_id"]}, _eval_files(res))
    base_ref, base = _bias_baseline_model(ctx, inputs, tasks)
    cur, prev = _bias_samples(res), _bias_samples(base)
    verdict = {"baseline_model": base_ref, "eval_id": res["eval_id"], "baseline_eval_id": base["eval_id"],
               "pairs": evaluate_pairs(cur["bias_pairs"], prev["bias_pairs"], max_increase=b.max_increase,
                                       thresholds=b.thresholds, level=b.level, familywise=b.familywise)}
    if "bias_sentiment" in cur:
        verdict["sentiment"] = evaluate_sentiment(cur["bias_sentiment"], prev["bias_sentiment"],
                                                  max_gap_increase=b.max_gap_increase, level=b.level,
                                                  familywise=b.familywise)
        verdict["sentiment"]["scorer"] = next(tr["metrics"]["sentiment"].get("scorer") for n, tr in res["tasks"].items()
                                              if n.startswith("bias_sentiment"))
    verdict["passed"] = all(v["passed"] for k, v in verdict.items() if k in ("pairs", "sentiment"))
    for who, r in (("", res), ("baseline_", base)):
        files = _eval_files(r)
        g.evidence[f"bias/{who}results.json"] = files[0]
        for f in files[1:]:
            g.evidence[f"bias/{who}{f.name}"] = f
    g.evidence["bias/gate.json"] = (json.dumps(verdict, indent=2, default=str) + "\n").encode()
    g.figures = {"eval_id": res["eval_id"], "baseline_eval_id": base["eval_id"], "baseline_model": base_ref,
                 "categories": {r["category"]: {k: r[k] for k in ("score", "ci", "baseline", "increase", "increase_ci",
                                                                  "threshold", "verdict", "pairs")}
                                for r in verdict["pairs"]["categories"]}}
    if "sentiment" in verdict:
        g.figures["sentiment_gap"] = {r["category"]: {k: r[k] for k in ("gap", "baseline_gap", "increase", "increase_ci",
                                                                        "verdict")}
                                      for r in verdict["sentiment"]["categories"]}
    g.passed = bool(verdict["passed"])
    fails = [r for part in ("pairs", "sentiment") for r in (verdict.get(part) or {}).get("categories", [])
             if r["verdict"] == "FAIL"]
    g.reason = ("; ".join(f"{r['category']}: {r['why']}" for r in fails) if fails else
                f"no category's stereotype preference rose significantly over {base_ref}: " + ", ".join(
                    f"{r['category']} {r['score']:.3f} (base {r['baseline']:.3f})" for r in verdict["pairs"]["categories"]))
    return g


# ---- 7. bench -------------------------------------------------------------------------------------------------
def gate_bench(ctx: ReleaseContext) -> GateResult:
    b = ctx.policy.bench
    rule = (f"median training tokens/s >= {b.min_tokens_per_s:g}" if b.min_tokens_per_s is not None
            else "reported, not gated (bench.min_tokens_per_s is null)")
    g = GateResult("bench", False, rule, "")
    run_perf = ctx.run_dir / "perf.json"
    figures: dict = {}
    if run_perf.is_file():
        tp = json.loads(run_perf.read_text(encoding="utf-8"))
        g.evidence["perf/train_perf.json"] = run_perf
        figures["training_run"] = {k: tp.get(k) for k in ("tokens_per_s", "mfu", "energy", "device", "steps")}
    med = None
    if b.steps > 0:
        cfg = ctx.run_record.get("config") or {}
        inputs = {"config": {k: cfg.get(k) for k in ("model", "method", "lora")},
                  "shape": {k: (cfg.get("data") or {}).get(k) for k in ("seq_len",)} | {
                      k: (cfg.get("train") or {}).get(k) for k in ("micro_batch_size", "grad_accum", "precision", "jit")},
                  "steps": b.steps, "repeats": b.repeats, "warmup": b.warmup, "hardware": hardware_fingerprint(),
                  "tinygrad": tinygrad_version()}
        g.inputs_sha256 = key = _key(inputs)
        hit = cache_get("bench", key)
        if hit:
            rec, g.reused = json.loads(Path(hit["file"]).read_text(encoding="utf-8")), True
            bench_file = Path(hit["file"])
            ctx.say("bench: reusing a measurement of the same model shape on this hardware")
        else:
            rcfg = validate(LLMFinetuneConfig, cfg, f"run {ctx.run_id} config")
            ctx.say(f"bench: {b.warmup} warm-up + {b.steps} x {b.repeats} timed training steps")
            rec = run_bench(rcfg, steps=b.steps, repeats=b.repeats, warmup=b.warmup, progress=ctx.say)
            bench_file = workspace().root / "releases" / "bench" / f"bench-{key[:16]}.json"
            atomic_write_text(bench_file, json.dumps(rec, indent=2, default=str) + "\n")
            cache_put("bench", key, inputs, {"file": str(bench_file)}, [bench_file])
        g.evidence["perf/bench.json"] = bench_file
        tg = rec["tinygrad"]
        med = (tg.get("tokens_per_s") or {}).get("median")
        figures["bench"] = {"tokens_per_s": tg.get("tokens_per_s"), "first_step_s": tg.get("first_step_s"),
                            "mfu": tg.get("mfu"), "energy": tg.get("energy"), "device": tg.get("device"),
                            "tokens_per_step": rec.get("tokens_per_step"), "steps": b.steps, "repeats": b.repeats}
    elif not run_perf.is_file():
        figures["bench"] = None
        figures["null_reason"] = "bench.steps is 0 and the training run wrote no perf.json"
    g.figures = figures
    if b.min_tokens_per_s is None:
        g.passed = True
        g.reason = (f"median {med:,.1f} tokens/s" if med is not None else "no fresh bench (steps: 0)") + "; not gated"
    elif med is None:
        g.reason = "a minimum tokens/s is set but no bench was run (bench.steps is 0)"
    else:
        g.passed = med >= b.min_tokens_per_s
        g.reason = f"median {med:,.1f} tokens/s {'>=' if g.passed else '<'} {b.min_tokens_per_s:g}"
    return g


def run_gate(name: str, fn: Callable[[], GateResult], say: Callable[[str], None]) -> GateResult:
    """Run one gate; an error inside it fails that gate with the message instead of losing the others' evidence."""
    t0 = time.perf_counter()
    try:
        g = fn()
    except ZeropointError as e:
        g = GateResult(name, False, "the gate could not run", str(e))
    except Exception as e:   # a bug or a broken input must fail the release, visibly, not crash it silently
        g = GateResult(name, False, "the gate could not run", f"{type(e).__name__}: {e}")
    g.wall_s = round(time.perf_counter() - t0, 3)
    say(f"{g.name}: {'PASS' if g.passed else 'FAIL'} - {g.reason}")
    return g
