"""GGUF (v3) writer for Llama-family checkpoints: F32, F16 or Q8_0 tensors, llama.cpp metadata, tokenizer and
chat template, and the q/k row permutation llama.cpp's interleaved-pair RoPE expects.

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version, tensor count, kv count; the kv
pairs; one info record per tensor (name, dims innermost-first, type, offset); padding to `general.alignment`;
the tensor data, each tensor starting on an aligned offset. 1-D tensors (norms) stay F32 in every mode, as
llama.cpp's converter does; Q8_0 is blocks of 32 values: one fp16 scale d and 32 int8 codes (d searched per
block, and with calibration Hessians the codes rounded by GPTQ: `export.quant.quantize_q8_0`).

    write_llama_gguf(cfg, weights, tokenizer_meta, "model.gguf", tensor_type="q8_0", hessians=None)
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ZeropointError
from ..models.gguf import gguf_name, permute_rope
from ..models.llama import rope_inv_freq
from .quant import quantize_q8_0

ALIGN = 32
GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}       # llama.cpp's LLAMA_FTYPE_ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
# value types of GGUF metadata
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)

class GGUFWriteError(ZeropointError):
    pass


def q8_0_bytes(d: np.ndarray, q: np.ndarray) -> bytes:
    """ggml's block_q8_0 layout: per block of 32, the fp16 scale then 32 int8 codes. d (..., K/32), q (..., K)."""
    d = np.ascontiguousarray(d, np.float16).reshape(-1, 1)
    blocks = np.empty((d.shape[0], 34), np.uint8)
    blocks[:, :2] = d.view(np.uint8)
    blocks[:, 2:] = np.ascontiguousarray(q, np.int8).reshape(-1, 32).view(np.uint8)
    return blocks.tobytes()


def _tensor_bytes(w: np.ndarray, ttype: str, hessian: np.ndarray | None = None) -> tuple[bytes, int]:
    if ttype == "f32" or w.ndim == 1:
        return np.ascontiguousarray(w, np.float32).tobytes(), GGML_TYPES["f32"]
    if ttype == "f16":
        return np.ascontiguousarray(w, np.float16).tobytes(), GGML_TYPES["f16"]
    if ttype == "q8_0":
        if w.shape[-1] % 32:
            return np.ascontiguousarray(w, np.float16).tobytes(), GGML_TYPES["f16"]   # as llama.cpp: fall back
        return q8_0_bytes(*quantize_q8_0(np.asarray(w, np.float32), hessian)), GGML_TYPES["q8_0"]
    raise GGUFWriteError(f"unknown GGUF tensor type {ttype!r}; choose f32, f16 or q8_0")


# ---- metadata encoding --------------------------------------------------------------------------------------
def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _scalar(vtype: int, v) -> bytes:
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
           I64: "<q", F64: "<d"}
    return _str(v) if vtype == STR else struct.pack(fmt[vtype], v)


def _kv(key: str, v, vtype: int | None = None) -> bytes:
    """Encode one pair; the type is inferred (str, bool, int -> u32/i64, float -> f32, list -> array)."""
    if isinstance(v, (list, tuple)):
        if not v:
            et = STR
        else:
            et = vtype if vtype is not None else (STR if isinstance(v[0], str) else I32 if isinstance(v[0], int) else F32)
        return _str(key) + struct.pack("<IIQ", ARR, et, len(v)) + b"".join(_scalar(et, x) for x in v)
    if vtype is None:
        vtype = STR if isinstance(v, str) else BOOL if isinstance(v, bool) else \
            (U32 if 0 <= v < 2**32 else I64) if isinstance(v, int) else F32
    return _str(key) + struct.pack("<I", vtype) + _scalar(vtype, v)


def tokenizer_metadata(tok=None, gguf_meta: dict | None = None) -> dict:
    """`tokenizer.*` keys: copied from a source GGUF when there is one, else built from an HF tokenizer
    (byte-level BPE vocab + merges, special tokens as control tokens, the chat template)."""
    if gguf_meta:
        return {k: v for k, v in gguf_meta.items() if k.startswith("tokenizer.")}
    if tok is None:
        raise GGUFWriteError("no tokenizer to embed in the GGUF; pass the source's tokenizer")
    spec = json.loads(tok.hf.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise GGUFWriteError(f"tokenizer model {model.get('type')!r} cannot be written to GGUF here (only byte-level BPE)")
    vocab = dict(model["vocab"])
    for a in spec.get("added_tokens", []):
        vocab.setdefault(a["content"], a["id"])
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [1] * n
    for t, i in vocab.items():
        tokens[i] = t
    for a in spec.get("added_tokens", []):
        types[a["id"]] = 3 if a.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    # llama.cpp's pre-tokenizer names: "smollm" splits digits one by one before GPT-2's regex; "gpt-2" (not
    # "gpt2", which llama.cpp refuses to load) is GPT-2's regex alone
    pre = "smollm" if "Digits" in json.dumps(spec.get("pre_tokenizer")) else "gpt-2"
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges}
    for key, v in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id), ("padding_token_id", tok.pad_id)):
        if v is not None:
            meta[f"tokenizer.ggml.{key}"] = int(v)
    meta["tokenizer.ggml.add_bos_token"] = bool(tok.add_bos)
    if tok.chat_template:
        meta["tokenizer.chat_template"] = tok.chat_template
    return meta


_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id", "seperator_token_id")


