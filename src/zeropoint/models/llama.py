"""The Llama-family decoder (Llama 2/3, Mistral, SmolLM2) in one readable file, with a table of named configs.

Attribute layout mirrors Hugging Face's `LlamaForCausalLM`, so `tinygrad.nn.state.get_state_dict(model)` yields
HF key names (`model.layers.3.self_attn.q_proj.weight`, ...) and HF checkpoints load with no renaming.

Precision: weights are fp32 master copies. `model.compute_dtype` (fp32 default, fp16/bf16 allowed) is what the
matmuls run in: activations are cast to it before each projection and each projection casts its weight to the
dtype of its input. RMSNorm statistics, the residual stream, attention softmax and the logits stay fp32
(bf16 softmax over long axes fails to compile in tinygrad 0.14, and fp16 softmax loses too much).

RoPE follows HF's rotate_half convention (first half / second half of each head), with configurable theta and
HF's `llama3` / `linear` scaling. GGUF files store q/k permuted for interleaved-pair RoPE; `gguf.py` undoes it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tinygrad import Tensor, dtypes, nn
from tinygrad.dtype import DType

from ..errors import ZeropointError

_ROPE_KEYS = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                                 "original_max_position_embeddings"), "default": (), None: ()}


def _check_rope_scaling(scaling) -> None:
    """What `rope_inv_freq` will read is there, numeric, finite and positive (checked when the config is made)."""
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a mapping or null, not {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in _ROPE_KEYS:
        raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: llama3, linear)")
    for k in _ROPE_KEYS[kind]:
        v = scaling.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < 1e12):
            raise ValueError(f"rope_scaling.{k} must be a positive number, not {v!r}")
    if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ValueError("rope_scaling.high_freq_factor must be above low_freq_factor")


@dataclass
class LlamaConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None   # HF style: {"rope_type": "llama3", "factor": 32.0, ...} or None
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    head_dim: int | None = None        # None = dim // n_heads (every named config)

    def __post_init__(self):
        # every loader (named configs + overrides, GGUF metadata, HF config.json) ends here: bound the shapes before
        # anything is sized by them (0 heads was a ZeroDivisionError, 1e9 layers a hang)
        for name, hi in _INT_LIMITS.items():
            v = getattr(self, name)
            if name == "head_dim" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise ValueError(f"{name} must be an integer from 1 to {hi:,}, not {v!r}")
        for name, (lo, hi) in _FLOAT_LIMITS.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo < v <= hi):
                raise ValueError(f"{name} must be a number in ({lo:g}, {hi:g}], not {v!r}")
        if self.n_kv_heads > self.n_heads:
            raise ValueError(f"n_kv_heads {self.n_kv_heads} is more than n_heads {self.n_heads}")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}; set head_dim explicitly")
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LlamaConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# far above any published model, far below what would hang a CPU sizing or building it
_INT_LIMITS = {"dim": 1 << 17, "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024, "hidden_dim": 1 << 20,
               "vocab_size": 1 << 22, "max_seq_len": 1 << 21, "head_dim": 4096}
_FLOAT_LIMITS = {"norm_eps": (0.0, 1.0), "rope_theta": (0.0, 1e12)}

_LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}

# Published architectures (HF config.json of each). Mistral is v0.1 (vocab 32000, theta 1e4); its 4096-token
# sliding window is not modelled, which only matters past 4096 tokens of context.
CONFIGS: dict[str, LlamaConfig] = {
    "smollm2-135m": LlamaConfig(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, hidden_dim=1536, vocab_size=49152,
                                norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True),
    "llama-3.2-1b": LlamaConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, hidden_dim=8192, vocab_size=128256,
                                norm_eps=1e-5, rope_theta=500000.0, rope_scaling=dict(_LLAMA3_SCALING),
                                max_seq_len=131072, tie_embeddings=True),
    "llama-3-8b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336, vocab_size=128256,
                              norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192),
    "llama-2-13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, hidden_dim=13824, vocab_size=32000,
                               norm_eps=1e-5, rope_theta=10000.0, max_seq_len=4096),
    "mistral-7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336, vocab_size=32000,
                              norm_eps=1e-5, rope_theta=10000.0, max_seq_len=32768),
    # tiny test configs: seconds to build and run on a CPU; `tiny` shares SmolLM2's vocabulary so it can be
    # trained on text tokenised with the real tokenizer.
    "tiny": LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, vocab_size=49152,
                        rope_theta=10000.0, max_seq_len=256, tie_embeddings=True),
    "tiny-untied": LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, vocab_size=512,
                               rope_theta=10000.0, max_seq_len=128, tie_embeddings=False),
    "tiny-llama3": LlamaConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, hidden_dim=160, vocab_size=512,
                               rope_theta=500000.0, max_seq_len=128, tie_embeddings=False,
                               rope_scaling={**_LLAMA3_SCALING, "factor": 8.0, "original_max_position_embeddings": 64}),
}

# Published parameter counts the named configs are checked against (tests/models/test_llama.py).
PUBLISHED_PARAMS = {"smollm2-135m": 134_515_008, "llama-3.2-1b": 1_235_814_400, "llama-3-8b": 8_030_261_248,
                    "llama-2-13b": 13_015_864_320, "mistral-7b": 7_241_732_096}


def get_config(name: str, **overrides) -> LlamaConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown model config {name!r}; named configs: {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides) if overrides else replace(CONFIGS[name])


def param_count(cfg: LlamaConfig) -> int:
    """Exact number of parameters (embeddings counted once when tied), from the shapes alone."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2          # q, o and k, v
    mlp = 3 * d * cfg.hidden_dim                                           # gate, up, down
    per_layer = attn + mlp + 2 * d                                         # + two RMSNorm weights
    emb = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return cfg.n_layers * per_layer + emb + d


