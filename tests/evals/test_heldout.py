
import pytest

from zeropoint.errors import ConfigError, ZeropointError
from zeropoint.evals.heldout import build_heldout_task, parse_spec
from zeropoint.evals.tasks import load_task


def _approved_corpus(tmp_path, n=20):
    from zeropoint.governance import manifest as M
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(n):
        (d / f"doc{i:02d}.txt").write_text(f"Document number {i}. " * 5)
    M.add_dataset(d, "corp", "CC0-1.0", "public", include=["*.txt"])
    M.scan_dataset("corp")
    M.approve("corp", "tester")


def test_heldout_split_is_the_recipes_split_of_an_approved_corpus(tmp_path):
    from zeropoint.data.text import split_documents
    _approved_corpus(tmp_path)
    task = load_task(str(build_heldout_task("heldout:corp:0.2:7")))
    _, val = split_documents(20, 0.2, 7)
    assert task.output_type == "loglikelihood_rolling" and len(task.docs) == 4
    assert [d["source"] for d in task.docs] == [f"doc{i:02d}.txt" for i in val]
    assert [m["metric"] for m in task.metrics] == ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]


def test_heldout_refuses_unapproved_data_and_bad_specs(tmp_path):
    from zeropoint.governance import manifest as M
    d = tmp_path / "c2"
    d.mkdir()
    (d / "a.txt").write_text("x")
    (d / "b.txt").write_text("y")
    M.add_dataset(d, "pending", "CC0-1.0", "public", include=["*.txt"])
    with pytest.raises(ZeropointError, match="not approved"):
        build_heldout_task("heldout:pending")
    for bad in ("heldout:", "heldout:x:abc", "heldout:run"):
        with pytest.raises(ConfigError):
            parse_spec(bad)
