"""The eval recipe, top to bottom: load the model, load each task, build lm-eval's requests, score them in
batches, compute lm-eval's metrics, and write `evals/<eval_id>/results.json` + `samples_<task>.jsonl`.

Every eval is also a run (`runs/<eval_id>/`, kind `eval`) so its device, commit and status are recorded the
same way as training. A task that cannot run (missing data, bad template) fails the eval with its message.
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
from tinygrad import TinyJit

from ..checkpoint import latest_valid, load_checkpoint
from ..clock import utcnow
from ..data import assets
from ..data.images import load_idx_pair, normalize, resize
from ..engine import jitcache
from ..errors import ZeropointError
from ..evidence import start_run
from ..hashing import canonical_json, sha256_file, sha256_json, sha256_tree
from ..models.llm import open_lm
from ..models.vit import ViTConfig, apply_batched, to_tensors, vit_forward
from ..scope import require_real_compute
from ..workspace import atomic_write_text, workspace
from . import breakdown as BD
from . import metrics as M
from . import vision
from .bias import build_task as build_bias_task
from .bias import is_bias_task
from .heldout import build_heldout_task
from .scoring import LMScorer
from .sentiment import scorer_info, sentiment
from .tasks import Task, load_task

VISION_TASKS = {"fashion_mnist"}


class EvalError(ZeropointError):
    pass


# ---- model loading -----------------------------------------------------------------------------------------
def model_identity(ref: str) -> dict:
    """What exactly was evaluated: the file or directory behind `ref` and its SHA-256."""
    p = Path(ref)
    if not p.exists():
        named = {"smollm2-135m": assets.smollm2_gguf, "smollm2-135m-instruct": assets.smollm2_gguf}
        if ref in named:
            p = named[ref]()
    if p.is_file():
        return {"ref": ref, "path": str(p.resolve()), "sha256": sha256_file(p), "kind": "file"}
    if p.is_dir():
        digest, files = sha256_tree(p)
        return {"ref": ref, "path": str(p.resolve()), "sha256": digest, "kind": "dir", "files": len(files)}
    return {"ref": ref, "path": None, "sha256": None, "kind": "unknown"}


# ---- one task ----------------------------------------------------------------------------------------------
def _docs(task: Task, limit: int | float | None) -> list[dict]:
    docs = task.docs
    if limit is not None:
        n = math.ceil(limit * len(docs)) if isinstance(limit, float) and limit < 1 else int(limit)   # as lm-eval
        docs = docs[:n]
    if not docs:
        raise EvalError(f"task {task.name} has no documents to evaluate")
    return docs


def run_task(scorer: LMScorer, task: Task, limit=None, bootstrap_iters: int = M.BOOTSTRAP_ITERS,
             progress=None) -> tuple[dict, list[dict]]:
    """Score one task; returns ({metric: {value, stderr, ...}}, per-sample records)."""
    docs = _docs(task, limit)
    names = [m["metric"] for m in task.metrics]
    per_metric: dict[str, list] = {n: [] for n in names}
    samples = []
    ot = task.output_type
    if ot == "multiple_choice":
        ctxs = task.contexts(docs)
        pairs, spans = [], []
        for ctx, doc in zip(ctxs, docs):
            ch = task.choices(doc)
            spans.append((len(pairs), len(ch)))
            pairs += [(ctx, f"{task.target_delimiter}{c}") for c in ch]
        res = scorer.loglikelihood(pairs, progress)
        for i, (doc, ctx, (s, n)) in enumerate(zip(docs, ctxs, spans)):
            lls = [r[0] for r in res[s:s + n]]
            greedy = [r[1] for r in res[s:s + n]]
            ch = task.choices(doc)
            gold = task.gold_index(doc)
            vals, preds = M.mc_per_doc(lls, ch, gold, names, greedy)
            for k, v in vals.items():
                per_metric[k].append(v)
            samples.append({"doc_id": i, "context": ctx, "choices": ch, "gold": gold, "loglikelihoods": lls,
                            "is_greedy": greedy, **preds, **vals})
    elif ot == "loglikelihood":
        ctxs = task.contexts(docs)
        tgts = [task.target(d) for d in docs]
        res = scorer.loglikelihood([(c, t if isinstance(t, str) else str(t)) for c, t in zip(ctxs, tgts)], progress)
        for i, (ctx, t, (ll, g)) in enumerate(zip(ctxs, tgts, res)):
            vals = {k: v for k, v in {"perplexity": ll, "acc": int(g)}.items() if k in names}
            for k, v in vals.items():
                per_metric[k].append(v)
            samples.append({"doc_id": i, "context": ctx, "target": t, "loglikelihood": ll, "is_greedy": g, **vals})
    elif ot == "loglikelihood_rolling":
        texts = [task.target(d) for d in docs]
        reqs, owner = [], []
        for i, t in enumerate(texts):
            w = scorer.rolling_requests(t)
            reqs += w
            owner += [i] * len(w)
        res = scorer.loglikelihood_tokens(reqs, progress)
        lls = [0.0] * len(texts)
        ntok = [0] * len(texts)
        for i, (ll, _), (_, cont) in zip(owner, res, reqs):
            lls[i] += ll
            ntok[i] += len(cont)
        for i, t in enumerate(texts):
            vals = M.rolling_per_doc(lls[i], ntok[i], t, names)
            for k, v in vals.items():
                per_metric[k].append(v)
            samples.append({"doc_id": i, "loglikelihood": lls[i], "tokens": ntok[i], "words": M.count_words(t),
                            "bytes": M.count_bytes(t), "text_sha256": sha256_json(t)})
    elif ot == "generate_until":
        ctxs = task.contexts(docs)
        gk = task.generation_kwargs
        until = gk.get("until", [task.fewshot_delimiter])
        until = [until] if isinstance(until, str) else list(until)
        kws = {m["metric"]: m["kwargs"] for m in task.metrics}
        gens = scorer.generate_many([(ctx, until, int(gk.get("max_gen_toks", 256))) for ctx in ctxs], progress)
        for i, (ctx, doc, out) in enumerate(zip(ctxs, docs, gens)):
            gold = task.target(doc)
            if task.doc_to_choice is not None:
                gold = task.choices(doc)[gold]
            golds = gold if isinstance(gold, list) else [gold]
            vals = {}
            if "exact_match" in per_metric:
                vals["exact_match"] = 1.0 if any(M.exact_match(out, str(g), **kws["exact_match"]) for g in golds) else 0.0
            if "sentiment" in per_metric:   # lexicon score of the continuation; `mask_field` names words to drop
                vals["sentiment"] = sentiment(out, doc.get(kws["sentiment"].get("mask_field", "")))
            for k, v in vals.items():
                per_metric[k].append(v)
            samples.append({"doc_id": i, "context": ctx, "target": gold, "generation": out, **vals})
    short = [k for k, v in per_metric.items() if len(v) != len(docs)]
    if short:
        raise EvalError(f"task {task.name}: metric(s) {short} do not apply to its documents (pct_stereotype and "
                        "likelihood_diff need exactly two choices per document); remove them from metric_list")
    metrics = {}
    for m in task.metrics:
        metrics[m["metric"]] = M.aggregate(m["metric"], per_metric[m["metric"]], m["aggregation"], bootstrap_iters)
        metrics[m["metric"]]["higher_is_better"] = m["higher_is_better"]
    if "sentiment" in metrics:
        metrics["sentiment"]["scorer"] = scorer_info()
    if task.breakdown:
        BD.apply(task.breakdown, docs, per_metric, metrics, samples)
    return metrics, samples


def n_requests(task: Task, limit=None) -> int:
    docs = _docs(task, limit)
    if task.output_type == "multiple_choice":
        return sum(len(task.choices(d)) for d in docs)
    return len(docs)


# ---- the whole eval ------------------------------------------------------------------------------------------
def eval_dir(eval_id: str) -> Path:
    return workspace().evals / eval_id


def load_results(eval_id_or_path: str) -> dict:
    p = Path(eval_id_or_path)
    f = p if p.is_file() else (p / "results.json" if p.is_dir() else eval_dir(eval_id_or_path) / "results.json")
    if not f.is_file():
        raise EvalError(f"no eval results {eval_id_or_path!r} (looked for {f}); list evals under {workspace().evals}")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalError(f"{f} is not valid JSON ({e}); it may have been edited or truncated") from None


def _materialise(task_ref: str) -> str:
    if is_bias_task(task_ref):
        return str(build_bias_task(task_ref))
    if task_ref.startswith("heldout:"):
        return str(build_heldout_task(task_ref))
    return task_ref


def run_eval(model_ref: str, task_refs: list[str], *, limit=None, batch_size: int = 8, max_length: int = 2048,
             num_fewshot: int | None = None, bootstrap_iters: int = M.BOOTSTRAP_ITERS, allow_simulated=False,
             progress_factory=None, model=None, tokenizer=None, scorer: LMScorer | None = None,
             model_info: dict | None = None) -> dict:
    """Evaluate `model_ref` on each task; returns the results dict that is also written to disk.

    `model`/`tokenizer`/`scorer` let a caller reuse a loaded model; `model_info` then says what it really is
    (e.g. a perturbed copy), so the recorded identity never claims the file on disk when it was not that."""
    if not task_refs:
        raise EvalError("no tasks given; pass --task NAME_OR_FILE (shipped: mmlu_dev, fashion_mnist, bias_pairs, "
                        "bias_sentiment, heldout:DATASET, heldout:run:RUN_ID, or an lm-eval task YAML)")
    scope = require_real_compute(allow_simulated)
    lm_tasks = [t for t in task_refs if t not in VISION_TASKS]
    vis_tasks = [t for t in task_refs if t in VISION_TASKS]
    tasks = [load_task(_materialise(t), num_fewshot) for t in lm_tasks]
    cfg = {"model": model_ref, "tasks": task_refs, "limit": limit, "batch_size": batch_size,
           "max_length": max_length, "num_fewshot": num_fewshot, "bootstrap_iters": bootstrap_iters}
    datasets = [{"name": f"{t.name}:{d['split']}", "path": d["path"], "sha256": d["sha256"]}
                for t in tasks for d in t.data_files]
    with start_run(f"zpctl eval {model_ref} " + " ".join(f"--task {t}" for t in task_refs), cfg, kind="eval",
                   datasets=datasets, scope=scope) as run:
        t0 = time.time()
        ident = {**model_identity(model_ref), **(model_info or {})}
        out_dir = eval_dir(run.id)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = {"eval_id": run.id, "model": ident, "config": cfg, "config_sha256": sha256_json(cfg),
                   "device": scope.device, "simulated": scope.simulated, "simulated_reasons": list(scope.reasons),
                   "started_at": utcnow(), "tasks": {}, "lm_eval_version_matched": "0.4.13"}
        if tasks:
            if scorer is None:
                if model is None:
                    lm = open_lm(model_ref)   # named model, .gguf, HF dir, or a verified finetune checkpoint
                    model, tokenizer = lm.model, lm.tokenizer
                scorer = LMScorer(model, tokenizer, max_length=max_length, batch_size=batch_size)
            for task in tasks:
                t1 = time.time()
                bar = progress_factory(task.name, n_requests(task, limit)) if progress_factory else None
                metrics, samples = run_task(scorer, task, limit, bootstrap_iters, bar)
                wall = time.time() - t1
                _write_samples(out_dir / f"samples_{task.name}.jsonl", samples)
                results["tasks"][task.name] = {
                    "output_type": task.output_type, "metrics": metrics, "n_docs": len(samples),
                    "num_fewshot": task.num_fewshot, "task_file": task.source,
                    "task_sha256": sha256_file(task.source), "task_config_sha256": sha256_json(task.config),
                    "data_files": task.data_files, "wall_s": round(wall, 3),
                    "samples_file": f"samples_{task.name}.jsonl"}
                run.event("task_done", task=task.name, wall_s=round(wall, 3),
                          **{k: v["value"] for k, v in metrics.items()})
            results["scoring_stats"] = dict(scorer.stats)
            # cold or warm: whether the scoring forwards were loaded from $ZP_CACHE (engine/jitcache.py)
            results["warm_start"] = jitcache.summary()
            if (fan := scorer.fanout()) is not None:   # scored by Ray workers (orchestrator/ray_eval.py)
                results["fanout"] = fan
        for vt in vis_tasks:
            t1 = time.time()
            metrics, samples, info = run_vision_task(vt, model_ref, limit)
            _write_samples(out_dir / f"samples_{vt}.jsonl", samples)
            results["tasks"][vt] = {"output_type": "vision", "metrics": metrics, "n_docs": len(samples),
                                    "wall_s": round(time.time() - t1, 3), **info}
        results["ended_at"] = utcnow()
        results["wall_s"] = round(time.time() - t0, 3)
        results["run_id"] = run.id
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
        run.update(results_path=str(out_dir / "results.json"), results_sha256=sha256_file(out_dir / "results.json"))
    return results


def _write_samples(path: Path, samples: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(s, default=str) + "\n" for s in samples))


def _vit_checkpoint(ref: str) -> Path:
    """A ViT checkpoint step dir, or the newest verified one under a run dir / checkpoints dir."""
    p = Path(ref)
    if (p / "manifest.json").is_file():
        return p
    for root in (p / "checkpoints", p):
        if root.is_dir():
            found, _ = latest_valid(root)
            if found:
                return found
    raise EvalError(f"{ref} is not a ViT checkpoint (no manifest.json, no verified step-* under it); pass a "
                    "vit_classify run directory or one of its checkpoints/step-XXXXXXXX directories")


def run_vision_task(name: str, model_ref: str, limit=None, batch_size: int = 64):
    """Fashion-MNIST test split (10,000 images) through a vit_classify checkpoint: top-1/top-5 with the vision
    package's metric functions, the checkpoint's own normalisation and class names."""

    ck_path = _vit_checkpoint(model_ref)
    ck = load_checkpoint(ck_path)
    if "vit_config.json" not in ck.extra:
        raise EvalError(f"{ck_path} has no vit_config.json; it is not a vit_classify checkpoint")
    mcfg = ViTConfig.from_dict(json.loads(ck.extra["vit_config.json"]))
    classes = ck.state.get("classes")
    fm = assets.fashion_mnist_dir()
    test = load_idx_pair(fm / "t10k-images-idx3-ubyte.gz", fm / "t10k-labels-idx1-ubyte.gz", classes)
    x, y = test.images, test.labels
    if limit is not None:
        n = int(limit * len(y)) if isinstance(limit, float) and limit < 1 else int(limit)
        x, y = x[:n], y[:n]
    if x.shape[-1] != mcfg.image_size:
        x = resize(x, mcfg.image_size)
    norm = ck.state.get("normalize") or {}
    if norm:
        x = normalize(x, norm["mean"], norm["std"])
    params = to_tensors(ck.weights)
    fwd = TinyJit(lambda t: vit_forward(params, mcfg, t).realize())
    logits = apply_batched(fwd, x, batch_size)
    rep = vision.classification_report(logits, y, test.classes, (1, 5))
    metrics = {k: {"value": rep[k], "stderr": M.mean_stderr([float(v) for v in hits]) if len(y) > 1 else None,
                   "aggregation": "mean", "higher_is_better": True, "n": int(len(y))}
               for k, hits in (("top1", np.argmax(logits, 1) == y),
                               ("top5", (np.argsort(-logits, 1, kind="stable")[:, :5] == y[:, None]).any(1)))
               if isinstance(rep.get(k), float)}
    samples = [{"doc_id": i, "label": int(t), "pred": int(p)} for i, (t, p) in enumerate(zip(y, np.argmax(logits, 1)))]
    info = {"checkpoint": str(ck_path), "checkpoint_step": ck.step, "dataset": str(fm),
            "majority_baseline": rep.get("majority_baseline"), "per_class_top1": rep.get("per_class_top1")}
    return metrics, samples, info


def save_baseline(eval_id: str, name: str) -> Path:
    """Pin an eval's results as a named baseline for `drift check` (copied, with its hash)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise EvalError(f"baseline name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    res = load_results(eval_id)
    dest = workspace().evals / "baselines" / f"{name}.json"
    body = {"name": name, "eval_id": res["eval_id"], "results_sha256": sha256_json(res), "results": res}
    atomic_write_text(dest, json.dumps(body, indent=2, default=str) + "\n")
    return dest


def load_baseline(name: str) -> dict:
    f = workspace().evals / "baselines" / f"{name}.json"
    if not f.is_file():
        have = sorted(p.stem for p in (workspace().evals / "baselines").glob("*.json"))
        raise EvalError(f"no baseline {name!r}; saved baselines: {have or 'none'} "
                        "(create one with `zpctl eval ... --save-baseline NAME`)")
    body = json.loads(f.read_text(encoding="utf-8"))
    if sha256_json(body["results"]) != body.get("results_sha256"):
        raise EvalError(f"baseline {name!r} fails its hash check ({f}); it was modified after saving. "
                        "Re-create it with `zpctl eval ... --save-baseline`.")
    return body["results"]


__all__ = ["run_eval", "run_task", "load_results", "save_baseline", "load_baseline", "canonical_json"]
