"""Task definitions in lm-evaluation-harness's YAML format (the subset that matters offline).

Supported keys: task, dataset_path (json only) + data_files, test/validation/training/fewshot_split,
output_type, doc_to_text / doc_to_target / doc_to_choice (feature name, Jinja template, or list),
description, target_delimiter, fewshot_delimiter, num_fewshot, fewshot_config.split, metric_list,
generation_kwargs (until, max_gen_toks, do_sample=false), include. Metadata keys (tag, metadata, group,
dataset_name, dataset_kwargs ...) are ignored. Anything that would change the numbers and that we do not
implement (process_docs, filter_list, custom !function hooks, ...) is an error naming the key, never a
silent approximation.

Context building follows lm-eval's `ConfigurableTask.fewshot_context` / `build_qa_turn` and its seeded
few-shot sampler (random.Random(1234), eval doc excluded when drawing from the eval split).
"""
from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateError

from ..config import load_yaml_text
from ..errors import ConfigError
from ..hashing import sha256_file
from . import breakdown as BD
from .metrics import DEFAULT_METRICS, METRICS

TASKS_DIR = Path(__file__).parent / "tasks"
OUTPUT_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice", "generate_until")
IGNORED_KEYS = {"tag", "group", "metadata", "dataset_name", "dataset_kwargs", "should_decontaminate",
                "doc_to_decontamination_query", "repeats", "fewshot_random_seed", "unsafe_code"}
UNSUPPORTED_KEYS = {"process_docs", "process_results", "filter_list", "use_prompt", "doc_to_image",
                    "doc_to_audio", "gen_prefix", "multiple_input", "custom_dataset"}
FEWSHOT_SEED = 1234


def _jinja_env():
    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


_ENV = None


def render(template: str, doc: dict) -> str:
    global _ENV
    _ENV = _ENV or _jinja_env()
    try:
        return _ENV.from_string(template).render(**doc)
    except TemplateError as e:
        raise ConfigError(f"template {template!r} failed on a document ({type(e).__name__}: {e}); "
                          f"document keys are {sorted(doc)}") from None


@dataclass
class Task:
    name: str
    output_type: str
    docs: list[dict]
    fewshot_docs: list[dict]
    doc_to_text: object
    doc_to_target: object
    doc_to_choice: object = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_from_eval_split: bool = False
    metrics: list[dict] = field(default_factory=list)   # [{metric, aggregation, higher_is_better, kwargs}]
    generation_kwargs: dict = field(default_factory=dict)
    source: str = ""                                    # yaml path
    config: dict = field(default_factory=dict)          # the resolved yaml, for hashing
    data_files: list[dict] = field(default_factory=list)  # [{path, sha256, split}]
    breakdown: dict | None = None                       # zeropoint extension: per-group scores (evals/breakdown.py)

    @property
    def features(self) -> set:
        return set(self.docs[0]) if self.docs else set()

    # --- lm-eval's doc_to_* semantics ---------------------------------------------------------------
    def text(self, doc, tmpl=None):
        t = self.doc_to_text if tmpl is None else tmpl
        if isinstance(t, int):
            return t
        if t in doc:
            return doc[t]
        s = render(t, doc)
        return ast.literal_eval(s) if s.isdigit() and self.doc_to_choice is not None else s

    def target(self, doc):
        t = self.doc_to_target
        if isinstance(t, (int, list)):
            return t
        if t in doc:
            return doc[t]
        s = render(t, doc)
        if s.isdigit() and self.doc_to_choice is not None:
            return ast.literal_eval(s)
        if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
            try:
                return ast.literal_eval(s)
            except (SyntaxError, ValueError):
                return s
        return s

    def choices(self, doc) -> list[str]:
        c = self.doc_to_choice
        if isinstance(c, list):
            return c
        if isinstance(c, dict):
            return list(c.values())
        if c in doc:
            return doc[c]
        return ast.literal_eval(render(c, doc))

    def gold_index(self, doc):
        """multiple_choice gold as lm-eval resolves it: an index, or a choice string looked up (-100 if absent)."""
        gold, choices = self.target(doc), self.choices(doc)
        if isinstance(gold, list):
            return [g if g < len(choices) else -100 for g in gold]
        if isinstance(gold, str):
            return choices.index(gold) if gold in choices else -100
        return gold if gold < len(choices) else -100

    def _qa(self, q, c, a, tgt_delim, few_delim) -> str:
        has_answer = a is not None and a != ""
        out = q + (tgt_delim if has_answer else "")
        if has_answer:
            ans = c[a] if (c and isinstance(a, int)) else a[0] if isinstance(a, list) else a
            if not isinstance(ans, str):
                raise ConfigError(f"task {self.name}: few-shot answer {a!r} is not a string; check doc_to_target")
            out += ans + few_delim
        return out

    def context(self, doc, rnd: random.Random) -> str:
        """lm-eval's plain-text fewshot_context: description, k solved examples, then the question."""
        parts = []
        if self.description:   # lm-eval: a system message with no delimiter of its own
            parts.append(doc[self.description] if self.description in doc else render(self.description, doc))
        if self.num_fewshot > 0:
            pool = self.fewshot_docs
            if self.fewshot_from_eval_split:
                drawn = rnd.sample(pool, self.num_fewshot + 1)
                shots = [x for x in drawn if x != doc][:self.num_fewshot]
                if len(shots) < self.num_fewshot:
                    shots = rnd.sample([x for x in pool if x != doc], self.num_fewshot)
            else:
                shots = rnd.sample(pool, self.num_fewshot)
            for fs in shots:
                parts.append(self._qa(self.text(fs), self.choices(fs) if self.doc_to_choice is not None else None,
                                      self.target(fs), self.target_delimiter, self.fewshot_delimiter))
        q = self.text(doc)
        if not isinstance(q, str):
            raise ConfigError(f"task {self.name}: doc_to_text gave {q!r}, not a string")
        parts.append(q)
        return "".join(parts)

    def contexts(self, docs: list[dict]) -> list[str]:
        rnd = random.Random(FEWSHOT_SEED)
        return [self.context(d, rnd) for d in docs]


