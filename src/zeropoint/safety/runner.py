"""Red-team runner: every probe x K seeded generations -> detector scores -> attempts and summary.

`run_probes` is model-agnostic: it takes `respond(probe, seed) -> (prompt_text, reply)`. `model_responder`
builds that from a Zeropoint model (named model or checkpoint) with its chat template and seeded sampling;
`redteam()` wires it all up with run evidence, the report files, the gate, the audit log and the model card.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..clock import utcnow
from ..errors import ZeropointError
from ..evidence import start_run
from ..governance.audit import append_event
from ..models.generate import generate
from ..models.llm import open_lm
from ..scope import require_real_compute
from ..workspace import atomic_write_text, workspace
from .canary import canary_probes
from .detectors import FAIL_AT, failed, score
from .detectors.pii_scan import scanner_name
from .gate import evaluate_gate, load_thresholds
from .probes import Probe, resolve_suite, suites
from .report import write_report
from .stats import summarise


@dataclass
class Attempt:
    """One probe with its K generations (garak's attempt: one prompt, several outputs)."""
    seq: int
    probe: Probe
    prompt: str = ""
    seeds: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    gen_ms: list[float] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)   # detector -> one score per output
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def failed_outputs(self) -> list[bool]:
        """An output fails the attempt when any of its detectors fails."""
        return [any(failed(s[i]) for s in self.scores.values()) for i in range(len(self.outputs))]


def run_probes(probes: list[Probe], respond, *, generations: int = 1, seed: int = 0, on_output=None) -> list[Attempt]:
    attempts = []
    for seq, probe in enumerate(probes):
        a = Attempt(seq=seq, probe=probe)
        for g in range(generations):
            s = seed + 1000 * seq + g  # distinct per probe and generation, reproducible from the run seed
            t0 = time.perf_counter()
            prompt, out = respond(probe, s)
            a.gen_ms.append(round((time.perf_counter() - t0) * 1000, 1))
            a.prompt, a.seeds = prompt, a.seeds + [s]
            a.outputs.append(out)
            for d in probe.detectors:
                a.scores.setdefault(d, []).append(score(d, out, probe))
            if on_output:
                on_output(a, g)
        attempts.append(a)
    return attempts


def summarise_attempts(attempts: list[Attempt], seed: int = 0) -> dict:
    """ASR with bootstrap CI per family (any detector failing fails the output), per family x detector,
    per probe x detector (garak's eval rows) and overall."""
    fam, fam_det, probe_det, overall = defaultdict(list), defaultdict(list), defaultdict(list), []
    for a in attempts:
        for i, bad in enumerate(a.failed_outputs()):
            fam[a.probe.family].append((a.probe.id, bad))
            overall.append((a.probe.id, bad))
        for d, ss in a.scores.items():
            for s in ss:
                fam_det[(a.probe.family, d)].append((a.probe.id, failed(s)))
                probe_det[(a.probe.id, d)].append((a.probe.id, failed(s)))
    return {
        "fail_at": FAIL_AT,
        "overall": summarise(overall, seed),
        "families": {f: {**summarise(v, seed), "detectors": {d: summarise(fam_det[(f, d)], seed)
                                                             for (ff, d) in sorted(fam_det) if ff == f}}
                     for f, v in sorted(fam.items())},
        "evals": [{"probe": p, "detector": d, **summarise(v, seed)} for (p, d), v in sorted(probe_det.items())],
    }


# ---- wiring: model, evidence, report, gate, audit, model card ---------------------------------------------
def model_responder(model_ref: str, *, max_tokens: int, temperature: float, top_p: float, loader=None):
    """`respond(probe, seed)` over a Zeropoint model: chat probes go through the tokenizer's chat template,
    raw probes (canary prefixes) are completed as plain text, both with seeded sampling.

    `loader(ref) -> LoadedLM` defaults to `models.llm.open_lm` (named models, GGUF, HF dirs, checkpoints);
    the release passes one that returns the model it has already opened."""
    lm = (loader or open_lm)(model_ref)
    model, tok = lm.model, lm.tokenizer
    stop_ids = tok.stop_ids()

    def respond(probe: Probe, seed: int) -> tuple[str, str]:
        if probe.raw is not None:
            text, ids = probe.raw, tok.encode(probe.raw, add_bos=tok.add_bos)
        else:
            text = tok.apply_chat_template(list(probe.messages), add_generation_prompt=True)
            ids = tok.encode(text)
        res = generate(model, tok, ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       stop_ids=stop_ids)
        return text, res.text
    return respond


def suite_probes(suite: str) -> tuple[list[Probe], dict]:
    """The suite's static probes plus one prefix-completion probe per registered canary (when exfil is in)."""
    if suite == "canary":   # only the registered canaries: the cheap training-data leakage check
        probes = canary_probes()
        if not probes:
            raise ZeropointError("no canaries are registered in this workspace; plant some with `zpctl data canary`")
        return probes, suites()["canary"]
    probes, settings = resolve_suite(suite)
    if any(p.family == "exfil" for p in probes) and suite not in {p.id for p in probes}:
        probes += canary_probes()
    return probes, settings


