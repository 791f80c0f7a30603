"""Export + parity on small models (seconds each): every artifact format, the gates, and a wrong export caught.

Weights are random inits (no trained small checkpoint is installed); inputs are real (held-out State of the
Union text tokenised with GPT-2's BPE, Fashion-MNIST test images, Noto emoji with their names)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tinygrad import Tensor

from zeropoint.data.assets import gpt2_encoder_dir
from zeropoint.export import parity as P
from zeropoint.models.llama import get_config, state_dict

from tests.models.tiny import realized_llama

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def gpt2_tok():
    from zeropoint.models.tokenizer import Tokenizer
    d = gpt2_encoder_dir()
    return Tokenizer.from_gpt2_files(d / "encoder.json", d / "vocab.bpe")


def _llama(name="tiny-untied", **over):
    cfg = get_config(name, **over)
    return realized_llama(cfg, 0), cfg   # as Llama(cfg) after manual_seed(0), realized once (not re-drawn per forward)


def _weights(model):
    return {k: v.numpy() for k, v in state_dict(model).items()}


@pytest.fixture(scope="module")
def tiny_gpt2(gpt2_tok):
    """A tiny Llama over GPT-2's vocabulary, and 2 x 16 tokens of real held-out text."""
    model, cfg = _llama("tiny", vocab_size=50257)
    toks, meta = P.sotu_tokens(gpt2_tok, 2, 16)
    return model, cfg, toks, P.llama_logits(model, toks)


# ---- ONNX ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-untied", "tiny-llama3"])
def test_llama_onnx_passes_checker_and_fp32_gate_on_two_runtimes(tmp_path, name):
    import onnx
    from zeropoint.export.onnx import write_llama_onnx
    model, cfg = _llama(name)
    toks = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 12))
    ref = P.llama_logits(model, toks)
    info = write_llama_onnx(cfg, _weights(model), tmp_path / "m.onnx")
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    m = onnx.load(str(tmp_path / "m.onnx"))
    assert m.opset_import[0].version == 17 and info["seq_axis"] == "dynamic"
    assert len(m.graph.initializer) > 4 * cfg.n_layers            # weights live in the graph as initializers
    rep = P.onnx_parity(tmp_path / "m.onnx", ref, {"input_ids": toks}, "onnx", tokens=toks)
    assert rep["passed"], rep["failures"]
    assert set(rep["runtimes"]) == {"onnxruntime-cpu", "tinygrad-onnx-runner"}
    assert rep["runtimes"]["onnxruntime-cpu"]["max_abs"] <= 1e-4
    # the dynamic sequence axis really is dynamic: another length runs and still matches
    toks2 = toks[:, :5]
    rep2 = P.onnx_parity(tmp_path / "m.onnx", P.llama_logits(model, toks2), {"input_ids": toks2}, "onnx", second_runtime=False)
    assert rep2["passed"]


def test_fixed_sequence_axis(tmp_path):
    import onnxruntime as ort
    from zeropoint.export.onnx import ExportError, write_llama_onnx
    model, cfg = _llama()
    info = write_llama_onnx(cfg, _weights(model), tmp_path / "f.onnx", seq_len=8)
    assert info["seq_axis"] == 8
    toks = np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 8))
    out, _ = P.run_onnxruntime(tmp_path / "f.onnx", {"input_ids": toks})
    assert np.abs(out - P.llama_logits(model, toks)).max() <= 1e-4
    with pytest.raises(Exception):   # onnxruntime refuses another length for a fixed axis
        ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"input_ids": toks[:, :4]})
    with pytest.raises(ExportError, match="max_seq_len"):
        write_llama_onnx(cfg, _weights(model), tmp_path / "g.onnx", seq_len=cfg.max_seq_len + 1)


def test_transposed_weight_fails_parity_with_clear_report(tmp_path, tiny_gpt2):
    from tests.export.onnx_faults import corrupt_transpose
    from zeropoint.export.onnx import write_llama_onnx
    model, cfg, toks, ref = tiny_gpt2
    write_llama_onnx(cfg, _weights(model), tmp_path / "ok.onnx")
    name = corrupt_transpose(tmp_path / "ok.onnx", tmp_path / "bad.onnx", "layers.1.self_attn.o_proj")
    assert "o_proj" in name
    good = P.onnx_parity(tmp_path / "ok.onnx", ref, {"input_ids": toks}, "onnx", tokens=toks, second_runtime=False)
    bad = P.onnx_parity(tmp_path / "bad.onnx", ref, {"input_ids": toks}, "onnx", tokens=toks, second_runtime=False)
    assert good["passed"] and not bad["passed"]
    assert any("max abs error" in f for f in bad["failures"]), bad["failures"]
    assert "FAIL" in P.summary_line(bad)


