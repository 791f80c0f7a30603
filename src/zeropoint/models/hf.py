"""Hugging Face model directories in and out: config.json + safetensors (single file or sharded with an index)
+ tokenizer.json / tokenizer_config.json.

Safetensors is read and written here directly (an 8-byte header length, a JSON header, raw little-endian
bytes): no pickle anywhere, every header entry is checked against the file size before a byte is trusted, and
bf16 is widened in numpy (tinygrad's clang backend cannot compile bf16 casts on clang 14). Writes go to a temp
directory that is renamed into place, so a crash never leaves a half-written model directory.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from ..errors import ZeropointError
from ..workspace import atomic_dir
from .llama import Llama, LlamaConfig, expected_shapes
from .llama import state_dict as model_state_dict
from .tokenizer import Tokenizer


class HFFormatError(ZeropointError):
    pass


SUPPORTED_TYPES = ("llama", "mistral")
# a safetensors header: the format allows 100 MB, but parsing that much hostile JSON can take gigabytes; real
# headers are kilobytes (a 405B model's ~1,200 tensors: ~200 KB)
MAX_HEADER_BYTES = 16 << 20
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_SAVE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


# ---- config ---------------------------------------------------------------------------------------------
def config_from_hf(c: dict, max_seq_len: int | None = None, source: str = "config.json") -> LlamaConfig:
    if not isinstance(c, dict):
        raise HFFormatError(f"{source} is a JSON {type(c).__name__}, not an object of model settings")
    mt = c.get("model_type")
    if mt not in SUPPORTED_TYPES:
        raise HFFormatError(f"{source}: model_type is {mt!r}; only Llama-family decoders ({', '.join(SUPPORTED_TYPES)}) "
                            "are supported here")
    if c.get("hidden_act", "silu") != "silu":
        raise HFFormatError(f"{source}: hidden_act {_short(c.get('hidden_act'))} is not supported (Llama uses silu)")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise HFFormatError(f"{source}: attention_bias / mlp_bias checkpoints are not supported (Llama projections "
                            "are bias-free)")
    try:
        ctx = int(c.get("max_position_embeddings", 2048))
        return LlamaConfig(dim=c["hidden_size"], n_layers=c["num_hidden_layers"], n_heads=c["num_attention_heads"],
                           n_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                           hidden_dim=c["intermediate_size"], vocab_size=c["vocab_size"],
                           norm_eps=float(c.get("rms_norm_eps", 1e-6)), rope_theta=float(c.get("rope_theta", 10000.0)),
                           rope_scaling=c.get("rope_scaling"), max_seq_len=min(ctx, max_seq_len) if max_seq_len else ctx,
                           tie_embeddings=bool(c.get("tie_word_embeddings", False)), head_dim=c.get("head_dim"))
    except KeyError as e:
        raise HFFormatError(f"{source} lacks {e.args[0]!r}; is this an HF Llama config?") from None
    except (TypeError, ValueError) as e:   # a setting of the wrong type, or a shape LlamaConfig refuses
        raise HFFormatError(f"{source}: the model settings are impossible: {e}") from None


def config_to_hf(cfg: LlamaConfig, torch_dtype: str = "float32", bos_id=None, eos_id=None) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "intermediate_size": cfg.hidden_dim,
            "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
            "rope_scaling": cfg.rope_scaling, "max_position_embeddings": cfg.max_seq_len,
            "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False,
            "bos_token_id": bos_id, "eos_token_id": eos_id, "torch_dtype": torch_dtype, "use_cache": True}


# ---- safetensors ----------------------------------------------------------------------------------------
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], int]:
    """-> ({name: (dtype, shape, start, end)}, data start), every entry checked against the format and the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise HFFormatError(f"{path} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise HFFormatError(f"{path}: header length {n} is impossible for a {size}-byte file; the file is corrupt")
            raw = f.read(n)
    except OSError as e:
        raise HFFormatError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):   # not JSON, not UTF-8, or nested past the parser's stack
        raise HFFormatError(f"{path}: the safetensors header is not valid JSON; the file is corrupt") from None
    if not isinstance(header, dict):
        raise HFFormatError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object of "
                            "tensors; the file is corrupt")
    data = size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise HFFormatError(f"{path}: __metadata__ must map names to strings; the file is corrupt")
            continue
        if not isinstance(info, dict):
            raise HFFormatError(f"{path}: the entry of tensor {name} is not an object; the file is corrupt")
        dt, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dt, str) or dt not in _ST_DTYPES:
            raise HFFormatError(f"{path}: tensor {name} has unsupported dtype {_short(dt)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_int(d) and 0 <= d <= 1 << 40 for d in shape):
            raise HFFormatError(f"{path}: tensor {name} has an invalid shape {_short(shape)}; the file is corrupt")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_int(o) for o in offs)):
            raise HFFormatError(f"{path}: tensor {name} has invalid data_offsets {_short(offs)}; the file is corrupt")
        a, b = offs
        numel = int(np.prod(shape, dtype=object))
        if not (0 <= a <= b <= data) or (b - a) != numel * np.dtype(_ST_DTYPES[dt]).itemsize:
            raise HFFormatError(f"{path}: tensor {name} offsets {a}..{b} do not fit its shape {shape} or the file; "
                                "the file is corrupt or truncated")
        out[name] = (dt, tuple(shape), a, b)
    return out, 8 + n


