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

The header is read here, bounded before anything is allocated: every length and count is checked against the
bytes left in the file (and a hard cap), value and tensor types against the known sets, and every tensor's bytes
against the file size, so a corrupt or hostile file is a `GGUFError` naming the file and the field - never a
struct.error, MemoryError or a reshape failure deep in the loader.
"""
from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np
from tinygrad import Tensor
from tinygrad.llm.gguf import _GGML_NATIVE, _GGML_QUANT, gguf_load  # pinned tinygrad 0.14: its loader's tables

from ..errors import ZeropointError
from .llama import LlamaConfig, expected_shapes

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


def config_from_gguf(kv: dict, max_seq_len: int | None = None, source: str = "GGUF metadata") -> LlamaConfig:
    arch = kv.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{source}: GGUF architecture is {arch!r}; only 'llama' (Llama 2/3, Mistral, SmolLM2) is "
                        "supported")

    def g(key: str, default=None, kind: type = int):
        v = kv.get(f"{arch}.{key}", default)
        if v is None:
            raise GGUFError(f"{source}: metadata lacks {arch}.{key}; is this a llama.cpp Llama GGUF?")
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
        if not ok or (kind is float and not math.isfinite(v)):
            raise GGUFError(f"{source}: {arch}.{key} is {_short(v)}, not {'an integer' if kind is int else 'a number'}")
        return v
    n_heads, dim = g("attention.head_count"), g("embedding_length")
    if n_heads < 1:
        raise GGUFError(f"{source}: {arch}.attention.head_count is {n_heads}; a model needs at least one head")
    head_dim = g("attention.key_length", dim // n_heads)
    if g("rope.dimension_count", head_dim) != head_dim:
        raise GGUFError(f"{source}: partial-rotary GGUF models (rope.dimension_count < head_dim) are not supported")
    tokens = kv.get("tokenizer.ggml.tokens", [])
    vocab = g("vocab_size", 0) or (len(tokens) if isinstance(tokens, list) else 0)
    scaling = None
    if kv.get(f"{arch}.rope.scaling.type") == "linear":
        scaling = {"rope_type": "linear", "factor": float(g("rope.scaling.factor", kind=float))}
    ctx = g("context_length", 2048)
    try:
        return LlamaConfig(dim=dim, n_layers=g("block_count"), n_heads=n_heads,
                           n_kv_heads=g("attention.head_count_kv", n_heads), hidden_dim=g("feed_forward_length"),
                           vocab_size=vocab, norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5, float)),
                           rope_theta=float(g("rope.freq_base", 10000.0, float)), rope_scaling=scaling,
                           max_seq_len=min(ctx, max_seq_len) if max_seq_len else ctx,
                           tie_embeddings=False, head_dim=head_dim)
    except ValueError as e:
        raise GGUFError(f"{source}: the model shape in its metadata is impossible: {e}") from None


def _short(v, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


# ---- header --------------------------------------------------------------------------------------------------
# ggml type id -> (elements per block, bytes per block): the types tinygrad can dequantize, so the set we can load
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {t: (1, dt.itemsize) for t, dt in _GGML_NATIVE.items()} | dict(_GGML_QUANT)
_NUMPY_TYPES = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34)}

STR, ARR = 8, 9
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
               12: "<f8"}
MAX_KEY_BYTES = 65_535                 # the GGUF spec's key limit
MAX_STRING_BYTES = 16 << 20            # a metadata string (chat templates are kilobytes)
MAX_KEYS = 1 << 16                     # metadata keys (real files: ~50)
MAX_TENSORS = 1 << 20                  # tensor infos (real files: hundreds to a few thousand)
MAX_VALUES = 1 << 24                   # array elements in the whole header (a 128k-token vocab: ~400k)
MAX_ARRAY_DEPTH = 4
MAX_DIMS = 4                           # GGML_MAX_DIMS
MAX_ELEMENTS = 1 << 40


class _Reader:
    """Sequential reads over a GGUF header that never ask for more bytes than the file has left."""

    def __init__(self, f, path: Path, size: int):
        self.f, self.path, self.size, self.pos, self.values = f, path, size, 0, 0

    def fail(self, msg: str) -> GGUFError:
        return GGUFError(f"{self.path}: {msg}; the file is corrupt or not a GGUF file")

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise self.fail(f"truncated: {what} needs {n:,} bytes at byte {self.pos:,}, but the file ends at "
                            f"byte {self.size:,}")
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail(f"truncated: the file ended while reading {what}")
        self.pos += n
        return data

    def scalar(self, typ: int, what: str):
        fmt = _SCALARS[typ]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item_bytes: int, cap: int) -> int:
        n = self.scalar(10, what)
        left = self.size - self.pos
        if n * min_item_bytes > left:
            raise self.fail(f"{what} is {n:,}, more than the {left:,} bytes left in the file can hold")
        if n > cap:
            raise self.fail(f"{what} is {n:,}, over the limit of {cap:,}")
        return n

    def string(self, what: str, limit: int, strict: bool) -> str:
        n = self.scalar(10, f"the length of {what}")
        if n > limit:
            raise self.fail(f"{what} is {n:,} bytes long, over the {limit:,}-byte limit")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if strict:
                raise self.fail(f"{what} is not UTF-8 text (byte {e.start} of it is {raw[e.start:e.start + 1]!r})") from None
            return raw.decode("utf-8", errors="replace")   # as llama.cpp: tokens are bytes; show them, do not die

    def value(self, typ: int, what: str, depth: int = 0):
        if typ == STR:
            return self.string(what, MAX_STRING_BYTES, strict=False)
        if typ == ARR:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.fail(f"{what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
            sub = self.scalar(4, f"the element type of {what}")
            if sub not in _SCALARS and sub not in (STR, ARR):
                raise self.fail(f"{what} is an array of value type {sub}, which is not a GGUF type (0-12)")
            item = struct.calcsize(_SCALARS[sub]) if sub in _SCALARS else 8 if sub == STR else 12
            n = self.count(f"the length of {what}", item, MAX_VALUES - self.values)   # before any is allocated
            self.values += n
            if sub in _NP_SCALARS:
                return np.frombuffer(self.take(n * item, what), dtype=_NP_SCALARS[sub]).tolist()
            return [self.value(sub, what, depth + 1) for _ in range(n)]
        if typ not in _SCALARS:
            raise self.fail(f"{what} has value type {typ}, which is not a GGUF type (0-12)")
        return self.scalar(typ, what)


def read_header(path: str | Path, tensors: bool = True) -> tuple[dict, list[tuple[str, tuple[int, ...], int, int]], int]:
    """-> (metadata kv, [(name, dims (ggml order), ggml type, offset)], data start): the one GGUF header reader,
    every length, count, type and tensor extent checked before anything is allocated. `tensors=False` stops after
    the metadata (milliseconds: what reading a tokenizer or a file's name needs); the tensor list is then empty
    and the data start 0."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file {path} does not exist; pass a .gguf path, an HF directory or a named model")
    try:
        f = open(path, "rb")
        size = path.stat().st_size
    except OSError as e:
        raise GGUFError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        r = _Reader(f, path, size)
        if size < 24 or r.take(4, "the magic") != b"GGUF":
            raise GGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic); pass a llama.cpp .gguf")
        version = r.scalar(4, "the version")
        if version not in (2, 3):
            raise GGUFError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
        n_tensors = r.count("the tensor count", 24, MAX_TENSORS)   # name length, dim count, type, offset
        n_kv = r.count("the metadata key count", 13, MAX_KEYS)     # key length, value type, one byte of value
        kv: dict = {}
        for i in range(n_kv):
            key = r.string(f"metadata key {i}", MAX_KEY_BYTES, strict=True)
            if key in kv:
                raise r.fail(f"metadata key {key!r} appears twice")
            kv[key] = r.value(r.scalar(4, f"the value type of {key}"), key)
        if not tensors:
            return kv, [], 0
        infos, names = [], set()
        for i in range(n_tensors):
            name = r.string(f"the name of tensor {i}", 1024, strict=True)
            if name in names:
                raise r.fail(f"tensor {name!r} appears twice")
            names.add(name)
            nd = r.scalar(4, f"the dimension count of {name}")
            if not 1 <= nd <= MAX_DIMS:
                raise r.fail(f"tensor {name} has {nd} dimensions; GGUF tensors have 1 to {MAX_DIMS}")
            dims = tuple(r.scalar(10, f"the dimensions of {name}") for _ in range(nd))
            infos.append((name, dims, r.scalar(4, f"the type of {name}"), r.scalar(10, f"the offset of {name}")))
        align = kv.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or not 1 <= align <= 1 << 16 or align & (align - 1):
            raise r.fail(f"general.alignment is {_short(align)}; it must be a power of two up to 65536")
        data_start = (r.pos + align - 1) // align * align
    for name, dims, typ, off in infos:
        if typ not in GGML_TYPE_SIZES:
            raise GGUFError(f"{path}: tensor {name} has ggml type {typ}, which this loader cannot read (known: "
                            f"{', '.join(map(str, sorted(GGML_TYPE_SIZES)))})")
        blk, blk_bytes = GGML_TYPE_SIZES[typ]
        n = math.prod(dims)
        if not all(1 <= d <= MAX_ELEMENTS for d in dims) or n > MAX_ELEMENTS or n % blk:
            raise GGUFError(f"{path}: tensor {name} has impossible dimensions {dims} for ggml type {typ}; the file is "
                            "corrupt")
        nbytes = n // blk * blk_bytes
        if off % align or data_start + off + nbytes > size:
            raise GGUFError(f"{path}: tensor {name} ({nbytes:,} bytes at data offset {off:,}) "
                            + ("is not aligned" if off % align else f"runs past the end of the file ({size:,} bytes): "
                               "the file is truncated"))
    return kv, infos, data_start


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


