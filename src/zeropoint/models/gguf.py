"""Read a llama-architecture GGUF file into HF-named fp32 weights, a LlamaConfig and tokenizer metadata.

GGUF (llama.cpp) differs from Hugging Face in two ways that matter:
- names: `blk.3.attn_q.weight` is `model.layers.3.self_attn.q_proj.weight`, and so on (table below);
- q/k rows: llama.cpp's converter permutes each head's rows of q_proj/k_proj so its interleaved-pair RoPE
  gives the same result as HF's rotate_half RoPE. We undo that permutation, so our (HF) RoPE is right.
Quantized tensors are dequantized to fp32. The common types (F32, F16, BF16, Q4_0, Q4_1, Q8_0) go through a
vectorised numpy path over a read-only memory map: one pass, seconds, where realizing tinygrad's per-tensor
dequant graphs compiles one kernel per tensor (each bakes its file offset) and took minutes on a 2-core CPU.
Any other type (K-quants, IQ, MXFP4...) goes through `tinygrad.llm.gguf.gguf_load`, which the tests also use as
the reference the numpy path must equal.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from tinygrad import Tensor
from tinygrad.llm import gguf as g
from tinygrad.llm.gguf import gguf_load

from ..errors import ZeropointError
from .llama import LlamaConfig

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


class GGUFError(ZeropointError):
    pass


def gguf_name(hf: str) -> str | None:
    """GGUF name of an HF tensor name (the inverse of `hf_name`); None when llama.cpp has no such tensor."""
    top = {v: k for k, v in _TOP_NAMES.items()}
    if hf in top:
        return top[hf]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", hf)
    layer = {v: k for k, v in _LAYER_NAMES.items()}
    if m and m.group(2) in layer:
        return f"blk.{m.group(1)}.{layer[m.group(2)]}.weight"
    return None


def hf_name(gguf_name: str) -> str | None:
    """HF key for a GGUF tensor name; None for tensors the model does not use (e.g. `rope_freqs.weight`)."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"
    return None