def record_result(model_ref: str, result: dict) -> str | None:
    """Record the verdict beside a checkpoint: `redteam.json` in the directory holding it, keyed by checkpoint
    name, newest last. Not inside it: a checkpoint's manifest lists every file and refuses extras.
    Named models and single files have no checkpoint to annotate: returns None."""
    ckpt = Path(model_ref)
    if not ckpt.is_dir():
        return None
    path = ckpt.resolve().parent / "redteam.json"
    doc = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            doc = {}
    entry = {k: result[k] for k in ("id", "suite", "generations", "ended_at", "report", "families", "gate", "simulated")}
    doc.setdefault("checkpoints", {}).setdefault(ckpt.resolve().name, []).append(entry)
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
    return str(path)


def redteam(model_ref: str, *, suite: str = "quick", generations: int | None = None, max_tokens: int | None = None,
            temperature: float = 0.7, top_p: float = 0.95, seed: int = 0, gate: bool = False,
            thresholds: dict[str, float] | None = None, allow_simulated: bool = False, respond=None,
            loader=None, on_output=None, actor: str | None = None) -> dict:
    """Run a suite against a model and write `redteam/<id>/`. Returns the summary dict (JSON-safe).

    `respond` replaces the model (used by tests of the plumbing); the run is then recorded with
    `model_ref` as given and the report says which responder produced the outputs."""

    scope = require_real_compute(allow_simulated)
    probes, st = suite_probes(suite)
    generations = int(generations or st.get("generations", 1))
    max_tokens = int(max_tokens or st.get("max_tokens", 32))
    if generations < 1 or max_tokens < 1:
        raise ZeropointError("--generations and --max-tokens must be at least 1")
    thr, thr_source = load_thresholds()
    if thresholds:
        thr, thr_source = {**thr, **thresholds}, f"{thr_source}, overridden on the command line ({thresholds})"
    settings = {"model": model_ref, "suite": suite, "generations": generations, "max_tokens": max_tokens,
                "temperature": temperature, "top_p": top_p, "seed": seed, "probes": len(probes),
                "responder": "zeropoint model (chat template, seeded sampling)" if respond is None else getattr(
                    respond, "__name__", "custom responder")}
    settings["pii_scanner"] = scanner_name()
    t0 = time.time()
    with start_run(f"redteam {model_ref} --suite {suite}", settings, kind="redteam", seed=seed, scope=scope) as run:
        load_t0 = time.time()
        respond = respond or model_responder(model_ref, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                             loader=loader)
        load_s = round(time.time() - load_t0, 2)
        gen_t0 = time.time()
        def logged(a, g):
            # evidence per output as it happens, so a long run shows progress in runs/<id>/metrics.jsonl
            run.event("output", probe=a.probe.id, generation=g, seed=a.seeds[g], gen_ms=a.gen_ms[g],
                      failed=a.failed_outputs()[g])
            if on_output:
                on_output(a, g)
        attempts = run_probes(probes, respond, generations=generations, seed=seed, on_output=logged)
        gen_s = round(time.time() - gen_t0, 2)
        summary = summarise_attempts(attempts, seed=seed)
        verdict = evaluate_gate(summary, thr, thr_source)
        out_dir = workspace().redteam / run.id
        meta = {"id": run.id, "started_at": run.record["started_at"], "ended_at": utcnow(), "settings": settings,
                "device": scope.device, "simulated": scope.simulated, "wall_s": round(time.time() - t0, 2),
                "load_s": load_s, "generate_s": gen_s, "outputs": summary["overall"]["total"],
                "s_per_output": round(gen_s / max(1, summary["overall"]["total"]), 3), "gate": verdict,
                "gate_enforced": gate}
        paths = write_report(out_dir, meta, attempts, summary)
        result = {"id": run.id, "model": model_ref, "suite": suite, "generations": generations, **{
            k: meta[k] for k in ("ended_at", "device", "simulated", "wall_s", "load_s", "generate_s", "s_per_output")},
            "report": str(paths["report"]), "files": {k: str(v) for k, v in paths.items()},
            "overall": summary["overall"], "families": {f: {k: v for k, v in s.items() if k != "detectors"}
                                                        for f, s in summary["families"].items()},
            "detectors": {f: s["detectors"] for f, s in summary["families"].items()}, "gate": verdict}
        if gate:
            ev = append_event(actor, "redteam_gate", f"model:{model_ref}",
                              {"run": run.id, "suite": suite, "report": str(paths["report"]),
                               "families": verdict["families"], "thresholds_from": thr_source},
                              outcome="pass" if verdict["passed"] else "fail")
            result["audit_seq"] = ev["seq"]
        result["model_card"] = record_result(model_ref, result)
        run.update(redteam_dir=str(out_dir), gate_passed=verdict["passed"], asr=summary["overall"]["asr"])
        run.event("redteam", outputs=summary["overall"]["total"], generate_s=gen_s, gate_passed=verdict["passed"])
    return result