def test_compare_and_gates_on_known_arrays():
    ref = np.array([[[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]]], np.float32)
    same = P.compare(ref, ref.copy(), tokens=np.array([[1, 2]]))
    assert same["max_abs"] == 0 and same["top1_agreement"] == 1.0 and abs(same["cosine"] - 1) < 1e-12
    assert same["ppl_rel_delta"] == 0 and P.check_gate(same, P.FP32_GATE) == []
    off = ref.copy()
    off[0, 0, 0] += 5.0                                    # flips the first row's argmax
    m = P.compare(ref, off, tokens=np.array([[1, 2]]))
    assert m["top1_agreement"] == 0.5 and m["max_abs"] == 5.0
    fails = P.check_gate(m, P.INT8_GATE)
    assert any("top-1 agreement 50.00%" in f for f in fails) and any("perplexity" in f for f in fails)
    nan = P.compare(ref, np.full_like(ref, np.nan))
    assert P.check_gate(nan, P.FP32_GATE) == ["exported outputs contain NaN/inf"]
    with pytest.raises(P.ParityError, match="shapes differ"):
        P.compare(ref, ref[..., :2])


# ---- int8 ------------------------------------------------------------------------------------------------------
def test_onnx_int8_is_smaller_and_close(tmp_path, tiny_gpt2):
    import onnx
    from zeropoint.export.onnx import write_llama_onnx
    from zeropoint.export.quant import quantize_onnx_int8
    model, cfg, toks, ref = tiny_gpt2
    model2, cfg2 = _llama("tiny-untied")            # untied: its projections dominate the size
    write_llama_onnx(cfg2, _weights(model2), tmp_path / "f.onnx")
    q = quantize_onnx_int8(tmp_path / "f.onnx", tmp_path / "q.onnx")
    assert q["quantization"]["quantized_matmuls"] == 6 * cfg2.n_layers + 1   # 7 per layer less down_proj, + head
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    # measured 0.56 here: embeddings and down_proj stay fp32 in this tiny model
    assert (tmp_path / "q.onnx").stat().st_size < 0.65 * (tmp_path / "f.onnx").stat().st_size
    from zeropoint.export.pipeline import artifact_format          # `zpctl parity` on a bare file picks its gate
    assert [artifact_format(tmp_path / f, "onnx") for f in ("f.onnx", "q.onnx")] == ["onnx", "onnx-int8"]
    t2 = np.random.default_rng(3).integers(0, cfg2.vocab_size, (2, 16))
    out, _ = P.run_onnxruntime(tmp_path / "q.onnx", {"input_ids": t2})
    m = P.compare(P.llama_logits(model2, t2), out, t2)
    assert m["cosine"] > 0.99 and 0 < m["max_abs"] < 1.0    # quantized: close, but not bit-equal


def test_onnx_weight_only_int8_uses_matmulnbits_and_stays_close(tmp_path):
    import onnx
    from zeropoint.export.onnx import write_llama_onnx
    from zeropoint.export.quant import quantize_onnx_int8_weights
    model, cfg = _llama("tiny-untied")
    write_llama_onnx(cfg, _weights(model), tmp_path / "f.onnx")
    q = quantize_onnx_int8_weights(tmp_path / "f.onnx", tmp_path / "q.onnx")
    assert q["quantization"]["quantized_matmuls"] == 7 * cfg.n_layers + 1            # every projection + the head
    g = onnx.load(str(tmp_path / "q.onnx")).graph
    assert sum(n.op_type == "MatMulNBits" for n in g.node) == 7 * cfg.n_layers + 1
    assert not any(n.op_type == "MatMul" and n.input[1] in {i.name for i in g.initializer} for n in g.node)
    # measured 0.48: the fp32 embedding table is a large share of this tiny model
    assert (tmp_path / "q.onnx").stat().st_size < 0.55 * (tmp_path / "f.onnx").stat().st_size
    from zeropoint.export.pipeline import artifact_format
    assert artifact_format(tmp_path / "q.onnx", "onnx") == "onnx-int8-wo"
    t2 = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 16))
    out, _ = P.run_onnxruntime(tmp_path / "q.onnx", {"input_ids": t2})
    m = P.compare(P.llama_logits(model, t2), out, t2)
    assert m["cosine"] > 0.9999 and 0 < m["max_abs"] < 0.05 and abs(m["ppl_rel_delta"]) < 0.01
    with pytest.raises(Exception, match="no MatMul"):                    # nothing to quantize is an error
        quantize_onnx_int8_weights(tmp_path / "f.onnx", tmp_path / "none.onnx", block_size=7)