def _short(v, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (floats widened to fp32), after checking the header."""
    path = Path(path)
    entries, start = read_safetensors_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r") if entries else None
    out = {}
    for name, (dt, shape, a, b) in entries.items():
        npdt = np.dtype(_ST_DTYPES[dt])
        arr = mm[start + a: start + b].view(npdt).reshape(shape)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dt in ("F16", "F64"):
            arr = arr.astype(np.float32)
        out[name] = np.array(arr)   # own the memory: the file may be replaced later
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write one safetensors file (keys sorted, 8-byte aligned header as the reference implementation does)."""
    header, off, blobs = {}, 0, []
    rev = {np.dtype(v): k for k, v in _ST_DTYPES.items() if k != "BF16"}
    for name in sorted(tensors):
        arr, dt = tensors[name]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt or rev[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)
        f.flush()
        os.fsync(f.fileno())


def _to_numpy(t) -> np.ndarray:
    return t.float().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=np.float32)


def _encode(arr: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    arr = np.asarray(arr, dtype=np.float32)
    if dtype == "float32":
        return arr, "F32"
    if dtype == "float16":
        return arr.astype(np.float16), "F16"
    u = arr.view(np.uint32)   # bf16: round to nearest even on the top 16 bits
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16), "BF16"


# ---- directories ----------------------------------------------------------------------------------------
def load_hf_dir(path: str | Path, max_seq_len: int | None = None) -> tuple[LlamaConfig, dict[str, Tensor], Tokenizer | None]:
    """-> (config, HF-named fp32 weights, tokenizer or None when the directory has no tokenizer.json)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise HFFormatError(f"{path} has no config.json; an HF model directory needs config.json and *.safetensors")
    cfg = config_from_hf(_read_json(path / "config.json"), max_seq_len, str(path / "config.json"))
    want = expected_shapes(cfg)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        doc = _read_json(index)
        wm = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise HFFormatError(f"{index} has no weight_map of tensor names to shard file names; the index is corrupt")
        files = sorted(set(wm.values()))
        for f in files:
            if Path(f).name != f or f in (".", "..") or not (path / f).is_file():
                raise HFFormatError(f"{index} names shard {f!r}, which is missing from {path} (or not a plain file name)")
    elif (path / "model.safetensors").is_file():
        files, wm = ["model.safetensors"], None
    else:
        found = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" It has {found}: pickle-based weights are never loaded; convert them to safetensors." if found else ""
        raise HFFormatError(f"{path} has no model.safetensors or model.safetensors.index.json.{hint}")
    weights: dict[str, Tensor] = {}
    for f in files:
        for k, (_, shape, _, _) in read_safetensors_header(path / f)[0].items():   # shapes before any tensor is read
            if k in want and shape != want[k]:
                raise HFFormatError(f"{path / f}: tensor {k} has shape {shape}, but config.json's model needs {want[k]}")
        for k, arr in read_safetensors(path / f).items():
            if wm is not None and wm.get(k) != f:
                raise HFFormatError(f"{path / f} holds {k}, which the index places in {wm.get(k)!r}; the directory is inconsistent")
            weights[k] = Tensor(arr)
    if wm is not None and (missing := sorted(set(wm) - set(weights))):
        raise HFFormatError(f"the index lists {missing[:3]} but no shard holds them")
    tok = Tokenizer.from_file(path / "tokenizer.json") if (path / "tokenizer.json").is_file() else None
    return cfg, weights, tok


def _read_json(p: Path):
    try:
        return json.loads(p.read_bytes())
    except OSError as e:
        raise HFFormatError(f"cannot read {p}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise HFFormatError(f"{p} is not valid JSON ({type(e).__name__}: {str(e)[:120]}); the file is corrupt") from None


def save_hf_dir(model_or_state, cfg: LlamaConfig, tokenizer: Tokenizer | None, out_dir: str | Path,
                max_shard_bytes: int = 2 << 30, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write an HF-format directory atomically; -> its path. `model_or_state` is a `Llama` or a dict of HF-named
    tensors/arrays. `dtype` is the stored precision (float32 keeps the round trip exact)."""
    out_dir = Path(out_dir)
    if dtype not in _SAVE_DTYPES:
        raise HFFormatError(f"dtype {dtype!r} is not one of {', '.join(_SAVE_DTYPES)}")
    if out_dir.exists() and not overwrite:
        raise HFFormatError(f"{out_dir} already exists; choose a new directory (nothing was overwritten)")
    state = model_state_dict(model_or_state) if isinstance(model_or_state, Llama) else dict(model_or_state)
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    arrays = {k: _encode(_to_numpy(v), dtype) for k, v in state.items()}
    # greedy sharding in key order (layers stay together); HF names shards model-0000i-of-0000n
    shards: list[dict] = [{}]
    size = 0
    for k in sorted(arrays, key=_natural_key):
        nb = arrays[k][0].nbytes
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = arrays[k]
        size += nb
    # with overwrite, build beside the old directory and swap at the end: the old one survives any failure
    target = out_dir.with_name(f".{out_dir.name}.new-{os.getpid()}") if out_dir.exists() else out_dir
    with atomic_dir(target) as tmp:
        names = ["model.safetensors"] if len(shards) == 1 else \
            [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for name, shard in zip(names, shards):
            write_safetensors(tmp / name, shard, {"format": "pt"})
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(a.nbytes for a, _ in arrays.values())},
                     "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        bos = tokenizer.bos_id if tokenizer else None
        eos = tokenizer.eos_id if tokenizer else None
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg, dtype, bos, eos), indent=2) + "\n", encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": eos}, indent=2) + "\n",
                                                    encoding="utf-8")
        if tokenizer is not None:
            tokenizer.hf.save(str(tmp / "tokenizer.json"))
            name = lambda i: tokenizer.hf.id_to_token(i) if i is not None else None  # noqa: E731
            tc = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tokenizer.bos_id),
                  "eos_token": name(tokenizer.eos_id), "pad_token": name(tokenizer.pad_id),
                  "add_bos_token": tokenizer.add_bos, "model_max_length": cfg.max_seq_len,
                  "additional_special_tokens": tokenizer.special_tokens}
            if tokenizer.chat_template:
                tc["chat_template"] = tokenizer.chat_template
            (tmp / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")
    if target != out_dir:
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(target, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _natural_key(k: str):
    return [int(p) if p.isdigit() else p for p in k.split(".")]