def _check_shapes(path: Path, cfg: LlamaConfig, infos) -> None:
    """Every tensor the model uses has the shape the metadata's config gives it (else the q/k un-permutation and
    the model's own load would fail deep inside with a reshape error)."""
    want = expected_shapes(cfg)
    for name, dims, _, _ in infos:
        key = hf_name(name)
        if key is not None and key in want and tuple(reversed(dims)) != want[key]:
            raise GGUFError(f"{path}: tensor {name} has shape {tuple(reversed(dims))}, but the metadata's model needs "
                            f"{want[key]}; the file is corrupt or its metadata does not describe it")


def load_gguf(path: str | Path, max_seq_len: int | None = None) -> tuple[LlamaConfig, dict[str, Tensor], dict]:
    """-> (config, HF-named fp32 weights (lazy: realized when loaded into a model), tokenizer metadata).

    The metadata dict holds every `tokenizer.*` key of the file (vocab, merges, special ids, chat template)."""
    path = Path(path)
    kv, infos, data_start = read_header(path)
    cfg = config_from_gguf(kv, max_seq_len, str(path))
    _check_shapes(path, cfg, infos)
    if kv.get("split.count", 1) <= 1 and all(typ in _NUMPY_TYPES for _, _, typ, _ in infos):
        raw = _load_numpy(path, infos, data_start, cfg.n_heads, cfg.n_kv_heads)   # already un-permuted
    else:
        try:
            kv, raw = gguf_load(path)
        except (ValueError, KeyError, IndexError, TypeError, struct.error, OSError) as e:
            raise GGUFError(f"cannot read {path}: {type(e).__name__}: {e}") from None
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
