import time

import numpy as np
import pytest

from zeropoint.data.assets import sotu_dir, smollm2_gguf
from zeropoint.data.text import IGNORE, DataError, build_dataset, pack, read_documents, split_documents, tokenize_doc
from zeropoint.models.gguf import read_header
from zeropoint.models.registry import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def test_tokenizer_from_gguf_header_is_fast_and_real(tok):
    t0 = time.perf_counter()
    kv = read_header(smollm2_gguf(), tensors=False)[0]
    assert time.perf_counter() - t0 < 5
    assert kv["general.architecture"] == "llama" and len(kv["tokenizer.ggml.tokens"]) == 49152
    assert tok.decode(tok.encode("The capital of France is")) == "The capital of France is"
    assert tok.eos_id == 2


def test_pack_every_token_is_a_label_once():
    seqs = [(list(range(10)), [1] * 10), (list(range(10, 17)), [1] * 7)]
    t, m = pack(seqs, 4)
    assert t.shape == (4, 5)
    assert t[:, 1:].ravel().tolist() == list(range(1, 17))     # labels cover the stream without repeats
    assert t[1, 0] == t[0, 4]                                  # consecutive samples share the boundary token


def test_split_is_by_document_and_seeded():
    tr, va = split_documents(20, 0.1, seed=0)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(20))
    assert split_documents(20, 0.1, seed=0) == (tr, va)
    assert split_documents(20, 0.1, seed=1) != (tr, va)
    with pytest.raises(DataError, match="val_fraction"):
        split_documents(3, 1.5, 0)


def test_chat_prompt_masking(tok):
    doc = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                        {"role": "assistant", "content": "Paris."}], "source": "x:1"}
    ids, mask = tokenize_doc(doc, tok)
    trained = tok.decode([i for i, k in zip(ids, mask) if k])
    prompt = tok.decode([i for i, k in zip(ids, mask) if not k])
    assert "Paris." in trained and "France" not in trained and "assistant" not in trained
    assert "Capital of France?" in prompt
    assert tok.decode(ids).startswith(tok.apply_chat_template(doc["messages"][:2], add_generation_prompt=True))


def test_jsonl_errors_name_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DataError, match=r"d.jsonl:2"):
        read_documents([f], "jsonl")
    f.write_text('{"text": "ok"}\n{"foo": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: expected"):
        read_documents([f], "jsonl")
    with pytest.raises(DataError, match="no training documents"):
        read_documents([tmp_path / "missing.json"], "text")


def test_sotu_dataset_batches_are_deterministic_and_masked(tok, tmp_path):
    files = sorted(sotu_dir().glob("*.txt"))[:12]
    docs = read_documents(files + sorted(sotu_dir().glob("*.json"))[:3], "text")
    assert len(docs) == 12                                     # .json sidecars are not training text
    ds = build_dataset(docs, tok, seq_len=32, val_fraction=0.2, seed=0, micro_batch_size=4, grad_accum=2, max_chars=4000)
    assert ds.stats["val_documents"] == 3 and ds.stats["train_documents"] == 9
    b1, b2 = ds.batches(5), ds.batches(5)
    assert len(b1) == 2 and b1[0][0].shape == (4, 32)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(b1, b2))
    assert not np.array_equal(ds.batches(6)[0][0], b1[0][0])
    x, y = b1[0]
    assert np.array_equal(x[:, 1:], y[:, :-1])                # labels are inputs shifted by one
    n = len(ds.train_x)                                        # an epoch covers each sample exactly once
    steps = n // 8
    seen = np.concatenate([mb[0] for s in range(steps) for mb in ds.batches(s)])
    assert steps >= 2 and len({r.tobytes() for r in seen}) == steps * 8   # no sample twice within an epoch
    vb = ds.val_batches(4, 3)
    assert 1 <= len(vb) <= 3 and all(v[0].shape == (4, 32) for v in vb)
    assert (ds.train_y != IGNORE).all()                        # packed plain text: every token is a label