def projection_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of each of the seven projections of one decoder layer."""
    d, hd, kv = cfg.dim, cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return {"q_proj": (cfg.n_heads * hd, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, cfg.n_heads * hd),
            "gate_proj": (cfg.hidden_dim, d), "up_proj": (cfg.hidden_dim, d), "down_proj": (d, cfg.hidden_dim)}


# ---- RoPE -------------------------------------------------------------------------------------------------
def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies (head_dim/2,) in float64, with HF's `llama3` or `linear` scaling applied."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor, lo, hi = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / lo, inv / factor, inv)       # long wavelengths: slow down by factor
        smooth = (old_len / wavelen - lo) / (hi - lo)
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)      # in between: interpolate
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    if kind in (None, "default"):
        return inv
    raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: llama3, linear)")


@functools.lru_cache(maxsize=16)
def _rope_tables_np(head_dim: int, max_len: int, theta: float, scaling_key: tuple | None):
    inv = rope_inv_freq(head_dim, theta, dict(scaling_key) if scaling_key else None)
    ang = np.outer(np.arange(max_len, dtype=np.float64), inv)
    ang = np.concatenate([ang, ang], axis=-1)                              # HF: cat(freqs, freqs), rotate_half
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


_ROPE_CACHE: dict = {}


def rope_tables(cfg: LlamaConfig, device: str | None = None) -> tuple[Tensor, Tensor]:
    """Realized (max_seq_len, head_dim) cos and sin tables, built once per config and device.

    Kept out of the model's attributes so they never show up in the state dict."""
    key = (cfg.head_dim, cfg.max_seq_len, float(cfg.rope_theta),
           tuple(sorted(cfg.rope_scaling.items())) if cfg.rope_scaling else None, device)
    if key not in _ROPE_CACHE:
        c, s = _rope_tables_np(*key[:4])
        _ROPE_CACHE[key] = Tensor(c, device=device), Tensor(s, device=device)
        Tensor.realize(*_ROPE_CACHE[key])
    return _ROPE_CACHE[key]


def rotate_half(x: Tensor) -> Tensor:
    h = x.shape[-1] // 2
    return (-x[..., h:]).cat(x[..., :h], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, T, hd); cos/sin: (T, hd). Math in fp32, result in x's dtype."""
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).cast(x.dtype)


# ---- layers -----------------------------------------------------------------------------------------------
class Linear:
    """Bias-free projection that computes in the dtype of its input (the weight is cast, the master stays fp32).

    A LoRA wrapper only needs `.weight` and the same `__call__(x)`."""
    def __init__(self, in_features: int, out_features: int):
        # uninitialised: Llama.__init__ fills every weight (random init or loaded), and building a lazy random
        # graph here per projection cost ~0.1 s each for nothing
        self.weight = Tensor.empty(out_features, in_features, dtype=dtypes.float32)

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.weight.cast(x.dtype).T


