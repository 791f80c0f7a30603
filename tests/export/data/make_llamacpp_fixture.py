"""Writes llamacpp_fixture.npz and the GGUF files it was measured on: a tiny seeded Llama (byte vocabulary, tied
head, as SmolLM2) exported by the project's GGUF writer as Q8_0, as Q8_0 with its token embedding F16, and as F16,
and the logits real llama.cpp (llama-cpp-python, the `llamacpp` extra) computes for two rows of held-out text.
tests/export/test_llamacpp_emulation.py checks the emulation (export/llamacpp.py) against those logits, so CI needs
no llama.cpp build. Run once, from the repository root, with llama-cpp-python installed:
    PYTHONPATH=src:. python tests/export/data/make_llamacpp_fixture.py
"""
import json
from pathlib import Path

import numpy as np

from tests.models.tiny import random_llama
from zeropoint.export.gguf_writer import tokenizer_metadata, write_llama_gguf
from zeropoint.export.llamacpp import llama_cpp_version, run_llama_cpp
from zeropoint.export.parity import sotu_tokens
from zeropoint.models.llama import LlamaConfig, state_dict
from zeropoint.models.tokenizer import ByteTokenizer

HERE = Path(__file__).parent
CFG = LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, vocab_size=257, rope_theta=10000.0,
                  max_seq_len=64, tie_embeddings=True)
FILES = {"q8_0": ("q8_0", None), "q8_0-embd-f16": ("q8_0", {"model.embed_tokens.weight": "f16"}), "f16": ("f16", None)}


def main() -> None:
    ver = llama_cpp_version()
    assert ver, "llama-cpp-python is not installed"
    tok = ByteTokenizer()
    weights = {k: v.numpy() for k, v in state_dict(random_llama(CFG, seed=7)).items()}
    tokens, inputs = sotu_tokens(tok, 2, 32)
    out = {"tokens": tokens}
    for name, (ttype, types) in FILES.items():
        path = HERE / f"llamacpp_tiny.{name}.gguf"
        write_llama_gguf(CFG, weights, tokenizer_metadata(tok), path, ttype, name="zeropoint-tiny-fixture",
                         tensor_types=types)
        out[name] = run_llama_cpp(path, tokens)
    out["meta"] = np.array(json.dumps({"llama_cpp_python": ver, "inputs": inputs, "config": CFG.to_dict(),
                                       "weights": "tests.models.tiny.random_llama(CFG, seed=7)",
                                       "run": "export.llamacpp.run_llama_cpp (CPU, flash_attn off, f16 KV cache)"}))
    np.savez_compressed(HERE / "llamacpp_fixture.npz", **out)


if __name__ == "__main__":
    main()
