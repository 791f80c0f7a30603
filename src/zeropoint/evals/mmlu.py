"""The 282 real MMLU dev questions shipped inside the lm-eval wheel (flan_cot_fewshot/_cot_prompts.json),
parsed into the JSONL the shipped `mmlu_dev` task reads: {subject, question, choices, answer (index)}.
281 questions have options A-D; one (college_chemistry, EPR lines) really has five (A-E) and keeps them.

The prompts are few-shot chain-of-thought blocks ("Q: ... (A) .. (B) .. (C) .. (D) ..\nA: Let's think step
by step. ... The answer is (X)."); we keep the question, the four options and the answer letter, and drop the
reasoning so the task is plain 4-way multiple choice scored by log-likelihood, like lm-eval's `mmlu`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ZeropointError
from ..workspace import atomic_write_text

SHIPPED = Path(__file__).parent / "tasks" / "data" / "mmlu_dev.jsonl"
_OPTION = re.compile(r"\(([A-J])\)")
_ANSWER = re.compile(r"answer is \(?([A-J])\)?")


def parse_block(block: str) -> dict | None:
    """One 'Q: ...' block -> a record, or None when it is not a complete 4-option question."""
    if "\nA:" not in block:
        return None
    q_part, a_part = block.split("\nA:", 1)
    lines = q_part.strip().split("\n")
    idx = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].lstrip().startswith("(A)")), None)
    if idx is None:
        return None
    parts = _OPTION.split(" ".join(line.strip() for line in lines[idx:]))  # ['', 'A', text, 'B', text, ...]
    letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    ans = _ANSWER.findall(a_part)
    if letters != list("ABCDEFGHIJ"[:len(letters)]) or len(letters) < 2 or not ans or ans[-1] not in letters:
        return None
    return {"question": "\n".join(lines[:idx]).strip(), "choices": texts, "answer": letters.index(ans[-1])}


def parse_cot_prompts(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ZeropointError(f"cannot read MMLU prompts {path}: {e}; reinstall them with `make setup`") from None
    out = []
    for subject in sorted(data):
        text = data[subject]
        blocks = re.split(r"(?:^|\n\n)Q: ", text)[1:]
        for b in blocks:
            rec = parse_block(b)
            if rec:
                out.append({"subject": subject, **rec})
    return out


def build_jsonl(src: Path, dest: Path = SHIPPED) -> int:
    recs = parse_cot_prompts(src)
    atomic_write_text(dest, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in recs))
    return len(recs)


if __name__ == "__main__":   # regenerate the shipped data: python -m zeropoint.evals.mmlu
    from ..data.assets import mmlu_prompts_json
    print(build_jsonl(mmlu_prompts_json()), "questions ->", SHIPPED)
