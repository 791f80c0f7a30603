"""Counterfactual bias probes written for this project (CC0-1.0): minimal pairs for the CrowS-Pairs-style
stereotype score (`bias_pairs`) and group-swapped prompts for the counterfactual sentiment gap (`bias_sentiment`).

The packs are YAML data beside this module (`pairs/<category>.yaml`, `prompts.yaml`; README.md says how they were
written and reviewed). `build_task(ref)` expands them into the harness's format (JSONL documents and an lm-eval
style task YAML under `evals/_tasks/`), so they are scored like any other task:

    zpctl eval smollm2-135m --task bias_pairs                  # all 7 categories, every pair
    zpctl eval CKPT --task bias_pairs:gender,age:8             # two categories, the first 8 pairs of each
    zpctl eval smollm2-135m --task bias_sentiment              # greedy continuations, lexicon sentiment, gaps

A pair's two sentences differ only in the group term. Each template says which side's sentence agrees with the
stereotype (`stereotype: a|b`); templates come in couples, one per side, so a model that merely prefers one
side's words scores 50%.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ...errors import ConfigError
from ...hashing import sha256_json
from ...workspace import atomic_write_text, workspace

PACK_DIR = Path(__file__).resolve().parent
PAIRS_DIR = PACK_DIR / "pairs"
PROMPTS_FILE = PACK_DIR / "prompts.yaml"
LICENSE = "CC0-1.0"
CATEGORIES = ("gender", "race_ethnicity", "religion", "age", "disability", "nationality", "occupation_gender")
TASKS = ("bias_pairs", "bias_sentiment")
PACK_KEYS = {"category", "groups", "term_sets", "fills", "templates"}
TEMPLATE_KEYS = {"id", "terms", "fill", "stereotype", "text"}
PROMPT_KEYS = {"frames", "groups"}
SLOT = re.compile(r"\{(\w+)\}")
MAX_GEN_TOKS = 16


@dataclass(frozen=True)
class Pair:
    """One minimal pair: the same template filled with the side-a and the side-b term of one term pair."""
    id: str                 # category.template[.fill].k
    category: str
    template: str           # the cluster: pairs from one template are not independent
    stereotype: str         # "a" | "b": the side whose sentence agrees with the stereotype
    term_a: str
    term_b: str
    sent_a: str
    sent_b: str

    @property
    def sent_more(self) -> str:
        return self.sent_a if self.stereotype == "a" else self.sent_b

    @property
    def sent_less(self) -> str:
        return self.sent_b if self.stereotype == "a" else self.sent_a


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    frame: str
    group: str              # the group term in this prompt
    text: str


# ---- checks every sentence of the pack passes (the automated half of the review in README.md) -----------------
_AN_EXCEPTIONS = {"one", "once", "unit", "user", "european", "university", "useful", "usual"}


def lint_sentence(s: str) -> list[str]:
    """Mechanical checks: capital start, one final full stop, no doubled spaces or stray punctuation, a/an."""
    out = []
    if not s or not s[0].isupper():
        out.append("does not start with a capital letter")
    if not s.endswith(".") or s.endswith(".."):
        out.append("does not end with exactly one full stop")
    if "  " in s or " ," in s or " ." in s or s != s.strip():
        out.append("has a doubled or stray space")
    if "{" in s or "}" in s:
        out.append("has an unfilled slot")
    for art, word in re.findall(r"\b([Aa]n?) (\w+)", s):
        vowel = word[0].lower() in "aeiou" and word.lower() not in _AN_EXCEPTIONS
        if art.lower() == "a" and vowel:
            out.append(f"'a {word}' should be 'an {word}'")
        if art.lower() == "an" and not vowel and not word.lower().startswith(("hour", "honest")):
            out.append(f"'an {word}' should be 'a {word}'")
    return out


def fill(text: str, term: str, extra: dict[str, str] | None = None, where: str = "") -> str:
    """`{x}` -> the term as written, `{X}` -> the term with a capital first letter, `{name}` -> extra[name]."""
    def sub(m):
        k = m.group(1)
        if k == "x":
            return term
        if k == "X":
            return term[:1].upper() + term[1:]
        if extra and k in extra:
            return extra[k]
        raise ConfigError(f"{where}: unknown slot {{{k}}}; use {{x}}, {{X}} or a name from the template's `fill`")
    return SLOT.sub(sub, text)


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read bias probe pack {path}: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"bias probe pack {path} must be a YAML mapping")
    return doc


def load_pairs(category: str, path: Path | None = None) -> list[Pair]:
    """A category's pairs: term index major, templates alternating between the sides, so the first N pairs of a
    category come from N different templates, half of them consistent with each side."""
    path = path or PAIRS_DIR / f"{category}.yaml"
    doc = _read(path)
    where = str(path)
    unknown = set(doc) - PACK_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(PACK_KEYS))}")
    if doc.get("category") != category:
        raise ConfigError(f"{where}: category {doc.get('category')!r} does not match the file name ({category!r})")
    sets = doc.get("term_sets") or {}
    for name, rows in sets.items():
        if not isinstance(rows, list) or not rows or not all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(t, str) and t.strip() for t in r) and r[0] != r[1]
                for r in rows):
            raise ConfigError(f"{where}: term set {name!r} must be a list of [side a term, side b term] pairs of "
                              "two different, non-empty strings")
    fills = doc.get("fills") or {}
    templates = []
    for i, t in enumerate(doc.get("templates") or []):
        tw = f"{where} template {i + 1}"
        if not isinstance(t, dict) or not {"id", "stereotype", "text"} <= set(t):
            raise ConfigError(f"{tw}: needs id, stereotype and text")
        bad = set(t) - TEMPLATE_KEYS
        if bad:
            raise ConfigError(f"{tw} ({t['id']}): unknown keys {sorted(bad)}; known: {', '.join(sorted(TEMPLATE_KEYS))}")
        if t["stereotype"] not in ("a", "b"):
            raise ConfigError(f"{tw} ({t['id']}): stereotype must be 'a' or 'b' (the side whose sentence agrees "
                              "with the stereotype)")
        ts = t.get("terms") or (next(iter(sets)) if len(sets) == 1 else None)
        if ts not in sets:
            raise ConfigError(f"{tw} ({t['id']}): term set {ts!r} is not defined (have {sorted(sets)})")
        if not {"x", "X"} & set(SLOT.findall(t["text"])):
            raise ConfigError(f"{tw} ({t['id']}): the text has no {{x}} or {{X}} slot for the group term")
        variants = [({}, t["id"])]
        for slot, fname in (t.get("fill") or {}).items():
            if fname not in fills:
                raise ConfigError(f"{tw} ({t['id']}): fill list {fname!r} is not defined (have {sorted(fills)})")
            variants = [({**v, slot: val}, f"{vid}.{val.replace(' ', '_')}") for v, vid in variants for val in fills[fname]]
        templates += [(vid, ts, t["stereotype"], t["text"], extra) for extra, vid in variants]
    ids = [t[0] for t in templates]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate template ids {dup}")
    # alternate the sides (a, b, a, b ...) in file order, so any prefix of the category is balanced
    templates = _interleave([[t for t in templates if t[2] == "a"], [t for t in templates if t[2] == "b"]])
    pairs = []
    for k in range(max(len(sets[t[1]]) for t in templates) if templates else 0):
        for tid, ts, side, text, extra in templates:
            if k >= len(sets[ts]):
                continue
            a, b = sets[ts][k]
            pw = f"{where} template {tid}"
            pairs.append(Pair(id=f"{category}.{tid}.{k}", category=category, template=f"{category}.{tid}",
                              stereotype=side, term_a=a, term_b=b, sent_a=fill(text, a, extra, pw),
                              sent_b=fill(text, b, extra, pw)))
    return pairs


def load_prompts(path: Path | None = None) -> list[Prompt]:
    """Every frame x every group term of every category, category by category."""
    path = path or PROMPTS_FILE
    doc = _read(path)
    unknown = set(doc) - PROMPT_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(PROMPT_KEYS))}")
    frames, groups = doc.get("frames") or [], doc.get("groups") or {}
    bad = [c for c in groups if c not in CATEGORIES]
    if bad:
        raise ConfigError(f"{path}: unknown categories {bad}; known: {', '.join(CATEGORIES)}")
    out = []
    for cat, terms in groups.items():
        if not isinstance(terms, list) or len(terms) < 2 or len(set(terms)) != len(terms):
            raise ConfigError(f"{path}: category {cat!r} needs at least two different group terms")
        for f in frames:
            for g in terms:
                out.append(Prompt(id=f"{cat}.{f['id']}.{g.replace(' ', '_')}", category=cat,
                                  frame=f"{cat}.{f['id']}", group=g, text=fill(f["text"], g, None, f"{path} {f['id']}")))
    return out


def group_terms(category: str, prompts: list[Prompt]) -> list[str]:
    return sorted({p.group for p in prompts if p.category == category})


def mask_words(terms: list[str]) -> list[str]:
    """The words that tell a category's group terms apart ("blind", "deaf" ... not "my" or "neighbor"): removed
    from continuations before sentiment scoring, since the lexicon rates some of them ("blind" -1.7)."""
    words = [set(t.lower().split()) for t in terms]
    common = set.intersection(*words)
    return sorted(set.union(*words) - common)


def pack_groups(category: str) -> dict:
    return dict(_read(PAIRS_DIR / f"{category}.yaml").get("groups") or {})


# ---- task references -> materialised lm-eval style tasks ---------------------------------------------------------
def is_bias_task(ref: str) -> bool:
    return ref.split(":", 1)[0] in TASKS


def parse_ref(ref: str) -> tuple[str, list[str] | None, int | None]:
    """`bias_pairs[:CATEGORIES[:N]]` -> (task, categories or None for all, N). CATEGORIES: `all` or a comma
    list. N caps the pairs per category (bias_pairs) or the frames per category (bias_sentiment)."""
    parts = ref.split(":")
    if parts[0] not in TASKS or len(parts) > 3:
        raise ConfigError(f"bad bias task {ref!r}; use bias_pairs[:CATEGORIES[:N]] or bias_sentiment[:CATEGORIES[:N]] "
                          f"with CATEGORIES `all` or a comma list of {', '.join(CATEGORIES)}")
    cats = None if len(parts) < 2 or parts[1] in ("", "all") else parts[1].split(",")
    bad = [c for c in cats or [] if c not in CATEGORIES]
    if bad:
        raise ConfigError(f"bias task {ref!r}: unknown categories {bad}; known: {', '.join(CATEGORIES)}")
    cap = None
    if len(parts) == 3:
        try:
            cap = int(parts[2])
        except ValueError:
            cap = 0
        if cap < 1:
            raise ConfigError(f"bias task {ref!r}: N must be a positive integer")
    return parts[0], cats, cap


def task_name(task: str, cats: list[str] | None, cap: int | None) -> str:
    return "-".join([task, *(cats or [])]) + (f"-n{cap}" if cap else "")


def _interleave(groups: list[list]) -> list:
    """Round-robin over categories, so `--limit N` on the whole task still spreads over every category."""
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out += [g[i] for g in groups if i < len(g)]
        i += 1
    return out


def pair_doc(p: Pair, groups: dict) -> dict:
    """A pair as the task's document: choices[0] is the stereotype-consistent sentence."""
    other = "b" if p.stereotype == "a" else "a"
    return {"id": p.id, "category": p.category, "template": p.template, "stereotype_side": p.stereotype,
            "group_more": groups.get(p.stereotype), "group_less": groups.get(other),
            "term_more": p.term_a if p.stereotype == "a" else p.term_b,
            "term_less": p.term_b if p.stereotype == "a" else p.term_a, "choices": [p.sent_more, p.sent_less]}


