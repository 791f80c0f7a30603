import json

import pytest

from zeropoint.errors import ConfigError
from zeropoint.evals.tasks import load_task, shipped_tasks


def test_shipped_mmlu_dev_has_the_282_real_questions():
    t = load_task("mmlu_dev")
    assert len(t.docs) == 282 and t.output_type == "multiple_choice"
    assert len({d["subject"] for d in t.docs}) == 57
    assert sum(len(d["choices"]) == 4 for d in t.docs) == 281   # one real question has options A-E
    d = t.docs[0]
    ctx = t.contexts([d])[0]
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert ctx.endswith("D. False, True\nAnswer:")
    assert t.choices(d) == ["A", "B", "C", "D"] and t.gold_index(d) == d["answer"]


def test_shipped_mmlu_jsonl_regenerates_identically_from_the_lm_eval_wheel(tmp_path):
    from zeropoint.data.assets import mmlu_prompts_json
    from zeropoint.evals.mmlu import SHIPPED, build_jsonl
    n = build_jsonl(mmlu_prompts_json(), tmp_path / "m.jsonl")
    assert n == 282 and (tmp_path / "m.jsonl").read_bytes() == SHIPPED.read_bytes()


def _yaml(tmp_path, body: str, data=None):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (data or [{"q": "1+1", "a": 0, "c": ["2", "3"]}] * 3)))
    p = tmp_path / "t.yaml"
    p.write_text(body)
    return str(p)


@pytest.mark.parametrize("body,needle", [
    ("task: x\ndataset_path: cais/mmlu\noutput_type: multiple_choice\n", "dataset_path"),
    ("task: x\ndataset_path: json\ndata_files: {test: missing.jsonl}\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n", "not found"),
    ("task: x\ndataset_path: json\ndata_files: {test: d.jsonl}\ntest_split: test\ndoc_to_text: !function utils.f\ndoc_to_target: a\n", "!function"),
    ("task: x\ndataset_path: json\ndata_files: {test: d.jsonl}\ntest_split: test\nprocess_docs: foo\ndoc_to_text: q\ndoc_to_target: a\n", "process_docs"),
    ("task: x\ndataset_path: json\ndata_files: {test: d.jsonl}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: a\n", "doc_to_choice"),
    ("task: x\ndataset_path: json\ndata_files: {test: d.jsonl}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: q\ndoc_to_target: a\ndoc_to_choice: c\nmetric_list: [{metric: bleu}]\n", "bleu"),
])
def test_bad_task_files_fail_with_a_message_naming_the_problem(tmp_path, body, needle):
    with pytest.raises(ConfigError, match=needle.replace("!", "")):
        load_task(_yaml(tmp_path, body))


def test_unknown_task_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="mmlu_dev"):
        load_task("no_such_task")
    assert "mmlu_dev" in shipped_tasks()


def test_contexts_and_requests_match_lm_eval_for_fewshot_and_templates(tmp_path, monkeypatch):
    """Prompt building (templates, description, seeded few-shot sampling) equals lm-eval 0.4.13's, doc by doc."""
    lm_eval = pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from zeropoint.evals.mmlu import SHIPPED
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "fs.yaml").write_text(f"""task: fs
dataset_path: json
dataset_kwargs:
  data_files:
    test: {SHIPPED}
test_split: test
output_type: multiple_choice
num_fewshot: 3
description: "About {{{{ subject }}}}:\\n"
doc_to_text: "Q: {{{{ question }}}}\\nA:"
doc_to_choice: "{{{{ choices }}}}"
doc_to_target: answer
""")
    ours = load_task(str(d / "fs.yaml"))
    docs = ours.docs[:25]
    our_pairs = [(c, " " + ch) for c, doc in zip(ours.contexts(docs), docs) for ch in ours.choices(doc)]
    from lm_eval.tasks import TaskManager, get_task_dict
    tm = TaskManager(include_path=str(d), include_defaults=False)
    task = get_task_dict(["fs"], tm)["fs"]
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=25, rank=0, world_size=1)
    theirs = [inst.args for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]
    assert our_pairs == theirs
