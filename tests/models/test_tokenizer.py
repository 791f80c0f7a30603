import json

import pytest

from zeropoint.data.assets import gpt2_encoder_dir
from zeropoint.models.tokenizer import Tokenizer, TokenizerError, chatml_default_system, render_chatml


@pytest.fixture(scope="module")
def gpt2():
    d = gpt2_encoder_dir()
    return Tokenizer.from_gpt2_files(d / "encoder.json", d / "vocab.bpe")


def test_gpt2_bpe_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" Hello") == [18435]
    assert gpt2.vocab_size == 50257 and gpt2.eos_id == 50256


def test_gpt2_round_trip_unicode(gpt2):
    text = "Zürich café — naïve 東京 🚀\n  tabs\tand  spaces"
    assert gpt2.decode(gpt2.encode(text)) == text


def test_add_bos(gpt2):
    assert gpt2.encode("hi", add_bos=True)[0] == 50256


def _meta():
    # a miniature GGUF-style vocab: byte-level symbols plus merges, with ChatML control tokens
    toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + list("Helowrd") + ["Ġ", "He", "ll", "Hell", "Hello",
                                                                              "Ġw", "or", "Ġwor", "Ġworl", "Ġworld"] + list("0123456789")
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.token_type": [3, 3, 3] + [1] * (len(toks) - 3),
            "tokenizer.ggml.merges": ["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d"],
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def test_from_gguf_metadata():
    t = Tokenizer.from_gguf_metadata(_meta())
    assert [t.hf.id_to_token(i) for i in t.encode("Hello world")] == ["Hello", "Ġworld"]
    # control tokens are atomic, never split by BPE
    assert t.encode("<|im_start|>Hello<|im_end|>") == [1, t.token_to_id("Hello"), 2]
    assert t.decode(t.encode("Hello world")) == "Hello world"
    assert t.stop_ids() == [2]
    # smollm pre-tokenizer: digits one at a time
    assert len(t.encode("2024")) == 4
    with pytest.raises(TokenizerError, match="not supported"):
        Tokenizer.from_gguf_metadata({**_meta(), "tokenizer.ggml.model": "llama"})


def test_chatml_fallback_and_default_system():
    smol_tpl = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
                "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert chatml_default_system(smol_tpl).startswith("You are a helpful AI assistant named SmolLM")
    t = Tokenizer.from_gguf_metadata({**_meta(), "tokenizer.chat_template": smol_tpl})
    msgs = [{"role": "user", "content": "Hello"}]
    out = t.apply_chat_template(msgs)
    assert out == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                   "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    with_sys = t.apply_chat_template([{"role": "system", "content": "Be brief."}] + msgs, add_generation_prompt=False)
    assert with_sys == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    assert render_chatml(msgs) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    ids = t.apply_chat_template(msgs, tokenize=True)
    assert ids[0] == 1 and ids.count(2) == 2
    with pytest.raises(TokenizerError, match="chat message 0"):
        t.apply_chat_template([{"role": "user"}])


def test_from_file_reads_config(tmp_path):
    t = Tokenizer.from_gguf_metadata(_meta())
    t.hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "chat_template": "X"}))
    t2 = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert (t2.bos_id, t2.eos_id, t2.chat_template) == (1, 2, "X")
    assert t2.encode("Hello world") == t.encode("Hello world")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot parse"):
        Tokenizer.from_file(tmp_path / "bad.json")
