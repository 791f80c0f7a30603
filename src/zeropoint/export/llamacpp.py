"""A GGUF file in the runtime that serves it: llama.cpp's CPU kernels through llama-cpp-python (the `llamacpp`
extra), or, where that is not installed, a numpy emulation of what those kernels compute.

What llama.cpp's CPU backend computes that a dequantize-then-fp32 runtime does not (ggml-cpu as vendored by
llama-cpp-python 0.3.36, x86; flash attention off, llama-cpp-python's default):
- a matrix multiply first converts its activation rows to the weight type's `vec_dot_type`: Q8_0 blocks for Q8_0
  and Q4_0 weights (32 values, fp16 scale d = amax / 127, codes round(x * 127 / amax), half to even as the AVX
  path rounds), Q8_1 blocks for Q4_1 weights (the same codes plus s = fp16(d * sum of codes), which carries the
  weight's block minimum), fp16 for F16 weights; F32 weights take fp32 activations. The block dot products are
  exact integers scaled by d_w * d_x, so the emulation multiplies the dequantized weights with the
  quantize-dequantized activations (both exact in fp32) and adds the Q8_1 sum's rounding for Q4_1;
- the KV cache holds K and V in fp16: Q is rounded to fp16 for Q K^T (the F16 cache's vec_dot_type), and the
  softmax probabilities are rounded to fp16 for the product with V;
- norms, RoPE, SiLU, softmax and the residual stream are fp32, as here.
A tiny model's logits measured in real llama.cpp are kept as a test fixture (tests/export/data), so CI checks this
emulation against llama.cpp without building it; docs/export.md has the SmolLM2 figures.
"""
from __future__ import annotations

import importlib.util
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import ZeropointError
from ..models.gguf import config_from_gguf, dequant_numpy, hf_name, read_header, unpermute_rope
from ..models.llama import rope_inv_freq

LLAMA_CPP = "llama.cpp"
LLAMA_CPP_EMULATED = "llama.cpp-emulated"
# ggml type id -> the type its matrix multiplies convert activations to (ggml-cpu's type_traits_cpu.vec_dot_type)
VEC_DOT = {0: "f32", 1: "f16", 2: "q8_0", 3: "q8_1", 8: "q8_0"}
GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 30: "BF16"}