def rope_rows(n_rows: int, n_heads: int) -> np.ndarray:
    """The q/k row order llama.cpp's converter writes: per head, GGUF row (pair i, half j) holds HF row
    (half j, index i), so its interleaved-pair RoPE equals HF's rotate_half RoPE. The one definition of the
    permutation: the writer applies it, the loader undoes it."""
    hd = n_rows // n_heads
    return np.arange(n_rows).reshape(n_heads, 2, hd // 2).transpose(0, 2, 1).reshape(-1)


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> GGUF row order (what llama.cpp's converter does)."""
    return w[rope_rows(w.shape[0], n_heads)]


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF -> HF row order: the inverse of `permute_rope`."""
    return w[np.argsort(rope_rows(w.shape[0], n_heads))]


def config_from_gguf(kv: dict, max_seq_len: int | None = None) -> LlamaConfig:
    arch = kv.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"GGUF architecture is {arch!r}; only 'llama' (Llama 2/3, Mistral, SmolLM2) is supported")
    g = lambda k, d=None: kv.get(f"{arch}.{k}", d)  # noqa: E731
    n_heads = g("attention.head_count")
    dim = g("embedding_length")
    head_dim = g("attention.key_length", dim // n_heads)
    if g("rope.dimension_count", head_dim) != head_dim:
        raise GGUFError("partial-rotary GGUF models (rope.dimension_count < head_dim) are not supported")
    vocab = g("vocab_size") or len(kv.get("tokenizer.ggml.tokens", []))
    scaling = None
    if kv.get(f"{arch}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(g("rope.scaling.factor"))}
    ctx = g("context_length", 2048)
    return LlamaConfig(dim=dim, n_layers=g("block_count"), n_heads=n_heads, n_kv_heads=g("attention.head_count_kv", n_heads),
                       hidden_dim=g("feed_forward_length"), vocab_size=vocab,
                       norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
                       rope_theta=float(g("rope.freq_base", 10000.0)), rope_scaling=scaling,
                       max_seq_len=min(ctx, max_seq_len) if max_seq_len else ctx,
                       tie_embeddings=False, head_dim=head_dim)


# ggml type id -> (elements per block, bytes per block)
_NUMPY_TYPES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34)}


def read_header(path: str | Path, tensors: bool = True) -> tuple[dict, list[tuple[str, tuple[int, ...], int, int]], int]:
    """-> (metadata kv, [(name, dims (ggml order), ggml type, offset)], data start): the one GGUF header reader,
    on tinygrad's pinned GGUF value readers. `tensors=False` stops after the metadata (milliseconds: what
    reading a tokenizer or a file's name needs); the tensor list is then empty and the data start 0."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file {path} does not exist; pass a .gguf path, an HF directory or a named model")
    with open(path, "rb") as f:
        r = io.BufferedReader(f, 1 << 20)
        magic, version = r.read(4), g.read_int32(r)
        if magic != b"GGUF" or version not in (2, 3):
            raise GGUFError(f"{path} is not a GGUF v2/v3 file (magic {magic!r}, version {version}); pass a llama.cpp .gguf")
        n_tensors, n_kv = g.read_int64(r), g.read_int64(r)
        kv = {}
        for _ in range(n_kv):
            k, typ = g.read_str(r), g.read_int32(r)
            kv[k] = g.readers[typ](r)
        if not tensors:
            return kv, [], 0
        infos = [(g.read_str(r), tuple(g.read_uint64(r) for _ in range(g.read_uint32(r))), g.read_int32(r), g.read_uint64(r))
                 for _ in range(n_tensors)]
        align = kv.get("general.alignment", 32)
        return kv, infos, (r.tell() + align - 1) // align * align


def dequant_numpy(buf: np.ndarray, n: int, typ: int) -> np.ndarray:
    """fp32 values of `n` elements of ggml type `typ` stored at the start of uint8 `buf` (ggml block layouts)."""
    if typ == 0:
        return np.array(buf[:4 * n].view(np.float32))
    if typ == 1:
        return buf[:2 * n].view(np.float16).astype(np.float32)
    if typ == 30:
        return (buf[:2 * n].view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    blk_elems, blk_bytes = _NUMPY_TYPES[typ]
    b = buf[:n // blk_elems * blk_bytes].reshape(-1, blk_bytes)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)               # (nblocks, 1) scale
    if typ == 8:                                                           # Q8_0: d * int8
        return (b[:, 2:].view(np.int8).astype(np.float32) * d).reshape(-1)
    qs = b[:, 4:] if typ == 3 else b[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)    # low nibbles are elements 0..15
    if typ == 2:                                                           # Q4_0: (q - 8) * d
        return ((q - 8.0) * d).reshape(-1)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float32)               # Q4_1: q * d + m
    return (q * d + m).reshape(-1)


def _load_numpy(path: Path, infos, data_start: int, n_heads: int, n_kv_heads: int) -> dict[str, Tensor]:
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, dims, typ, off in infos:
        n = int(np.prod(dims))
        arr = dequant_numpy(mm[data_start + off:], n, typ).reshape(tuple(reversed(dims)))
        if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
            arr = unpermute_rope(arr, n_heads if name.endswith("attn_q.weight") else n_kv_heads)
        out[name] = Tensor(np.ascontiguousarray(arr, dtype=np.float32))
    return out


def load_gguf(path: str | Path, max_seq_len: int | None = None) -> tuple[LlamaConfig, dict[str, Tensor], dict]:
    """-> (config, HF-named fp32 weights (lazy: realized when loaded into a model), tokenizer metadata).

    The metadata dict holds every `tokenizer.*` key of the file (vocab, merges, special ids, chat template)."""
    path = Path(path)
    kv, infos, data_start = read_header(path)
    cfg = config_from_gguf(kv, max_seq_len)
    if kv.get("split.count", 1) <= 1 and all(typ in _NUMPY_TYPES for _, _, typ, _ in infos):
        raw = _load_numpy(path, infos, data_start, cfg.n_heads, cfg.n_kv_heads)   # already un-permuted
    else:
        try:
            kv, raw = gguf_load(path)
        except ValueError as e:
            raise GGUFError(f"cannot read {path}: {e}") from None
        for name in raw:
            if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
                h = cfg.n_heads if name.endswith("attn_q.weight") else cfg.n_kv_heads
                raw[name] = Tensor(unpermute_rope(raw[name].numpy(), h))
    weights: dict[str, Tensor] = {}
    for name, t in raw.items():
        key = hf_name(name)
        if key is not None:
            weights[key] = t.float()
    # tied models (SmolLM2, Llama 3.2) ship no output.weight: the head is the embedding
    cfg.tie_embeddings = "lm_head.weight" not in weights
    return cfg, weights, tokenizer_metadata(kv)


def tokenizer_metadata(kv: dict) -> dict:
    """The keys a tokenizer and a model card need: every `tokenizer.*` key, the name and the license."""
    meta = {k: v for k, v in kv.items() if k.startswith("tokenizer.")}
    meta["general.name"] = kv.get("general.name")
    meta["general.license"] = kv.get("general.license")
    return meta
