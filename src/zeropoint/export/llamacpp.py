"""A GGUF file in the runtime that serves it: llama.cpp's CPU kernels through llama-cpp-python (the `llamacpp`
extra), or, where that is not installed, a numpy emulation of what those kernels compute, to the bit.

What llama.cpp's CPU backend computes (ggml-cpu as vendored by llama-cpp-python 0.3.36, x86 with AVX512, GCC; flash
attention off, llama-cpp-python's default; read in its source, checked tensor by tensor against its eval callback):
- no weight is repacked on x86 for Q8_0 or Q4_1 (repack.cpp repacks Q8_0 only on ARM and RISC-V), so a Q8_0 or
  Q4_0 matrix multiply goes to llamafile's tinyBLAS_Q0_AVX and Q4_1 to ggml_vec_dot_q4_1_q8_1; both first convert
  the activation rows to Q8_0 / Q8_1 blocks (32 values, fp16 d = amax / 127, codes round(x * (127 / amax)) with
  ties to even, and for Q8_1 the fp16 s = d * sum of codes), then add, per block, fp32(d_w * d_x) times 8 exact
  integer lanes into 8 fp32 FMA accumulators and sum the lanes at the end; Q4_1 adds sum(m_w * s_x) after;
- F16 and F32 weights, and the attention products with the F16 KV cache (Q and the softmax probabilities are
  rounded to fp16), go to tinyBLAS with 16 fp32 FMA lanes;
- RMS norm sums fp32 squares in double; softmax and SiLU use ggml's own polynomial exp; RoPE uses glibc's cosf /
  sinf and a compiler-contracted FMA; the residual stream is fp32.
Close is not enough: one ulp of difference flips a Q8_0 activation code at a rounding tie and on a 30-layer model
the flips compound, so a dequantize-then-fp32 emulation that is right to 1e-7 per operation still picks another
top-1 token at ~4% of positions. A tiny model's logits measured in real llama.cpp are kept as a test fixture
(tests/export/data), so CI checks this emulation without building llama.cpp; docs/export.md has the SmolLM2 figures.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import ZeropointError
from ..models.gguf import config_from_gguf, dequant_numpy, hf_name, read_header
from ..models.llama import rope_inv_freq

LLAMA_CPP = "llama.cpp"
LLAMA_CPP_EMULATED = "llama.cpp-emulated"
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
# Every function below reproduces one ggml-cpu operation in llama.cpp's own fp32 order, so the emulation is llama.cpp
# to the bit: a Q8_0 activation code flips at a rounding tie when an input is off by one ulp, and on a 30-layer model
# such flips compound until 4% of top-1 tokens differ (docs/export.md), so being close is not enough.
F32, F64 = np.float32, np.float64


@functools.lru_cache(maxsize=1)
def _libm():
    """The C library's math (glibc's cosf/sinf, which llama.cpp's RoPE calls), or None where it cannot be loaded."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    except OSError:
        return None
    for fn in (lib.cosf, lib.sinf):
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lib


def _fma(a, b, c) -> np.ndarray:
    """fp32 fused multiply-add: the product of two fp32 values is exact in fp64, so one fp64 add and one rounding
    to fp32 (a double rounding can differ from the FMA's single one only at an exact fp32 tie, ~2^-29 of adds)."""
    return (np.asarray(a, F64) * np.asarray(b, F64) + np.asarray(c, F64)).astype(F32)