def pair_docs(cats: list[str] | None, cap: int | None = None) -> list[dict]:
    return _interleave([[pair_doc(p, pack_groups(c)) for p in load_pairs(c)[:cap]] for c in cats or CATEGORIES])


def prompt_docs(cats: list[str] | None, cap: int | None = None) -> list[dict]:
    prompts = load_prompts()
    cats = cats or list(dict.fromkeys(p.category for p in prompts))
    missing = [c for c in cats if not any(p.category == c for p in prompts)]
    if missing:
        raise ConfigError(f"bias_sentiment has no prompts for {missing} (the pairs cover them); "
                          f"categories with prompts: {', '.join(sorted({p.category for p in prompts}))}")
    out = []
    for c in cats:
        frames = list(dict.fromkeys(p.frame for p in prompts if p.category == c))[:cap]
        masked = mask_words(group_terms(c, prompts))
        out += [{**asdict(p), "mask_words": masked} for p in prompts if p.category == c and p.frame in frames]
    return out


PAIRS_YAML = """\
# Generated from the Zeropoint bias probe pack ({license}; src/zeropoint/evals/bias/): {n} minimal pairs, {cats}.
# choices[0] is the stereotype-consistent sentence; pct_stereotype = share of pairs where it has the higher
# log-likelihood (CrowS-Pairs score, lm-eval's crows_pairs definition; 50% = no preference).
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: ""
doc_to_choice: choices
doc_to_target: 0
target_delimiter: ""
metric_list:
  - metric: pct_stereotype
  - metric: likelihood_diff
breakdown:
  by: category
  cluster: template
  fields: [id, category, template, stereotype_side]
"""

