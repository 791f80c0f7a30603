import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.llm.gguf import ggml_data_to_tensor

from zeropoint.models.gguf import GGUFError, dequant_numpy, gguf_name, hf_name, load_gguf, permute_rope, unpermute_rope


def _blocks(typ, nblocks, rng):
    """Random but valid ggml blocks: finite fp16 scales, random quant bytes."""
    size = {2: 18, 3: 20, 8: 34}[typ]
    b = rng.integers(0, 256, (nblocks, size), dtype=np.uint8)
    b[:, 0:2] = np.float16(rng.uniform(0.01, 0.1, nblocks)).view(np.uint8).reshape(nblocks, 2)
    if typ == 3:
        b[:, 2:4] = np.float16(rng.uniform(-0.1, 0.1, nblocks)).view(np.uint8).reshape(nblocks, 2)
    return b.reshape(-1)


@pytest.mark.parametrize("typ", [2, 3, 8])   # Q4_0, Q4_1, Q8_0
def test_numpy_dequant_equals_tinygrad_gguf(typ):
    raw = _blocks(typ, 8, np.random.default_rng(typ))
    want = ggml_data_to_tensor(Tensor(raw), 8 * 32, typ).numpy().reshape(-1)
    got = dequant_numpy(raw, 8 * 32, typ)
    np.testing.assert_array_equal(got, want)


def test_native_dtypes():
    x = np.random.default_rng(0).standard_normal(10).astype(np.float32)
    np.testing.assert_array_equal(dequant_numpy(x.view(np.uint8), 10, 0), x)
    np.testing.assert_array_equal(dequant_numpy(x.astype(np.float16).view(np.uint8), 10, 1), x.astype(np.float16))
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    np.testing.assert_allclose(dequant_numpy(bf.view(np.uint8), 10, 30), x, rtol=1e-2)


def test_rope_permutation_round_trip_and_layout():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)   # 2 heads, head_dim 8
    np.testing.assert_array_equal(unpermute_rope(permute_rope(w, 2), 2), w)
    # llama.cpp puts HF rows (0, 4, 1, 5, 2, 6, 3, 7) of each head next to each other (interleaved pairs)
    rows = permute_rope(w, 2)[:8, 0] / 3
    assert rows.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_names():
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("rope_freqs.weight") is None
    for g in ("blk.7.attn_q.weight", "blk.0.ffn_norm.weight", "token_embd.weight", "output.weight"):
        assert gguf_name(hf_name(g)) == g           # one table, read both ways (loader and writer)


def test_bad_files(tmp_path):
    with pytest.raises(GGUFError, match="does not exist"):
        load_gguf(tmp_path / "nope.gguf")
    (tmp_path / "x.gguf").write_bytes(b"NOTGGUF" + b"\0" * 64)
    with pytest.raises(GGUFError, match="not a GGUF"):
        load_gguf(tmp_path / "x.gguf")
