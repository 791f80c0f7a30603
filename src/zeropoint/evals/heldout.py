"""Held-out perplexity on approved corpora: `--task heldout:NAME[:VAL_FRACTION[:SEED]]` or `heldout:run:RUN_ID`.

The documents come through the governance gate (only approved datasets, every byte re-hashed as it is read)
and are split exactly as the LLM recipe splits them (`data.text.split_documents`, by document), so the eval
scores the documents a finetune did NOT train on. `heldout:run:RUN_ID` reads the split settings (datasets,
format, val_fraction, seed, max_docs, max_chars) from that run's recorded config. The held-out texts are
written as JSONL with an lm-eval style `loglikelihood_rolling` YAML beside them, which is what gets evaluated.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data.text import read_documents, split_documents
from ..errors import ConfigError
from ..evidence import load_run
from ..governance.audit import default_actor
from ..governance.gate import read_verified, require_approved
from ..hashing import sha256_json
from ..workspace import atomic_write_text, workspace

DEFAULT_VAL_FRACTION, DEFAULT_SEED = 0.05, 0   # the llm_finetune recipe's defaults


def parse_spec(spec: str) -> dict:
    parts = spec.split(":")
    if parts[0] != "heldout" or len(parts) < 2 or not parts[1]:
        raise ConfigError(f"bad held-out task {spec!r}; use heldout:DATASET[:VAL_FRACTION[:SEED]] or heldout:run:RUN_ID")
    if parts[1] == "run":
        if len(parts) != 3:
            raise ConfigError(f"bad held-out task {spec!r}; use heldout:run:RUN_ID")
        cfg = load_run(parts[2]).record.get("config") or {}
        data, train = cfg.get("data") or {}, cfg.get("train") or {}
        if not data.get("datasets"):
            raise ConfigError(f"run {parts[2]} records no data.datasets; it is not an llm_finetune run")
        return {"datasets": list(data["datasets"]), "format": data.get("format", "text"),
                "val_fraction": data.get("val_fraction", DEFAULT_VAL_FRACTION), "seed": train.get("seed", DEFAULT_SEED),
                "max_docs": data.get("max_docs"), "max_chars": data.get("max_chars"), "run_id": parts[2]}
    try:
        frac = float(parts[2]) if len(parts) > 2 else DEFAULT_VAL_FRACTION
        seed = int(parts[3]) if len(parts) > 3 else DEFAULT_SEED
    except ValueError:
        raise ConfigError(f"bad held-out task {spec!r}: VAL_FRACTION must be a number and SEED an integer") from None
    return {"datasets": [parts[1]], "format": "text", "val_fraction": frac, "seed": seed, "max_docs": None,
            "max_chars": None}


def build_heldout_task(spec: str) -> Path:
    """Materialise the held-out split as JSONL + task YAML under evals/_tasks/; returns the YAML path."""
    s = parse_spec(spec)
    records = require_approved(s["datasets"], actor=default_actor(), purpose="eval:heldout", run_id=s.get("run_id"))
    by_path = {f["path"]: f for rec in records for f in rec.get("files", [])}
    docs = read_documents(sorted(by_path), s["format"], read=lambda p: read_verified(by_path[str(p)]))
    if s["max_docs"]:
        docs = docs[:s["max_docs"]]
    if s["max_chars"]:
        docs = [dict(d, text=d["text"][:s["max_chars"]]) if "text" in d else d for d in docs]
    _, val = split_documents(len(docs), s["val_fraction"], s["seed"])
    held = [{"text": docs[i]["text"], "source": docs[i].get("source")} for i in val if "text" in docs[i]]
    if not held:
        raise ConfigError(f"held-out split of {s['datasets']} has no text documents (val_fraction {s['val_fraction']})")
    name = "heldout_" + "_".join(s["datasets"])
    d = workspace().evals / "_tasks" / f"{name}-{sha256_json([s, [r.get('sha256') for r in records]])[:12]}"
    data = d / "heldout.jsonl"
    atomic_write_text(data, "".join(json.dumps(h, ensure_ascii=False) + "\n" for h in held))
    yml = d / "task.yaml"
    atomic_write_text(yml, f"""# held-out split of {', '.join(s['datasets'])}: val_fraction {s['val_fraction']}, seed {s['seed']}
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{ text }}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
  - metric: token_perplexity
""")
    return yml