def test_reference_oracle_batch_equals_per_sequence_and_tinygrad():
    from zeropoint.models.reference import forward, forward_batch
    from zeropoint.models.llama import rope_inv_freq
    model, cfg = _llama("tiny-llama3")
    toks = np.random.default_rng(5).integers(0, cfg.vocab_size, (3, 10))
    inv = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    b = forward_batch(_weights(model), cfg, toks)
    assert b.dtype == np.float64 and b.shape == (3, 10, cfg.vocab_size)
    np.testing.assert_allclose(b[1], forward(_weights(model), cfg, toks[1], inv_freq=inv), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b, P.llama_logits(model, toks), atol=2e-4, rtol=1e-4)


def test_tinygrad_int8_weight_only(tiny_gpt2):
    from zeropoint.export.quant import Int8Linear, quantize_llama_int8, quantize_rows_int8
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], np.float32)
    q, s = quantize_rows_int8(w)
    assert q.dtype == np.int8 and q[0].tolist() == [64, -127, 32] and s[1] == 1.0
    model, cfg = _llama("tiny", vocab_size=50257)
    toks = tiny_gpt2[2]
    ref = P.llama_logits(model, toks)
    info = quantize_llama_int8(model)
    assert info["quantized"] == 7 * cfg.n_layers and isinstance(model.model.layers[0].mlp.up_proj, Int8Linear)
    assert info["weight_bytes_int8"] < 0.3 * info["weight_bytes_fp32"]
    m = P.compare(ref, P.llama_logits(model, toks), toks)
    assert m["cosine"] > 0.999 and m["max_abs"] > 0 and abs(m["ppl_rel_delta"]) < 0.02


# ---- GGUF ------------------------------------------------------------------------------------------------------
def test_rope_permutation_is_the_loaders_inverse():
    from zeropoint.models.gguf import permute_rope, unpermute_rope
    w = np.random.default_rng(0).standard_normal((32, 5)).astype(np.float32)
    p = permute_rope(w, 4)
    assert not np.array_equal(p, w)
    assert np.array_equal(unpermute_rope(p, 4), w)


def test_q8_0_blocks_match_ggml_layout_and_tinygrad_dequant():
    from tinygrad.llm.gguf import ggml_data_to_tensor
    from zeropoint.export.gguf_writer import q8_0_bytes
    from zeropoint.export.quant import quantize_q8_0
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    raw = q8_0_bytes(*quantize_q8_0(x))
    assert len(raw) == 4 * 34
    blocks = np.frombuffer(raw, np.uint8).reshape(4, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)                  # (4, 1)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    amax = np.abs(x.reshape(4, 32)).max(1, keepdims=True)
    assert np.all((amax / d > 60) & (amax / d < 127.5))                           # d = amax / c, c in 61..127
    deq = ggml_data_to_tensor(Tensor(np.frombuffer(raw, np.uint8).copy()), x.size, 8).reshape(2, 64).numpy()
    np.testing.assert_array_equal(deq.reshape(4, 32), d * q)                      # tinygrad reads our layout
    rtn = np.rint(x.reshape(4, 32) / (amax / 127).astype(np.float16).astype(np.float32)) * (amax / 127).astype(np.float16).astype(np.float32)
    assert np.all(np.square(deq.reshape(4, 32) - x.reshape(4, 32)).sum(1) <= np.square(rtn - x.reshape(4, 32)).sum(1) + 1e-12)


@pytest.mark.parametrize("ttype,gate", [("f32", P.GGUF_F32_GATE), ("q8_0", P.INT8_GATE)])
def test_gguf_round_trip(tmp_path, gpt2_tok, tiny_gpt2, ttype, gate):
    from tinygrad.llm.gguf import gguf_load
    from zeropoint.export.gguf_writer import tokenizer_metadata, write_llama_gguf
    from zeropoint.models.gguf import load_gguf
    from zeropoint.models.llama import from_weights
    from zeropoint.models.tokenizer import Tokenizer
    model, cfg, toks, ref = tiny_gpt2
    info = write_llama_gguf(cfg, _weights(model), tokenizer_metadata(gpt2_tok), tmp_path / "m.gguf", ttype)
    assert info["ggml_types"] == (["f32"] if ttype == "f32" else ["f32", "q8_0"])
    kv, sd = gguf_load(tmp_path / "m.gguf")                          # tinygrad's own reader
    assert kv["general.architecture"] == "llama" and kv["llama.block_count"] == cfg.n_layers
    assert "output.weight" not in sd and len(sd) == 2 + 9 * cfg.n_layers     # tied: no separate head
    c2, w2, meta = load_gguf(tmp_path / "m.gguf")                    # the project's loader
    assert c2.tie_embeddings and c2.n_kv_heads == cfg.n_kv_heads and c2.rope_theta == cfg.rope_theta
    tok2 = Tokenizer.from_gguf_metadata(meta)
    text = "The State of the Union is strong, 2024."
    assert tok2.encode(text) == gpt2_tok.encode(text)
    rep = P.report(f"gguf-{ttype}", {"gguf": P.compare(ref, P.llama_logits(from_weights(c2, w2), toks), toks)}, {}, gate)
    assert rep["passed"], rep["failures"]
    if ttype == "f32":
        assert rep["runtimes"]["gguf"]["max_abs"] <= 1e-5
    from zeropoint.export.pipeline import artifact_format             # a bare .gguf gets its own gate in `zpctl parity`
    assert artifact_format(tmp_path / "m.gguf", "gguf") == {"f32": "gguf", "q8_0": "gguf-q8_0"}[ttype]