def _load_yaml(path: Path, seen=()) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read task file {path}: {e}") from None
    if "!function" in text:
        raise ConfigError(f"task file {path} uses `!function` (custom Python hooks); zeropoint does not run "
                          "Python from task files. Express the prompt as a Jinja template instead.")
    cfg = load_yaml_text(text, f"task file {path}") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"task file {path} must be a YAML mapping")
    if "include" in cfg:
        inc = (path.parent / cfg.pop("include")).resolve()
        if inc in seen:
            raise ConfigError(f"task file {path}: include cycle through {inc}")
        cfg = {**_load_yaml(inc, seen + (inc,)), **cfg}
    return cfg


def find_task_file(name_or_file: str) -> Path:
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"task file {p} does not exist")
        return p
    shipped = TASKS_DIR / f"{name_or_file}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown task {name_or_file!r}; shipped tasks: {', '.join(shipped_tasks())}, fashion_mnist, "
                      "bias_pairs[:CATEGORIES[:N]], bias_sentiment[:CATEGORIES[:N]], heldout:DATASET, "
                      "heldout:run:RUN_ID (or pass a path to an lm-eval style task YAML)")


def shipped_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def _read_json_docs(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read data file {path}: {e}") from None
    try:
        if path.suffix == ".json" and text.lstrip().startswith("["):
            docs = json.loads(text)
        else:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ConfigError(f"data file {path} is not JSON lines (or a JSON list): {e}") from None
    if not all(isinstance(d, dict) for d in docs):
        raise ConfigError(f"data file {path}: every record must be a JSON object")
    return docs


def _data_files(cfg: dict, base: Path) -> dict[str, list[Path]]:
    df = cfg.get("data_files") or (cfg.get("dataset_kwargs") or {}).get("data_files")
    if df is None:
        raise ConfigError("task needs `data_files` (a JSON/JSONL path, list, or {split: path})")
    if isinstance(df, (str, list)):
        df = {"train": df}
    out = {}
    for split, files in df.items():
        files = [files] if isinstance(files, str) else files
        resolved = []
        for f in files:
            p = Path(f).expanduser()
            if not p.is_absolute():
                p = (base / p) if (base / p).exists() else Path.cwd() / p
            if not p.is_file():
                raise ConfigError(f"data file {f!r} (split {split}) not found (looked in {base} and the cwd)")
            resolved.append(p)
        out[split] = resolved
    return out


def load_task(name_or_file: str, num_fewshot: int | None = None) -> Task:
    path = find_task_file(name_or_file)
    cfg = _load_yaml(path.resolve(), (path.resolve(),))
    bad = sorted(k for k in cfg if k in UNSUPPORTED_KEYS)
    if bad:
        raise ConfigError(f"task {path}: keys {bad} are not supported by zeropoint's task subset; "
                          "remove them or pre-process the data into JSONL fields")
    if cfg.get("dataset_path", "json") != "json":
        raise ConfigError(f"task {path}: dataset_path {cfg.get('dataset_path')!r} needs a dataset hub; offline "
                          "only `dataset_path: json` with `data_files` is supported (export the split to JSONL)")
    ot = cfg.get("output_type", "generate_until")
    if ot not in OUTPUT_TYPES:
        raise ConfigError(f"task {path}: output_type {ot!r} is not one of {OUTPUT_TYPES}")
    files = _data_files(cfg, path.resolve().parent)
    split = cfg.get("test_split") or cfg.get("validation_split") or ("train" if list(files) == ["train"] else None)
    if split is None or split not in files:
        raise ConfigError(f"task {path}: evaluation split {split!r} has no data_files entry (have {list(files)})")
    docs = [d for p in files[split] for d in _read_json_docs(p)]
    # lm-eval: few-shot pool = fewshot split, else training, else validation, else the eval split; the eval doc
    # is excluded only when a fewshot split is named explicitly and equals the test split
    fs_explicit = (cfg.get("fewshot_config") or {}).get("split") or cfg.get("fewshot_split")
    fs_split = fs_explicit or cfg.get("training_split") or cfg.get("validation_split") or split
    if fs_split not in files:
        raise ConfigError(f"task {path}: few-shot split {fs_split!r} has no data_files entry (have {list(files)})")
    fs_docs = [d for p in files[fs_split] for d in _read_json_docs(p)]
    metric_list = cfg.get("metric_list") or [{"metric": m} for m in DEFAULT_METRICS[ot]]
    metrics = []
    for m in metric_list:
        name = m.get("metric") if isinstance(m, dict) else m
        if name not in METRICS:
            raise ConfigError(f"task {path}: metric {name!r} is not supported (have {sorted(METRICS)})")
        kw = {k: v for k, v in m.items() if k not in ("metric", "aggregation", "higher_is_better")} \
            if isinstance(m, dict) else {}
        metrics.append({"metric": name, "aggregation": (m.get("aggregation") if isinstance(m, dict) else None)
                        or METRICS[name][0], "higher_is_better": (m.get("higher_is_better") if isinstance(m, dict)
                                                                 else None) if isinstance(m, dict) and
                        m.get("higher_is_better") is not None else METRICS[name][1], "kwargs": kw})
    gk = dict(cfg.get("generation_kwargs") or {})
    if gk.get("do_sample"):
        raise ConfigError(f"task {path}: do_sample=true is not supported; exact-match evals are greedy")
    for k in ("doc_to_text", "doc_to_target"):
        if k not in cfg and not (ot == "loglikelihood_rolling" and k == "doc_to_text"):
            raise ConfigError(f"task {path}: missing `{k}`")
    if ot == "multiple_choice" and cfg.get("doc_to_choice") is None:
        raise ConfigError(f"task {path}: multiple_choice needs `doc_to_choice`")
    bd = BD.parse_spec(cfg["breakdown"], f"task {path}") if "breakdown" in cfg else None
    nfs = cfg.get("num_fewshot", 0) if num_fewshot is None else num_fewshot
    if nfs and not fs_docs:
        raise ConfigError(f"task {path}: num_fewshot={nfs} but no few-shot documents")
    return Task(name=cfg.get("task", path.stem), output_type=ot, docs=docs, fewshot_docs=fs_docs,
                doc_to_text=cfg.get("doc_to_text", ""), doc_to_target=cfg["doc_to_target"],
                doc_to_choice=cfg.get("doc_to_choice"), description=cfg.get("description") or "",
                target_delimiter=cfg.get("target_delimiter", " "), fewshot_delimiter=cfg.get("fewshot_delimiter", "\n\n"),
                num_fewshot=int(nfs or 0), fewshot_from_eval_split=(fs_explicit is not None and fs_explicit == cfg.get('test_split')), metrics=metrics,
                generation_kwargs=gk, source=str(path), config=cfg, breakdown=bd,
                data_files=[{"split": s, "path": str(p), "sha256": sha256_file(p)} for s, ps in files.items() for p in ps])