class RMSNorm:
    """Statistics in fp32 whatever the input dtype; output fp32 (the residual stream's dtype)."""
    def __init__(self, dim: int, eps: float):
        self.eps = eps
        self.weight = Tensor.ones(dim, dtype=dtypes.float32).contiguous()

    def __call__(self, x: Tensor) -> Tensor:
        x = x.float()
        return x * (x.square().mean(-1, keepdim=True) + self.eps).rsqrt() * self.weight.float()


class Attention:
    def __init__(self, cfg: LlamaConfig):
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = Linear(cfg.dim, cfg.n_heads * cfg.head_dim)
        self.k_proj = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim)
        self.v_proj = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim)
        self.o_proj = Linear(cfg.n_heads * cfg.head_dim, cfg.dim)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, start_pos, kv: "LayerCache | None", mask: Tensor | None):
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            # write this step's keys/values, then attend over everything cached so far
            kv.k[:, :, start_pos:start_pos + T, :].assign(k.cast(kv.k.dtype))
            kv.v[:, :, start_pos:start_pos + T, :].assign(v.cast(kv.v.dtype))
            k = kv.k[:, :, 0:start_pos + T, :].cast(x.dtype)
            v = kv.v[:, :, 0:start_pos + T, :].cast(x.dtype)
        rep = self.n_heads // self.n_kv_heads
        if rep > 1:   # grouped-query attention: each kv head serves `rep` query heads
            S = k.shape[2]
            k = k.reshape(B, self.n_kv_heads, 1, S, self.head_dim).expand(B, self.n_kv_heads, rep, S, self.head_dim) \
                 .reshape(B, self.n_heads, S, self.head_dim)
            v = v.reshape(B, self.n_kv_heads, 1, S, self.head_dim).expand(B, self.n_kv_heads, rep, S, self.head_dim) \
                 .reshape(B, self.n_heads, S, self.head_dim)
        scores = (q @ k.transpose(-1, -2)).float() * (1.0 / math.sqrt(self.head_dim))
        if mask is not None:
            scores = scores + mask
        # materialise the probabilities and their gradient: fused into the backward matmuls, tinygrad would
        # recompute the exp of the softmax once per multiply-add (see bench/step_work.py)
        attn = scores.contiguous_backward().softmax(-1).cast(x.dtype).contiguous() @ v   # (B, H, T, hd)
        return self.o_proj(attn.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP:
    def __init__(self, cfg: LlamaConfig):
        self.gate_proj = Linear(cfg.dim, cfg.hidden_dim)
        self.up_proj = Linear(cfg.dim, cfg.hidden_dim)
        self.down_proj = Linear(cfg.hidden_dim, cfg.dim)

    def __call__(self, x: Tensor) -> Tensor:
        # the same for SiLU's sigmoid: one materialised activation instead of an exp per MAC of down_proj's backward
        g, u = self.gate_proj(x).contiguous_backward(), self.up_proj(x).contiguous_backward()
        return self.down_proj((g.silu() * u).contiguous())


class DecoderLayer:
    def __init__(self, cfg: LlamaConfig):
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def __call__(self, x: Tensor, cd: DType, cos, sin, start_pos, kv, mask) -> Tensor:
        h = x + self.self_attn(self.input_layernorm(x).cast(cd), cos, sin, start_pos, kv, mask).float()
        return h + self.mlp(self.post_attention_layernorm(h).cast(cd)).float()


class LlamaModel:
    def __init__(self, cfg: LlamaConfig):
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = [DecoderLayer(cfg) for _ in range(cfg.n_layers)]
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


# ---- KV cache ---------------------------------------------------------------------------------------------
@dataclass
class LayerCache:
    k: Tensor   # (B, n_kv_heads, max_len, head_dim)
    v: Tensor


@dataclass
class KVCache:
    """Keys and values of every layer for `max_len` positions. Fixed shapes, so a decode step can be jitted."""
    layers: list[LayerCache] = field(default_factory=list)
    batch: int = 1
    max_len: int = 0


class Runtime:
    """Per-model inference state (jitted decoders and their caches). `__slots__` and no `__dict__`, so
    `get_state_dict(model)` never walks into it: the state dict stays exactly the HF weights."""
    __slots__ = ("decoders",)

    def __init__(self):
        self.decoders = {}


# ---- the model --------------------------------------------------------------------------------------------
class Llama:
    """`Llama(cfg)(tokens[B,T], start_pos=0, cache=None) -> float32 logits[B,T,V]`."""

    def __init__(self, cfg: LlamaConfig, compute_dtype: DType = dtypes.float32, init: bool = True):
        self.cfg = cfg
        self.compute_dtype = compute_dtype
        self.runtime = Runtime()
        self.model = LlamaModel(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = Linear(cfg.dim, cfg.vocab_size)
        for name, t in nn.state.get_state_dict(self).items():
            if not init:   # weights come next (from_weights): building random graphs for them costs seconds per layer
                t.replace(Tensor.empty(*t.shape, dtype=dtypes.float32))
            elif name.endswith("proj.weight") or name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                # HF initialises with N(0, 0.02) (uses tinygrad's RNG, so Tensor.manual_seed makes it reproducible)
                t.replace(Tensor.normal(*t.shape, mean=0.0, std=0.02))

    def make_cache(self, batch: int, max_len: int | None = None, dtype: DType | None = None) -> KVCache:
        max_len = max_len or self.cfg.max_seq_len
        if max_len > self.cfg.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds the model's max_seq_len {self.cfg.max_seq_len}")
        dt = dtype or self.compute_dtype
        shape = (batch, self.cfg.n_kv_heads, max_len, self.cfg.head_dim)
        dev = self.model.embed_tokens.weight.device
        layers = [LayerCache(Tensor.zeros(*shape, dtype=dt, device=dev).contiguous(),
                             Tensor.zeros(*shape, dtype=dt, device=dev).contiguous())
                  for _ in range(self.cfg.n_layers)]
        Tensor.realize(*[t for c in layers for t in (c.k, c.v)])   # one schedule, not two per layer
        return KVCache(layers=layers, batch=batch, max_len=max_len)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token embeddings (B, T, dim) fp32: the residual stream's input."""
        return self.model.embed_tokens(tokens).float()

    def hidden(self, tokens: Tensor, start_pos=0, cache: KVCache | None = None) -> Tensor:
        """Final-norm hidden states (B, T, dim) fp32; `start_pos` is an int or a bound symbolic variable."""
        return self.hidden_from_embeds(self.embed(tokens), start_pos, cache)

    def hidden_from_embeds(self, x: Tensor, start_pos=0, cache: KVCache | None = None) -> Tensor:
        """`hidden` from input embeddings (B, T, dim) instead of token ids: what a vision-language model feeds
        when image features take the place of some tokens."""
        B, T, _ = x.shape
        if cache is None and not (isinstance(start_pos, int) and start_pos == 0):
            raise ValueError("start_pos > 0 needs a KV cache (model.make_cache) holding the earlier positions")
        dev = self.model.embed_tokens.weight.device   # a tuple when the weights are replicated across devices
        cos_all, sin_all = rope_tables(self.cfg, dev)
        cos, sin = cos_all[start_pos:start_pos + T], sin_all[start_pos:start_pos + T]
        # causal mask over (T queries) x (start_pos + T keys); a single new token sees everything cached
        mask = None
        if T > 1:
            mask = Tensor.full((1, 1, T, start_pos + T), float("-inf"), dtype=dtypes.float32, device=dev).triu(start_pos + 1)
        x = x.float()
        for i, layer in enumerate(self.model.layers):
            x = layer(x, self.compute_dtype, cos, sin, start_pos, cache.layers[i] if cache is not None else None, mask)
        return self.model.norm(x)

    def hidden_segments(self, every: int = 1) -> list:
        """`hidden(tokens)` (training: no cache) cut into a chain for activation checkpointing.

        Stage 0 embeds the tokens; then one stage per `every` decoder layers, the last also applying the final
        norm. Each stage is `f(h, tokens, *rest) -> h` (stage 0 ignores h), so a loss head can be appended and
        the whole passed to `engine.SegmentedLoss`; the chain computes exactly what `hidden` computes."""
        if every < 1:
            raise ValueError(f"checkpoint every {every} layers: must be >= 1")
        n = self.cfg.n_layers

        def context(tokens):
            T = tokens.shape[1]
            dev = self.model.embed_tokens.weight.device   # a tuple under data parallel, as in `hidden`
            cos_all, sin_all = rope_tables(self.cfg, dev)
            mask = Tensor.full((1, 1, T, T), float("-inf"), dtype=dtypes.float32, device=dev).triu(1) if T > 1 else None
            return cos_all[0:T], sin_all[0:T], mask

        def embed(h, tokens, *_):
            return self.model.embed_tokens(tokens).float()

        def blocks(lo, hi):
            def run(h, tokens, *_):
                cos, sin, mask = context(tokens)
                for layer in self.model.layers[lo:hi]:
                    h = layer(h, self.compute_dtype, cos, sin, 0, None, mask)
                return self.model.norm(h) if hi == n else h
            return run
        return [embed] + [blocks(lo, min(lo + every, n)) for lo in range(0, n, every)]

    def logits_from_hidden(self, h: Tensor) -> Tensor:
        w = self.model.embed_tokens.weight if self.cfg.tie_embeddings else self.lm_head.weight
        if not self.cfg.tie_embeddings and not isinstance(self.lm_head, Linear):
            return self.lm_head(h.cast(self.compute_dtype)).float()   # a wrapped head (e.g. LoRA) keeps its call
        return (h.cast(self.compute_dtype) @ w.cast(self.compute_dtype).T).float()

    def __call__(self, tokens: Tensor, start_pos=0, cache: KVCache | None = None) -> Tensor:
        return self.logits_from_hidden(self.hidden(tokens, start_pos, cache))


def state_dict(model: Llama) -> dict[str, Tensor]:
    """HF-named tensors of the model (no rope tables, no caches)."""
    return nn.state.get_state_dict(model.model, prefix="model.") | (
        {} if model.cfg.tie_embeddings else nn.state.get_state_dict(model.lm_head, prefix="lm_head."))


def bound_tensors(model: Llama) -> dict[str, Tensor]:
    """Every tensor a forward pass reads, by a name that is the same in every process: the weights (LoRA
    adapters included) and the RoPE tables. A stored compiled step (engine/jitcache.py) is rebound by these names."""
    cos, sin = rope_tables(model.cfg, model.model.embed_tokens.weight.device)
    return {**nn.state.get_state_dict(model), "rope.cos": cos, "rope.sin": sin}


def cache_key(model: Llama) -> dict:
    """What a compiled forward of this model depends on besides shapes: its config and compute dtype."""
    return {"llama": model.cfg.to_dict(), "compute_dtype": str(model.compute_dtype)}


def expected_keys(cfg: LlamaConfig) -> list[str]:
    keys = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if cfg.tie_embeddings else ["lm_head.weight"])
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        keys += [p + f"self_attn.{n}_proj.weight" for n in "qkvo"] + [p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
        keys += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return keys


class WeightsMismatch(ZeropointError, ValueError):
    """Weights whose names or shapes do not fit the config (a corrupt file, or metadata that lies)."""


def expected_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """HF name -> shape of every parameter of `Llama(cfg)`, from the config alone (nothing is allocated)."""
    d, q, kv = cfg.dim, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, d)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        out |= {p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
                p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
                p + "mlp.gate_proj.weight": (cfg.hidden_dim, d), p + "mlp.up_proj.weight": (cfg.hidden_dim, d),
                p + "mlp.down_proj.weight": (d, cfg.hidden_dim), p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,)}
    return out


def load_weights(model: Llama, weights: dict[str, Tensor], strict: bool = True) -> None:
    """Copy HF-named weights into the model as fp32, checking names and shapes first with a clear error."""
    have = state_dict(model)
    missing = [k for k in have if k not in weights]
    extra = [k for k in weights if k not in have and not k.endswith("rotary_emb.inv_freq")]
    if model.cfg.tie_embeddings:
        extra = [k for k in extra if k != "lm_head.weight"]   # some tied exports still carry the copy
    if strict and (missing or extra):
        raise WeightsMismatch(f"weights do not match the config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    for k, t in have.items():
        if k not in weights:
            continue
        w = weights[k]
        if tuple(w.shape) != tuple(t.shape):
            raise WeightsMismatch(f"shape of {k} is {tuple(w.shape)} but the config needs {tuple(t.shape)}")
        t.replace(w.to(t.device).float().contiguous())
    Tensor.realize(*state_dict(model).values())


def from_weights(cfg: LlamaConfig, weights: dict[str, Tensor], compute_dtype: DType = dtypes.float32) -> Llama:
    model = Llama(cfg, compute_dtype, init=False)
    load_weights(model, weights)
    return model