def test_gguf_header_is_v3_and_aligned(tmp_path, gpt2_tok):
    from zeropoint.export.gguf_writer import tokenizer_metadata, write_llama_gguf
    model, cfg = _llama("tiny-untied")
    meta = {k: v for k, v in tokenizer_metadata(gpt2_tok).items() if k != "tokenizer.ggml.tokens"}
    write_llama_gguf(cfg, _weights(model), meta, tmp_path / "u.gguf", "f16")
    raw = (tmp_path / "u.gguf").read_bytes()
    assert raw[:4] == b"GGUF" and struct.unpack("<I", raw[4:8])[0] == 3
    assert struct.unpack("<Q", raw[8:16])[0] == 3 + 9 * cfg.n_layers       # untied: output.weight present


# ---- vision ----------------------------------------------------------------------------------------------------
def test_vit_onnx_fp32_gate_on_fashion_mnist(tmp_path):
    from zeropoint.export.onnx import write_vit_onnx
    from zeropoint.models.vit import init_vit_arrays, to_tensors, vit_config, vit_forward
    cfg = vit_config("vit-tiny-28")
    a = init_vit_arrays(cfg, 0)
    a["head.w"] = np.random.default_rng(1).standard_normal(a["head.w"].shape).astype(np.float32)  # init head is 0
    x, y, meta = P.fashion_mnist_images(16)
    ref = vit_forward(to_tensors(a), cfg, Tensor(x)).numpy()
    assert np.abs(ref).max() > 0.1
    write_vit_onnx(cfg, a, tmp_path / "vit.onnx")
    rep = P.onnx_parity(tmp_path / "vit.onnx", ref, {"images": x}, "onnx", labels=y, inputs=meta)
    assert rep["passed"], rep["failures"]
    assert rep["runtimes"]["onnxruntime-cpu"]["acc_original"] == rep["runtimes"]["onnxruntime-cpu"]["acc_exported"]


def test_clip_onnx_fp32_gate_on_emoji(tmp_path):
    import onnxruntime as ort
    from PIL import Image
    from zeropoint.data.assets import emoji_google_dir
    from zeropoint.export.onnx import write_clip_onnx
    from zeropoint.models.clip import clip_config, encode_captions, encode_image, encode_text, init_clip_arrays, \
        train_caption_tokenizer
    from zeropoint.models.vit import to_tensors
    d = emoji_google_dir()
    items = [e for e in json.loads((d / "emoji.json").read_text(encoding="utf-8")) if e.get("has_img_google")][:8]
    caps = [e["name"].lower() for e in items]
    imgs = np.stack([np.asarray(Image.open(d / "img/google/64" / e["image"]).convert("RGB").resize((32, 32)),
                                np.float32).transpose(2, 0, 1) / 255.0 for e in items])
    tok = train_caption_tokenizer(caps, 300)
    cfg = clip_config("clip-emoji-tiny", vocab_size=tok.get_vocab_size(), bos_id=tok.token_to_id("<|startoftext|>"),
                      eos_id=tok.token_to_id("<|endoftext|>"))
    ids = encode_captions(tok, caps, cfg.text.context).astype(np.int64)
    a = init_clip_arrays(cfg, 0)
    p = to_tensors(a)
    ri, rt = encode_image(p, cfg, Tensor(imgs)).numpy(), encode_text(p, cfg, Tensor(ids.astype(np.int32))).numpy()
    write_clip_onnx(cfg, a, tmp_path / "clip.onnx")
    oi, ot = ort.InferenceSession(str(tmp_path / "clip.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": imgs, "input_ids": ids})
    for r, o in ((ri, oi), (rt, ot)):
        m = P.compare(r, o)
        assert P.check_gate(m, P.FP32_GATE) == [] and m["cosine"] > 0.999999