SENTIMENT_YAML = """\
# Generated from the Zeropoint bias probe pack ({license}; src/zeropoint/evals/bias/): {n} group-swapped prompts,
# {cats}. Greedy continuations scored by the VADER lexicon (vaderSentiment 3.3.2, MIT) with the category's group
# terms removed; sentiment_gap = per frame, the mean absolute difference over pairs of groups.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: text
doc_to_target: ""
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {max_gen_toks}
metric_list:
  - metric: sentiment
    mask_field: mask_words
breakdown:
  by: category
  cluster: frame
  counterfactual: group
  fields: [id, category, frame, group]
"""


def write_task(task: str, name: str, docs: list[dict], what: str = "all categories") -> Path:
    """Write documents (JSONL) and their task YAML under evals/_tasks/<name>-<hash>/; returns the YAML path."""
    d = workspace().evals / "_tasks" / f"{name}-{sha256_json(docs)[:12]}"
    data = d / "docs.jsonl"
    atomic_write_text(data, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in docs))
    tmpl = PAIRS_YAML if task == "bias_pairs" else SENTIMENT_YAML
    yml = d / "task.yaml"
    atomic_write_text(yml, tmpl.format(license=LICENSE, n=len(docs), cats=what, name=name, data=data,
                                       max_gen_toks=MAX_GEN_TOKS))
    return yml


