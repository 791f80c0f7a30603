"""Red-team runner: every probe x K seeded generations -> detector scores -> attempts and summary.

`run_probes` is model-agnostic: it takes `respond(probe, seed) -> (prompt_text, reply)`. `model_responder`
builds that from a Zeropoint model (named model or checkpoint) with its chat template and seeded sampling;
`redteam()` wires it all up with run evidence, the report files, the gate, the audit log and the model card.
"""
from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from .detectors import FAIL_AT, failed, score
from .probes import Probe
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