class LlamaCppError(ZeropointError):
    pass


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python, or None (then GGUF parity runs the emulation)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---- real llama.cpp ------------------------------------------------------------------------------------------
def run_llama_cpp(path: str | Path, tokens: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """(B, T) token ids -> (B, T, V) fp32 logits of every position, each row a fresh sequence from position 0
    (no BOS added: the ids are used as given). llama-cpp-python is an optional extra: imported here."""
    from llama_cpp import Llama
    B, T = tokens.shape
    llm = Llama(model_path=str(path), n_ctx=max(T, 32), n_batch=T, n_ubatch=T, logits_all=True, flash_attn=False,
                n_threads=n_threads or os.cpu_count(), verbose=False, seed=0)
    try:
        out = np.empty((B, T, llm.n_vocab()), np.float32)
        for b in range(B):
            llm.reset()
            llm.eval([int(t) for t in tokens[b]])
            out[b] = llm.scores[:T]
        return out
    finally:
        llm.close()


# ---- the emulation -------------------------------------------------------------------------------------------
def quantize_activations(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of x (..., K) as llama.cpp's CPU backend converts them for a matrix multiply, back in fp32; for Q8_1
    also the per-block rounding of its stored sum, fp16(d * sum q) - fp16(d) * sum q (..., K/32)."""
    x = np.asarray(x, np.float32)
    if kind == "f32":
        return x, None
    if kind == "f16":
        return x.astype(np.float16).astype(np.float32), None
    b = x.reshape(*x.shape[:-1], -1, 32)
    amax = np.abs(b).max(-1, keepdims=True)
    d = amax / np.float32(127)
    d16 = d.astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(b * inv)                          # round half to even, as _mm256_round_ps(_MM_ROUND_NEAREST)
    xq = (q * d16).reshape(x.shape)
    if kind == "q8_0":
        return xq, None
    qs = q.sum(-1)
    s16 = (qs * d[..., 0]).astype(np.float16).astype(np.float32)
    return xq, (s16 - d16[..., 0] * qs).astype(np.float32)


class _Weight:
    """One projection as stored: the dequantized matrix (HF row order), its ggml type and, for Q4_1, the block
    minimums m (out, K/32) that multiply the activation sums."""

    def __init__(self, w: np.ndarray, typ: int, mins: np.ndarray | None = None):
        if typ not in VEC_DOT:
            raise LlamaCppError(f"ggml type {GGML_TYPE_NAMES.get(typ, typ)} has no emulation (F32, F16, Q8_0, Q4_0, "
                                "Q4_1 do); install llama-cpp-python to run the file in llama.cpp itself")
        self.wt, self.typ, self.mins_t = np.ascontiguousarray(w.T), typ, None if mins is None else np.ascontiguousarray(mins.T)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xq, corr = quantize_activations(x, VEC_DOT[self.typ])
        y = xq @ self.wt
        return y if corr is None else y + corr @ self.mins_t


def _q4_1_mins(buf: np.ndarray, n: int) -> np.ndarray:
    b = buf[:n // 32 * 20].reshape(-1, 20)
    return b[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]


def load_emulated(path: str | Path) -> tuple[object, dict]:
    """-> (LlamaConfig, {HF name: _Weight or fp32 array}) from a GGUF file, as the emulation runs it."""
    path = Path(path)
    kv, infos, start = read_header(path)
    cfg = config_from_gguf(kv)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict = {}
    for name, dims, typ, off in infos:
        key = hf_name(name)
        if key is None:
            continue
        n, shape = int(np.prod(dims)), tuple(reversed(dims))
        if typ not in (0, 1, 2, 3, 8):
            raise LlamaCppError(f"{path}: tensor {name} is ggml type {GGML_TYPE_NAMES.get(typ, typ)}; the emulation "
                                "covers F32, F16, Q8_0, Q4_0 and Q4_1: install llama-cpp-python to run it in llama.cpp")
        w = dequant_numpy(mm[start + off:], n, typ).reshape(shape)
        mins = _q4_1_mins(mm[start + off:], n).reshape(shape[0], -1) if typ == 3 else None
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            h = cfg.n_heads if name.endswith("attn_q.weight") else cfg.n_kv_heads
            w = unpermute_rope(w, h)
            mins = unpermute_rope(mins, h) if mins is not None else None
        if len(shape) == 1:
            out[key] = np.asarray(w, np.float32)
        elif key == "model.embed_tokens.weight":   # a Gather reads it (exact); the tied head multiplies with it
            out[key] = np.asarray(w, np.float32)
            out["_head"] = _Weight(w, typ, mins)
        else:
            out[key] = _Weight(w, typ, mins)
    cfg.tie_embeddings = "lm_head.weight" not in out
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["_head"]
    out.pop("_head", None)
    return cfg, out


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * w


def emulate_llama_cpp(path: str | Path, tokens: np.ndarray, batch: int = 16) -> np.ndarray:
    """(B, T) token ids -> (B, T, V) fp32 logits as llama.cpp's CPU backend computes them (module docstring)."""
    cfg, W = load_emulated(path)
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    f16 = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    T = tokens.shape[1]
    ang = np.outer(np.arange(T), rope_inv_freq(hd, cfg.rope_theta, cfg.rope_scaling))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    causal = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    scale = np.float32(1.0 / np.sqrt(hd))

    def rope(x):
        h = hd // 2
        x1, x2 = x[..., :h], x[..., h:]
        c, s = cos[:, :h], sin[:, :h]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    outs = []
    for i0 in range(0, tokens.shape[0], batch):
        tok = tokens[i0:i0 + batch]
        B = tok.shape[0]
        x = W["model.embed_tokens.weight"][tok]
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            h = _rms(x, W[p + "input_layernorm.weight"], cfg.norm_eps)
            q = W[p + "self_attn.q_proj.weight"](h).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
            k = W[p + "self_attn.k_proj.weight"](h).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
            v = W[p + "self_attn.v_proj.weight"](h).reshape(B, T, KV, hd).transpose(0, 2, 1, 3)
            q, k, v = f16(rope(q)), f16(rope(k)), f16(v)          # the F16 KV cache, and Q as its dot type
            k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
            s = (q @ k.transpose(0, 1, 3, 2)) * scale + causal
            s = np.exp(s - s.max(-1, keepdims=True))
            a = f16(s / s.sum(-1, keepdims=True)) @ v              # probabilities as the F16 V's dot type
            a = a.transpose(0, 2, 1, 3).reshape(B, T, H * hd)
            x = x + W[p + "self_attn.o_proj.weight"](a)
            h = _rms(x, W[p + "post_attention_layernorm.weight"], cfg.norm_eps)
            g, u = W[p + "mlp.gate_proj.weight"](h), W[p + "mlp.up_proj.weight"](h)
            x = x + W[p + "mlp.down_proj.weight"](g / (1 + np.exp(-g)) * u)
        x = _rms(x, W["model.norm.weight"], cfg.norm_eps)
        outs.append(W["lm_head.weight"](x).astype(np.float32))
    return np.concatenate(outs)


def gguf_logits(path: str | Path, tokens: np.ndarray, runtime: str = "auto") -> tuple[str, np.ndarray, dict]:
    """-> (runtime name, logits, what ran): llama.cpp itself when llama-cpp-python is installed (or `runtime`
    says "llama.cpp"), else the emulation. The name says which, so no report passes one off as the other."""
    ver = llama_cpp_version()
    if runtime == LLAMA_CPP or (runtime == "auto" and ver):
        if not ver:
            raise LlamaCppError("llama-cpp-python is not installed; pip install 'zeropoint[llamacpp]' (it builds "
                                "llama.cpp from source, about 10 minutes on 2 cores), or use the emulation")
        return LLAMA_CPP, run_llama_cpp(path, tokens), {
            "runtime": LLAMA_CPP, "llama_cpp_python": ver, "backend": "CPU", "flash_attn": False,
            "kv_cache": "f16 (llama.cpp's default)"}
    if runtime not in ("auto", LLAMA_CPP_EMULATED):
        raise LlamaCppError(f"unknown GGUF runtime {runtime!r}; choose auto, {LLAMA_CPP} or {LLAMA_CPP_EMULATED}")
    return LLAMA_CPP_EMULATED, emulate_llama_cpp(path, tokens), {
        "runtime": LLAMA_CPP_EMULATED, "what": "numpy emulation of llama.cpp's CPU kernels (export/llamacpp.py): "
        "activations quantized to the weight's vec_dot_type, fp16 KV cache",
        "why": "llama-cpp-python is not installed" if not ver else "asked for"}