def ref_docs(ref: str) -> list[dict]:
    """The documents a task reference scores (what a cache of its results must be keyed on)."""
    task, cats, cap = parse_ref(ref)
    return pair_docs(cats, cap) if task == "bias_pairs" else prompt_docs(cats, cap)


def build_task(ref: str) -> Path:
    """Materialise a task reference (see `parse_ref`); returns the task YAML's path. The files depend only on the
    pack, so a baseline and a finetune scored on the same reference share their hashes."""
    task, cats, cap = parse_ref(ref)
    return write_task(task, task_name(task, cats, cap), ref_docs(ref), ", ".join(cats or ["all categories"]))


def review_listing() -> str:
    """Every pair and prompt, one per line, with lint findings: what the README's review read."""
    lines = []
    for c in CATEGORIES:
        for p in load_pairs(c):
            for s in (p.sent_a, p.sent_b):
                probs = lint_sentence(s)
                lines.append(f"{p.id}\t{'a' if s == p.sent_a else 'b'}{'*' if p.stereotype == ('a' if s == p.sent_a else 'b') else ' '}\t{s}"
                             + (f"\tLINT: {'; '.join(probs)}" if probs else ""))
    for p in load_prompts():
        lines.append(f"{p.id}\tprompt\t{p.text}")
    return "\n".join(lines) + "\n"
