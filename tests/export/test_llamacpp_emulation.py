"""The numpy emulation of llama.cpp's CPU kernels (export/llamacpp.py) against logits that real llama.cpp computed on
three tiny GGUF files (llama-cpp-python 0.3.36; tests/export/data/make_llamacpp_fixture.py wrote them), so CI checks
the emulation without building llama.cpp. A runtime that multiplies the dequantized weights with fp32 activations
(what the GGUF gate ran before: the float64 oracle here) is measurably further from llama.cpp; the emulation is
llama.cpp to the bit where llama.cpp takes its tinyBLAS paths."""
import json
from pathlib import Path

import numpy as np
import pytest

from zeropoint.export.llamacpp import LLAMA_CPP_EMULATED, emulate_llama_cpp, gguf_logits
from zeropoint.models.gguf import load_gguf
from zeropoint.models.reference import forward_batch

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def fixture():
    return np.load(DATA / "llamacpp_fixture.npz")


@pytest.mark.parametrize("name", ["q8_0", "q8_0-embd-f16", "f16"])
def test_emulation_matches_real_llama_cpp(fixture, name):
    tokens, real = fixture["tokens"], fixture[name]
    path = DATA / f"llamacpp_tiny.{name}.gguf"
    emu = emulate_llama_cpp(path, tokens)
    assert (emu.argmax(-1) == real.argmax(-1)).all()
    per_pos = np.abs(emu - real).max(-1)
    cfg, w, _ = load_gguf(path)
    plain = forward_batch({k: v.numpy() for k, v in w.items()}, cfg, tokens)
    plain_pos = np.abs(plain - real).max(-1)
    if name.startswith("q8_0"):                    # fp32 activations on the dequantized weights miss everywhere
        assert (plain_pos > 1e-4).mean() >= 0.95
    if name == "q8_0":
        # every operation in llama.cpp's own order (tinyBLAS lanes, ggml's exp, glibc's cosf): llama.cpp to the bit
        assert np.array_equal(emu, real), per_pos.max()
    else:
        # the 257-row tied head is not a tinyBLAS shape (rows % 4 != 0), so ggml's vec_dot_f16 sums it in an order
        # the emulation does not reproduce: fp32 rounding there, after the last quantized activation
        assert per_pos.max() <= 1e-5, per_pos.max()
    assert plain_pos.max() > 2 * per_pos.max()


def test_gguf_logits_names_the_runtime_that_ran(fixture, monkeypatch):
    import zeropoint.export.llamacpp as L
    monkeypatch.setattr(L, "llama_cpp_version", lambda: None)    # as in CI: llama-cpp-python is not installed
    name, _, info = gguf_logits(DATA / "llamacpp_tiny.q8_0.gguf", fixture["tokens"][:, :8])
    assert name == info["runtime"] == LLAMA_CPP_EMULATED and "not installed" in info["why"]
    with pytest.raises(L.LlamaCppError, match="llamacpp"):
        gguf_logits(DATA / "llamacpp_tiny.q8_0.gguf", fixture["tokens"][:, :8], runtime="llama.cpp")
    meta = json.loads(str(fixture["meta"]))
    assert meta["llama_cpp_python"] == "0.3.36"
