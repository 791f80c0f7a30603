"""`load_model(ref)`: a named model whose weights set-up installed, a `.gguf` file, or an HF directory."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from tinygrad import dtypes
from tinygrad.dtype import DType

from ..data.assets import smollm2_gguf
from ..engine import cpu_threads, jitcache
from ..errors import ZeropointError
from .gguf import load_gguf, read_header, tokenizer_metadata
from .hf import load_hf_dir
from .llama import Llama, LlamaConfig, WeightsMismatch, from_weights
from .tokenizer import ByteTokenizer, Tokenizer, TokenizerError


class ModelNotFound(ZeropointError):
    pass


def _smollm2_path() -> Path:
    return smollm2_gguf()


# named model -> function returning its installed weights file/dir (raises AssetMissing naming the fix)
NAMED_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m": _smollm2_path,
    "smollm2-135m-instruct": _smollm2_path,   # the installed GGUF is the instruct model
}

DTYPES = {"float32": dtypes.float32, "fp32": dtypes.float32, "float16": dtypes.float16, "fp16": dtypes.float16,
          "bfloat16": dtypes.bfloat16, "bf16": dtypes.bfloat16}


def parse_dtype(name: str | DType) -> DType:
    if isinstance(name, DType):
        return name
    if name not in DTYPES:
        raise ZeropointError(f"unknown compute dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_ref(ref: str | Path) -> Path:
    """The file or directory a model reference points at, or a clear error listing what is accepted."""
    if str(ref) in NAMED_MODELS:
        return NAMED_MODELS[str(ref)]()
    p = Path(ref)
    if p.exists():
        return p
    raise ModelNotFound(f"no model {str(ref)!r}: not a named model ({', '.join(NAMED_MODELS)}), and no such file or "
                        "directory; pass a named model, a .gguf file or an HF directory (config.json + *.safetensors)")


def load_weights_any(ref: str | Path, max_seq_len: int | None = None):
    """-> (cfg, HF-named weights, tokenizer, source info) without building the model."""
    p = resolve_ref(ref)
    if p.is_file() and p.suffix == ".gguf":
        cfg, weights, meta = load_gguf(p, max_seq_len=max_seq_len)
        try:
            tok = Tokenizer.from_gguf_metadata(meta)
        except TokenizerError as e:
            raise TokenizerError(f"{p}: {e}") from None
        return cfg, weights, tok, {"format": "gguf", "path": str(p), "name": meta.get("general.name")}
    if p.is_dir() and (p / "config.json").is_file():
        cfg, weights, tok = load_hf_dir(p, max_seq_len=max_seq_len)
        return cfg, weights, tok, {"format": "hf", "path": str(p)}
    raise ModelNotFound(f"{p} is neither a .gguf file nor an HF directory with config.json; "
                        "pass a named model, a .gguf file or an HF directory")


def load_model(ref: str | Path, compute_dtype: str | DType = "float32",
               max_seq_len: int | None = None) -> tuple[Llama, LlamaConfig, Tokenizer]:
    """Build the model with its weights realized (fp32 masters) and its tokenizer. `model.load_info` says
    where it came from and how long loading took."""
    jitcache.enable()   # loading and every later forward reuse kernels an earlier process compiled ($ZP_CACHE)
    cpu_threads.enable()   # split kernels run on every core
    t0 = time.perf_counter()
    cfg, weights, tok, info = load_weights_any(ref, max_seq_len=max_seq_len)
    try:
        model = from_weights(cfg, weights, parse_dtype(compute_dtype))
    except WeightsMismatch as e:
        raise WeightsMismatch(f"{info.get('path', ref)}: {e}") from None
    model.load_info = dict(info, ref=str(ref), load_s=round(time.perf_counter() - t0, 3))
    return model, cfg, tok


def load_tokenizer(ref: str | Path):
    """Tokenizer of a named model, a .gguf file or an HF directory (no weights loaded); "bytes" = ByteTokenizer."""
    if str(ref) == "bytes":
        return ByteTokenizer()
    p = resolve_ref(ref)
    if p.is_file() and p.suffix == ".gguf":
        try:
            return Tokenizer.from_gguf_metadata(tokenizer_metadata(read_header(p, tensors=False)[0]))
        except TokenizerError as e:
            raise TokenizerError(f"{p}: {e}") from None
    if p.is_dir() and (p / "tokenizer.json").is_file():
        return Tokenizer.from_file(p / "tokenizer.json")
    raise ModelNotFound(f"no tokenizer in {p}: pass a named model, a .gguf file or an HF directory with tokenizer.json")
