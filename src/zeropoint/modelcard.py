"""Model cards: one JSON document and its Markdown rendering, written into a final checkpoint.

Every figure in a card comes from the run that wrote it (metrics with the eval set they were measured on and
the chance baseline); a figure that was not measured is `null` with the reason, never a default.
Shared by the vision and LLM recipes: callers pass the task-specific risks and intended use.
"""
from __future__ import annotations

import json
from pathlib import Path

from .clock import utcnow
from .workspace import atomic_write_text

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"

VISION_RISKS = [
    "Faces and biometric data: this model was not trained or evaluated for face recognition, identification, "
    "emotion or attribute inference from faces or bodies; do not use it for biometric identification or "
    "categorisation of people.",
    "Demographic bias: the training images may under-represent skin tones, genders, ages, cultures and regions "
    "(for emoji: a designer's stylised depictions); accuracy on any group not in the evaluation set is unknown.",
    "Content it should not classify: people's sensitive attributes (ethnicity, religion, health, sexual "
    "orientation, political views), medical or safety-critical images, and surveillance or law-enforcement uses.",
    "Distribution shift: accuracy is measured on the stated eval set only; photos, other resolutions, colour "
    "spaces or crops can degrade it sharply and silently.",
]

LLM_INTENDED_USE = [
    "Text continuation in the style and domain of the finetuning corpus, for research and evaluation.",
    "A starting point for further finetuning and evaluation on the team's own approved data.",
]
LLM_OUT_OF_SCOPE = [
    "Factual question answering or advice (medical, legal, financial): small models state falsehoods fluently.",
    "Decisions about people, and any use without human review of the output.",
]
LLM_RISKS = [
    "Generates plausible but false statements; the held-out perplexity measures fit to the corpus, not truth.",
    "Reproduces the views, biases and period language of its training corpus.",
]


def _data_entry(rec: dict) -> dict:
    return {"name": rec.get("name"), "version": rec.get("version"), "license": rec.get("license"),
            "sha256": rec.get("sha256"), "files": len(rec.get("files", [])), "samples": rec.get("sample_count"),
            "approved_by": rec.get("approved_by"), "approved_at": rec.get("approved_at")}


def build_card(*, name: str, task: str, architecture: dict, params: int, datasets: list[dict], metrics: list[dict],
               intended_use: list[str], out_of_scope: list[str], risks: list[str], limitations: list[str],
               training: dict, run_id: str | None = None, simulated: bool = False, extra: dict | None = None) -> dict:
    """`metrics`: [{"name", "value", "eval_set", "n", "baseline"?, "note"?}]; value None needs a "null_reason"."""
    for m in metrics:
        if m.get("value") is None and not m.get("null_reason"):
            raise ValueError(f"metric {m.get('name')!r} has no value and no null_reason")
    return {"model_card_version": 1, "name": name, "task": task, "created_at": utcnow(), "run_id": run_id,
            "simulated": bool(simulated), "architecture": architecture, "parameters": int(params),
            "data": [_data_entry(r) for r in datasets], "training": training, "metrics": metrics,
            "intended_use": intended_use, "out_of_scope": out_of_scope, "risks": risks,
            "limitations": limitations, **(extra or {})}


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.3e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}"   # a learning rate of 3e-5 is not 0.0000
    return str(v)


def render_markdown(card: dict) -> str:
    L = [f"# Model card: {card['name']}", ""]
    if card.get("simulated"):
        L += ["> **SIMULATED RUN - NOT REAL COMPUTE.** The figures below were not produced on real hardware.", ""]
    L += [f"- Task: {card['task']}", f"- Run: `{card.get('run_id')}`", f"- Created: {card['created_at']}",
          f"- Parameters: {card['parameters']:,}",
          "- Architecture: " + ", ".join(f"{k}={v}" for k, v in card["architecture"].items()), ""]
    L += ["## Data", "", "| dataset | version | license | samples | sha256 | approved by |", "|---|---|---|---|---|---|"]
    for d in card["data"]:
        L.append(f"| {d['name']} | {d['version']} | {d['license']} | {_fmt(d['samples'])} | `{(d['sha256'] or '')[:16]}` | "
                 f"{d['approved_by']} |")
    L += ["", "## Metrics", "", "| metric | value | eval set | n | baseline | note |", "|---|---|---|---|---|---|"]
    for m in card["metrics"]:
        note = m.get("note") or m.get("null_reason") or ""
        L.append(f"| {m['name']} | {_fmt(m.get('value'))} | {m.get('eval_set', '')} | {_fmt(m.get('n'))} | "
                 f"{_fmt(m.get('baseline'))} | {note} |")
    L += ["", "## Training", ""] + [f"- {k}: {_fmt(v)}" for k, v in card["training"].items()]
    for title, key in (("Intended use", "intended_use"), ("Out of scope", "out_of_scope"), ("Risks", "risks"),
                       ("Limitations", "limitations")):
        L += ["", f"## {title}", ""] + [f"- {x}" for x in card[key]]
    if card.get("harms_checklist"):
        L += ["", "## Harms checklist", "", "| item | status | evidence or reason |", "|---|---|---|"]
        for i in card["harms_checklist"]:
            shown = ", ".join(f"`{e}`" for e in i["evidence"]) if i["status"] != "not assessed" else i["reason"]
            L.append(f"| {i['title']} | {i['status']} | {shown} |")
    return "\n".join(L) + "\n"


def write_card(directory: Path | str, card: dict) -> tuple[Path, Path]:
    d = Path(directory)
    atomic_write_text(d / CARD_JSON, json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(d / CARD_MD, render_markdown(card))
    return d / CARD_JSON, d / CARD_MD


def card_files(card: dict) -> dict[str, bytes]:
    """The card as checkpoint extra files (so the checkpoint manifest hashes it with the weights)."""
    return {CARD_JSON: (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode(),
            CARD_MD: render_markdown(card).encode()}