def _tok_kvs(meta: dict) -> list[bytes]:
    out = []
    for k, v in meta.items():
        if v is None:
            continue
        if k == "tokenizer.ggml.token_type":
            out.append(_kv(k, [int(x) for x in v], I32))
        elif k == "tokenizer.ggml.scores":
            out.append(_kv(k, [float(x) for x in v], F32))
        elif any(k.endswith(s) for s in _TOKEN_ID_KEYS):
            out.append(_kv(k, int(v), U32))
        else:
            out.append(_kv(k, v))
    return out


def write_llama_gguf(cfg, weights: dict[str, np.ndarray], tok_meta: dict, path: str | Path,
                     tensor_type: str = "f32", name: str = "zeropoint-export", hessians: dict | None = None,
                     progress=None, tensor_types: dict[str, str] | None = None) -> dict:
    """Write a llama-architecture GGUF from HF-named fp32 weights. Atomic: a temp file renamed into place.
    `hessians` (HF weight name -> X^T X of its input, `models.reference.linear_input_hessians`) make Q8_0
    rounding calibration-aware; weights without one are rounded data-free. `tensor_types` (HF name -> f32, f16
    or q8_0) overrides `tensor_type` for single tensors: llama.cpp's mixed files, such as a Q8_0 file whose token
    embedding stays F16. `progress(done, total)` per tensor."""
    overrides = tensor_types or {}
    if bad := [t for t in (tensor_type, *overrides.values()) if t not in GGML_TYPES]:
        raise GGUFWriteError(f"unknown GGUF tensor type {bad[0]!r}; choose f32, f16 or q8_0")
    if unknown := sorted(set(overrides) - set(weights)):
        raise GGUFWriteError(f"tensor_types names tensors the model does not have: {unknown[:3]}")
    a = "llama"
    kvs = [_kv("general.architecture", a), _kv("general.name", name), _kv("general.alignment", ALIGN, U32),
           _kv("general.file_type", FILE_TYPES[tensor_type], U32),
           _kv(f"{a}.context_length", cfg.max_seq_len, U32), _kv(f"{a}.embedding_length", cfg.dim, U32),
           _kv(f"{a}.block_count", cfg.n_layers, U32), _kv(f"{a}.feed_forward_length", cfg.hidden_dim, U32),
           _kv(f"{a}.attention.head_count", cfg.n_heads, U32), _kv(f"{a}.attention.head_count_kv", cfg.n_kv_heads, U32),
           _kv(f"{a}.attention.layer_norm_rms_epsilon", float(cfg.norm_eps), F32),
           _kv(f"{a}.rope.freq_base", float(cfg.rope_theta), F32),
           _kv(f"{a}.rope.dimension_count", cfg.head_dim, U32), _kv(f"{a}.vocab_size", cfg.vocab_size, U32)]
    if cfg.head_dim * cfg.n_heads != cfg.dim:
        kvs += [_kv(f"{a}.attention.key_length", cfg.head_dim, U32), _kv(f"{a}.attention.value_length", cfg.head_dim, U32)]
    extra_tensors: dict[str, np.ndarray] = {}
    if cfg.rope_scaling:
        kind = cfg.rope_scaling.get("rope_type", cfg.rope_scaling.get("type"))
        if kind == "linear":
            kvs += [_kv(f"{a}.rope.scaling.type", "linear"), _kv(f"{a}.rope.scaling.factor", float(cfg.rope_scaling["factor"]), F32)]
        elif kind == "llama3":   # llama.cpp carries llama3 scaling as per-frequency divisors in rope_freqs.weight
            plain, scaled = rope_inv_freq(cfg.head_dim, cfg.rope_theta, None), rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
            extra_tensors["rope_freqs.weight"] = (plain / scaled).astype(np.float32)
        else:
            raise GGUFWriteError(f"rope scaling {kind!r} has no GGUF encoding here (supported: linear, llama3)")
    kvs += _tok_kvs(tok_meta)

    tensors: list[tuple[str, tuple, int, bytes]] = []
    for i, (hf, w) in enumerate(weights.items()):
        if progress:
            progress(i, len(weights))
        if hf == "lm_head.weight" and cfg.tie_embeddings:
            continue
        name = gguf_name(hf)
        if name is None:
            raise GGUFWriteError(f"no GGUF name for tensor {hf!r}; only Llama-family HF names are supported")
        w = np.asarray(w, np.float32)
        if hf.endswith("q_proj.weight"):       # a row permutation: the input-channel Hessian is unchanged
            w = permute_rope(w, cfg.n_heads)
        elif hf.endswith("k_proj.weight"):
            w = permute_rope(w, cfg.n_kv_heads)
        data, t = _tensor_bytes(w, overrides.get(hf, tensor_type), (hessians or {}).get(hf))
        tensors.append((name, tuple(reversed(w.shape)), t, data))
    for n, w in extra_tensors.items():
        tensors.append((n, tuple(reversed(w.shape)), 0, w.tobytes()))

    infos, offset = [], 0
    for n, dims, t, data in tensors:
        infos.append(_str(n) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
                     + struct.pack("<IQ", t, offset))
        offset += len(data) + (-len(data)) % ALIGN
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * ((-len(head)) % ALIGN)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for _, _, _, data in tensors:
                f.write(data)
                f.write(b"\0" * ((-len(data)) % ALIGN))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    types = sorted({t for _, _, t, _ in tensors})
    return {"files": [str(path)], "tensor_type": tensor_type, "n_tensors": len(tensors),
            "ggml_types": [k for k, v in GGML_TYPES.items() if v in types], "nbytes": path.stat().st_size}
