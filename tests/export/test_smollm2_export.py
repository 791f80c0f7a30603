"""SmolLM2-135M (the real installed weights) to ONNX fp32 and GGUF F32, on 1 x 16 tokens of held-out SOTU text.

Bounded for CI: one model load, one short sequence. Full-size figures are in the export note."""
from __future__ import annotations

import pytest

from zeropoint.export import parity as P

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from zeropoint.models.llama import state_dict
    from zeropoint.models.registry import load_model
    model, cfg, tok = load_model("smollm2-135m")
    toks, _ = P.sotu_tokens(tok, 1, 16)
    return model, cfg, {k: v.numpy() for k, v in state_dict(model).items()}, toks, P.llama_logits(model, toks)


def test_smollm2_onnx_fp32(smollm2, tmp_path):
    from zeropoint.export.onnx import write_llama_onnx
    from zeropoint.models.reference import forward_batch
    model, cfg, w, toks, ref = smollm2
    info = write_llama_onnx(cfg, w, tmp_path / "m.onnx")       # runs onnx.checker full_check on the file
    assert info["nbytes"] > 500e6
    oracle = forward_batch(w, cfg, toks)
    rep = P.onnx_parity(tmp_path / "m.onnx", oracle, {"input_ids": toks}, "onnx", tokens=toks, second_runtime=False,
                        also_vs={"tinygrad_fp32": ref})
    m = rep["runtimes"]["onnxruntime-cpu"]
    assert rep["passed"], rep["failures"]                       # the fp32 gate: max abs <= 1e-4, top-1 100%
    assert abs(m["ppl_rel_delta"]) < 1e-5
    # both fp32 runtimes sit near the float64 oracle; their distance to each other is the sum of both roundings
    assert 0 < P.compare(oracle, ref)["max_abs"] < 5e-4 and 0 < m["max_abs_vs_tinygrad_fp32"] < 5e-4


def test_smollm2_gguf_f32_round_trip(smollm2, tmp_path):
    from zeropoint.export.gguf_writer import write_llama_gguf
    from zeropoint.models.gguf import load_gguf
    from zeropoint.models.llama import from_weights
    from zeropoint.data.assets import smollm2_gguf
    model, cfg, w, toks, ref = smollm2
    meta = load_gguf(smollm2_gguf())[2]
    write_llama_gguf(cfg, w, {k: v for k, v in meta.items() if k.startswith("tokenizer.")}, tmp_path / "m.gguf", "f32")
    c2, w2, meta2 = load_gguf(tmp_path / "m.gguf")
    assert meta2["tokenizer.chat_template"] == meta["tokenizer.chat_template"]
    m = P.compare(ref, P.llama_logits(from_weights(c2, w2), toks), toks)
    assert P.check_gate(m, P.GGUF_F32_GATE) == [] and m["max_abs"] <= 1e-5