def _hsum(x: np.ndarray) -> np.ndarray:
    """Horizontal sum of SIMD lanes on the last axis, as tinyBLAS's hsum and _mm512_reduce_add_ps add them: the
    high half onto the low half until one lane is left."""
    x = x.astype(F32)
    while x.shape[-1] > 1:
        h = x.shape[-1] // 2
        x = (x[..., :h] + x[..., h:]).astype(F32)
    return x[..., 0]


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """ggml_compute_forward_rms_norm_f32 (+ the MUL by the norm weight): fp32 squares summed in double, then fp32."""
    s = (x * x).astype(F32).astype(F64).sum(-1, keepdims=True)
    scale = (F32(1) / np.sqrt((s / x.shape[-1]).astype(F32) + F32(eps))).astype(F32)
    return ((x * scale).astype(F32) * w).astype(F32)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize_row_q8_0 / quantize_row_q8_1 (x86 AVX path) on rows of x (..., K): codes (..., K/32, 32) as fp32,
    the fp16 scale d = amax / 127 and, for Q8_1, the fp16 s = d * sum(codes), both (..., K/32) as fp32. The codes
    are round(x * (127 / amax)) with ties to even, as _mm256_round_ps(_MM_ROUND_NEAREST) rounds."""
    b = np.asarray(x, F32).reshape(*x.shape[:-1], -1, 32)
    amax = np.abs(b).max(-1)
    d = (amax / F32(127)).astype(F32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, F32(127) / amax, F32(0)).astype(F32)
    q = np.rint((b * inv[..., None]).astype(F32))
    s = (d * q.sum(-1)).astype(F32)
    return q, d.astype(np.float16).astype(F32), s.astype(np.float16).astype(F32)


class _Weight:
    """One projection as stored: integer codes (out, K) and per-block fp16 scales d (and Q4_1 minimums m), or an
    fp32/fp16 matrix, multiplied the way ggml-cpu multiplies that type (__call__)."""

    def __init__(self, raw: np.ndarray, typ: int, shape: tuple[int, int]):
        if typ not in GGML_TYPE_NAMES or typ == 30:
            raise LlamaCppError(f"ggml type {GGML_TYPE_NAMES.get(typ, typ)} has no emulation (F32, F16, Q8_0, Q4_0, "
                                "Q4_1 do); install llama-cpp-python to run the file in llama.cpp itself")
        self.typ, (self.n, self.k) = typ, shape
        n_el = self.n * self.k
        if typ in (0, 1):
            self.w = dequant_numpy(raw, n_el, typ).reshape(shape)
            return
        blk_bytes = {2: 18, 3: 20, 8: 34}[typ]
        b = np.asarray(raw[:n_el // 32 * blk_bytes]).reshape(self.n, self.k // 32, blk_bytes)
        self.d = b[..., 0:2].copy().view(np.float16).astype(F32)[..., 0]           # (out, K/32)
        self.m = b[..., 2:4].copy().view(np.float16).astype(F32)[..., 0] if typ == 3 else None
        if typ == 8:
            self.q = b[..., 2:].view(np.int8).reshape(self.n, self.k)
        else:   # low nibbles are elements 0..15 of a block, high nibbles 16..31; Q4_0 codes are centred at 8
            qs = b[..., 4:] if typ == 3 else b[..., 2:]
            q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8)
            self.q = (q - 8 if typ == 2 else q).reshape(self.n, self.k)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """GET_ROWS (the token embedding): the dequantized rows, exact."""
        if self.typ in (0, 1):
            return self.w[idx]
        v = self.q[idx].reshape(*idx.shape, -1, 32).astype(F32) * self.d[idx][..., None]
        return (v + self.m[idx][..., None] if self.m is not None else v).astype(F32).reshape(*idx.shape, self.k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        shape = x.shape
        x = x.reshape(-1, self.k)
        y = self._float(x) if self.typ in (0, 1) else self._blocks(x)
        return y.reshape(*shape[:-1], self.n)

    def _float(self, x):
        """F16 weights: tinyBLAS<16, __m512> on fp16 activations (F32 weights: fp32 ones), 16 fp32 FMA lanes over K,
        then _mm512_reduce_add_ps; llamafile_sgemm takes it when K % 16 == 0 and out % 4 == 0, else ggml's vec_dot
        (another order: approximated here by an fp32 BLAS product)."""
        xa = x.astype(np.float16).astype(F32) if self.typ == 1 else x
        if self.k % 16 or self.n % 4:
            return (xa @ self.w.T).astype(F32)
        step = max(4, (1 << 22) // (16 * x.shape[0]) // 4 * 4)       # 16 fp32 lanes per output: bounded memory
        return np.concatenate([_lanes16(self.w[n0:n0 + step], xa) for n0 in range(0, self.n, step)], -1)

    def _blocks(self, x, budget: int = 1 << 25):
        """Q8_0 / Q4_0: tinyBLAS_Q0_AVX; Q4_1: ggml_vec_dot_q4_1_q8_1. Both: per 32-block 8 int32 lanes of 4 code
        products (exact), lane = fma(fp32(d_w * d_x), lane sum, lane) over the blocks, then an 8-lane hsum; Q4_1 adds
        sum over blocks of m * s (fma, fp32) after the hsum."""
        xq, xd, xs = quantize_activations(x)
        T, nb = xq.shape[0], self.k // 32
        X = np.ascontiguousarray(xq.reshape(T, nb * 8, 4).transpose(1, 0, 2))           # (lanes, T, 4)
        out = np.empty((T, self.n), F32)
        step = max(8, budget // (nb * 8 * T))
        for n0 in range(0, self.n, step):
            q = self.q[n0:n0 + step]
            W = np.ascontiguousarray(q.reshape(-1, nb * 8, 4).transpose(1, 2, 0)).astype(F32)
            P = np.matmul(X, W).reshape(nb, 8, T, -1)                                    # exact integers
            D = (xd.T[:, :, None] * self.d[n0:n0 + step].T[:, None, :]).astype(F64)     # fp32 products
            acc = np.zeros(P.shape[1:], F64)
            for b in range(nb):
                acc = (D[b] * P[b] + acc).astype(F32).astype(F64)
            y = _hsum(np.moveaxis(acc, 0, -1))
            if self.m is not None:
                summs = np.zeros(y.shape, F32)
                for b in range(nb):
                    summs = _fma(xs[:, b, None], self.m[n0:n0 + step, b][None, :], summs)
                y = (y + summs).astype(F32)
            out[:, n0:n0 + step] = y
        return out


def _lanes16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tinyBLAS<16, __m512> C = b a^T: a (..., M, K), b (..., N, K) -> (..., N, M); lane j of each output sums
    a[k] * b[k] for k = j mod 16 with FMA in K order, then _mm512_reduce_add_ps. llamafile_sgemm declines shapes
    with K % 16 or M % 4 (ggml's vec_dot_f16 then sums in another order): an fp32 product stands in for those."""
    K = a.shape[-1]
    if K % 16 or a.shape[-2] % 4:
        return (b @ np.swapaxes(a, -1, -2)).astype(F32)
    A = a.reshape(*a.shape[:-1], K // 16, 16)
    B = b.reshape(*b.shape[:-1], K // 16, 16)
    acc = np.zeros(b.shape[:-1] + a.shape[-2:-1] + (16,), F32)
    for s in range(K // 16):
        acc = _fma(A[..., None, :, s, :], B[..., :, None, s, :], acc)
    return _hsum(acc)


def _v_expf(x: np.ndarray) -> np.ndarray:
    """ggml_v_expf (vec.h, AVX512F+DQ): exp by a degree-5 polynomial and _mm512_scalef_ps, as softmax and SiLU use."""
    h = float.fromhex
    x = x.astype(F32)
    r = F32(h("0x1.8p23"))
    n = (_fma(x, F32(h("0x1.715476p+0")), r) - r).astype(F32)
    b = _fma(-n, F32(h("0x1.7f7d1cp-20")), _fma(-n, F32(h("0x1.62e4p-1")), x))
    u = (b * b).astype(F32)
    j = _fma(_fma(_fma(F32(h("0x1.0e4020p-7")), b, F32(h("0x1.573e2ep-5"))), u,
                  _fma(F32(h("0x1.555e66p-3")), b, F32(h("0x1.fffdb6p-2")))),
             u, _fma(F32(h("0x1.ffffecp-1")), b, F32(1)))
    e = np.clip(np.nan_to_num(n, nan=0.0), -300, 300).astype(np.int32)
    res = np.ldexp(j, e).astype(F32)
    return np.where(np.abs(n) > 192, np.where(n <= 0, F32(0), F32(np.inf)), res).astype(F32)


def _softmax(s: np.ndarray) -> np.ndarray:
    """ggml_compute_forward_soft_max_f32 on rows whose length is a multiple of 16: exp(x - max) by ggml_v_expf,
    16-lane sums added in double, times fp32(1 / sum)."""
    e = _v_expf((s - s.max(-1, keepdims=True)).astype(F32))
    blocks = _hsum(e.reshape(*e.shape[:-1], -1, 16)).astype(F64)
    total = np.zeros(blocks.shape[:-1], F64)
    for i in range(blocks.shape[-1]):
        total = total + blocks[..., i]
    return (e * (1.0 / total).astype(F32)[..., None]).astype(F32)


def _swiglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """ggml_vec_swiglu_f32: silu(g) = g / (1 + ggml_v_expf(-g)), times u."""
    e = _v_expf((F32(0) - g).astype(F32))
    return ((g / (F32(1) + e).astype(F32)).astype(F32) * u).astype(F32)


def _rope_cache(T: int, n_dims: int, base: float, freq_factors: np.ndarray | None) -> np.ndarray:
    """ggml_rope_cache_init: theta = p * theta_scale^i by repeated fp32 products, cosf/sinf from the C library
    (glibc's cosf is not always the correctly rounded value; numpy's is used only where libm cannot be loaded)."""
    ts = F32(np.float64(F32(base)) ** np.float64(F32(-2.0) / F32(n_dims)))   # powf: correctly rounded here
    theta = np.empty((T, n_dims // 2), F32)
    th = np.arange(T, dtype=F32)
    for i in range(n_dims // 2):
        theta[:, i] = th if freq_factors is None else (th / F32(freq_factors[i])).astype(F32)
        th = (th * ts).astype(F32)
    libm = _libm()
    if libm is None:
        return np.stack([np.cos(theta.astype(F64)).astype(F32), np.sin(theta.astype(F64)).astype(F32)], -1)
    flat = theta.ravel().tolist()
    cs = np.array([(libm.cosf(t), libm.sinf(t)) for t in flat], F32)
    return cs.reshape(T, n_dims // 2, 2)


def _rope(x: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """rotate_pairs for GGML_ROPE_TYPE_NORMAL on (B, T, heads, dim) in GGUF row order (pairs 2i, 2i+1); GCC
    contracts x0*cos - x1*sin into fma(x0, cos, -(x1*sin)) and x0*sin + x1*cos into fma(x0, sin, x1*cos)."""
    c, s = cache[None, :, None, :, 0], cache[None, :, None, :, 1]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = _fma(x0, c, -(x1 * s).astype(F32))
    out[..., 1::2] = _fma(x0, s, (x1 * c).astype(F32))
    return out


def load_emulated(path: str | Path) -> tuple[object, dict]:
    """-> (LlamaConfig, {GGUF name: _Weight or fp32 array}) from a GGUF file, in GGUF's own row order."""
    path = Path(path)
    kv, infos, start = read_header(path)
    cfg = config_from_gguf(kv)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict = {}
    for name, dims, typ, off in infos:
        if hf_name(name) is None:
            continue
        n, shape = int(np.prod(dims)), tuple(reversed(dims))
        if typ not in (0, 1, 2, 3, 8):
            raise LlamaCppError(f"{path}: tensor {name} is ggml type {GGML_TYPE_NAMES.get(typ, typ)}; the emulation "
                                "covers F32, F16, Q8_0, Q4_0 and Q4_1: install llama-cpp-python to run it in llama.cpp")
        if len(shape) == 1:
            out[name] = dequant_numpy(mm[start + off:], n, typ).astype(F32)
        else:
            out[name] = _Weight(mm[start + off:], typ, shape)
    cfg.tie_embeddings = "output.weight" not in out
    return cfg, out


def emulate_llama_cpp(path: str | Path, tokens: np.ndarray, batch: int = 8) -> np.ndarray:
    """(B, T) token ids -> (B, T, V) fp32 logits as llama.cpp's CPU backend computes them (llama-cpp-python 0.3.36,
    x86 AVX512 build, flash attention off, F16 KV cache; docs/export.md), operation by operation."""
    cfg, W = load_emulated(path)
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    f16 = lambda a: a.astype(np.float16).astype(F32)  # noqa: E731
    T = tokens.shape[1]
    ff = None
    if cfg.rope_scaling:   # llama.cpp divides theta by the rope_freqs factors: base / scaled inverse frequency
        ff = rope_inv_freq(hd, cfg.rope_theta, None) / rope_inv_freq(hd, cfg.rope_theta, cfg.rope_scaling)
    cache = _rope_cache(T, hd, cfg.rope_theta, ff)
    L = -(-T // 16) * 16              # the KV cells that matter; the masked rest add exact zeros in llama.cpp
    mask = np.full((T, L), -np.inf, F32)
    mask[np.tril_indices(T)] = 0
    kq_scale = (F32(1) / np.sqrt(F32(hd))).astype(F32)
    head = W.get("output.weight", W["token_embd.weight"])
    outs = []
    with np.errstate(invalid="ignore", over="ignore"):
        for i0 in range(0, tokens.shape[0], batch):
            tok = tokens[i0:i0 + batch]
            B = tok.shape[0]
            x = W["token_embd.weight"].rows(tok)
            for i in range(cfg.n_layers):
                p = f"blk.{i}."
                h = _rms_norm(x, W[p + "attn_norm.weight"], cfg.norm_eps)
                q = f16(_rope(W[p + "attn_q.weight"](h).reshape(B, T, H, hd), cache)).transpose(0, 2, 1, 3)
                k = np.zeros((B, KV, L, hd), F32)
                k[:, :, :T] = f16(_rope(W[p + "attn_k.weight"](h).reshape(B, T, KV, hd), cache)).transpose(0, 2, 1, 3)
                v = np.zeros((B, KV, hd, L), F32)
                v[..., :T] = f16(W[p + "attn_v.weight"](h).reshape(B, T, KV, hd)).transpose(0, 2, 3, 1)
                k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
                s = ((_lanes16(k, q) * kq_scale).astype(F32) + mask).astype(F32)       # KQ: F16 cache x fp16 Q
                a = _lanes16(v, f16(_softmax(s)))                                      # KQV: probabilities as fp16
                x = (x + W[p + "attn_output.weight"](a.transpose(0, 2, 1, 3).reshape(B, T, H * hd))).astype(F32)
                h = _rms_norm(x, W[p + "ffn_norm.weight"], cfg.norm_eps)
                g = _swiglu(W[p + "ffn_gate.weight"](h), W[p + "ffn_up.weight"](h))
                x = (x + W[p + "ffn_down.weight"](g)).astype(F32)
            outs.append(head(_rms_norm(x, W["output_norm.weight"], cfg.norm_eps)))
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
        "runtime": LLAMA_CPP_EMULATED, "what": "numpy emulation of llama.cpp's x86 CPU kernels in their own fp32 order "
        "(export/llamacpp.py): activations quantized to the weight's vec_dot_type, tinyBLAS lanes, fp16 KV cache",
        "why": "llama-cpp-python is not installed" if not ver else "asked for"}
