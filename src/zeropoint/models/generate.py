"""Text generation with a KV cache: a bucketed prefill, then one jitted decode step per token.

Why it is shaped like this (tinygrad 0.14 on CPU spends far more time scheduling graphs than computing them):
- the decode step has fixed shapes: one token in, the position is a bound symbolic variable, the cache has a
  fixed length. So `TinyJit` captures it once and replays it for every later token and every later call;
- the prompt is padded to a multiple of `PREFILL_BUCKET` so prompts of similar length reuse one jitted prefill.
  Padding sits after the prompt: it writes junk into cache slots past the prompt, but a decode step overwrites
  slot p before anything reads it, and reads only slots 0..p;
- jitted state (cache + captured kernels) lives on the model (`model.runtime.decoders`), so eval and red-team loops
  that call `generate` many times pay the capture once.
Sampling happens in numpy on the last position's fp32 logits: greedy at temperature 0, otherwise softmax at
the temperature with nucleus (top-p) filtering, from a `numpy.random.default_rng(seed)` stream.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tinygrad import Tensor, UOp

from ..engine.jitcache import PersistentJit
from ..engine.trainer import device_array
from ..errors import ZeropointError
from .llama import Llama, bound_tensors, cache_key

PREFILL_BUCKET = 32
CACHE_STEP = 512


class GenerationError(ZeropointError):
    pass


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    ids: list[int]                         # generated ids (stop token included when one ended it)
    text: str | None                       # decoded generated text (stop token left out)
    stop_reason: str                       # "stop_token" | "max_tokens" | "context_full"
    prefill_s: float                       # prompt forward + first sample: the first-token latency
    decode_s: float                        # every later token
    timings: dict = field(default_factory=dict)

    @property
    def decode_tok_s(self) -> float | None:
        n = len(self.ids) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else None

    def to_dict(self) -> dict:
        return {"prompt_tokens": len(self.prompt_ids), "generated_tokens": len(self.ids), "ids": self.ids,
                "text": self.text, "stop_reason": self.stop_reason, "first_token_s": round(self.prefill_s, 4),
                "decode_s": round(self.decode_s, 4),
                "decode_tok_s": None if self.decode_tok_s is None else round(self.decode_tok_s, 3), **self.timings}


class Decoder:
    """A KV cache of fixed length plus the jitted prefill (per bucket) and decode step that write into it."""

    def __init__(self, model: Llama, max_len: int, batch: int = 1):
        self.model, self.max_len, self.batch = model, max_len, batch
        self.cache = model.make_cache(batch, max_len)
        self.pos_var = UOp.variable("start_pos", 1, max_len - 1)
        # stored under $ZP_CACHE (engine/jitcache.py): a later process replays them without compiling
        self._key = {**cache_key(model), "batch": batch, "max_len": max_len, "kv_dtype": str(self.cache.layers[0].k.dtype)}
        self._decode_jit = self._jit(self._decode, "generate.decode")
        self._prefill_jits: dict[int, Callable] = {}

    def _bindings(self) -> dict[str, Tensor]:
        kv = {f"kv.{i}.{n}": getattr(c, n) for i, c in enumerate(self.cache.layers) for n in ("k", "v")}
        return {**bound_tensors(self.model), **kv}

    def _jit(self, fn: Callable, name: str) -> Callable:
        return PersistentJit(fn, name=name, key=self._key, bindings=self._bindings)

    def _decode(self, tok: Tensor, pos) -> Tensor:
        return self.model(tok, pos, self.cache)[:, -1, :].realize()

    def _prefill(self, toks: Tensor) -> Tensor:
        return self.model(toks, 0, self.cache).realize()

    def _prefill_embeds(self, x: Tensor) -> Tensor:
        return self.model.logits_from_hidden(self.model.hidden_from_embeds(x, 0, self.cache)).realize()

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Run the prompt through the model from position 0; -> fp32 logits of its last position (V,)."""
        n = len(ids)
        bucket = min(-(-n // PREFILL_BUCKET) * PREFILL_BUCKET, self.max_len)
        padded = np.zeros((self.batch, bucket), dtype=np.int32)
        padded[:, :n] = ids
        if bucket not in self._prefill_jits:
            self._prefill_jits[bucket] = self._jit(self._prefill, f"generate.prefill{bucket}")
        jit = self._prefill_jits[bucket]
        # a fresh realized buffer per call: the JIT must never see a view it could bake in
        logits = jit(device_array(padded))
        return logits[0, n - 1].numpy().copy()

    def prefill_embeds(self, embeds: np.ndarray) -> np.ndarray:
        """`prefill` from input embeddings (batch, n, dim) (a vision-language prompt: image features spliced in
        among the token embeddings); every row has the same length n. -> fp32 logits (batch, V) of position n-1."""
        b, n, d = embeds.shape
        if b != self.batch:
            raise GenerationError(f"prefill_embeds got {b} rows; this decoder's batch is {self.batch}")
        bucket = min(-(-n // PREFILL_BUCKET) * PREFILL_BUCKET, self.max_len)
        padded = np.zeros((b, bucket, d), dtype=np.float32)
        padded[:, :n] = embeds
        if -bucket not in self._prefill_jits:   # negative keys: prefills from embeddings
            self._prefill_jits[-bucket] = self._jit(self._prefill_embeds, f"generate.prefill_embeds{bucket}")
        logits = self._prefill_jits[-bucket](device_array(padded))
        return logits[:, n - 1].numpy().copy()

    def step(self, token, pos: int) -> np.ndarray:
        """Feed one token at position `pos` (>= 1); -> fp32 logits (V,) for the next position. `token` may also be
        one token per row (batch,); the logits are then (batch, V)."""
        per_row = np.ndim(token) > 0
        toks = np.asarray(token, dtype=np.int32).reshape(self.batch, 1) if per_row \
            else np.full((self.batch, 1), token, dtype=np.int32)
        out = self._decode_jit(device_array(toks), self.pos_var.bind(pos))
        return out.numpy().copy() if per_row else out[0].numpy().copy()   # JIT outputs share one buffer: copy now


def get_decoder(model: Llama, need_len: int, batch: int = 1) -> Decoder:
    """A cached decoder whose cache holds `need_len` positions (lengths rounded up so they get reused)."""
    cap = model.cfg.max_seq_len
    if need_len > cap:
        raise GenerationError(f"prompt + max_tokens = {need_len} tokens exceeds the model's context of {cap}; "
                              "shorten the prompt or lower --max-tokens")
    length = min(cap, -(-need_len // CACHE_STEP) * CACHE_STEP)
    decoders = model.runtime.decoders   # Runtime has no __dict__: the caches never enter the state dict
    key = length if batch == 1 else (length, batch)
    if key not in decoders:
        decoders[key] = Decoder(model, length, batch)
    return decoders[key]


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]   # smallest set with mass >= top_p
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))


def generate(model: Llama, tokenizer, prompt_ids: list[int], max_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, stop_ids: list[int] | None = None,
             on_token: Callable[[int, str], None] | None = None,
             prompt_embeds: np.ndarray | None = None) -> GenerationResult:
    """Continue `prompt_ids` by up to `max_tokens` tokens. `on_token(id, text_piece)` streams each token.

    `stop_ids` defaults to the tokenizer's stop tokens (EOS, `<|im_end|>`); pass [] to never stop early.
    `prompt_embeds` (len(prompt_ids), dim): feed these input embeddings for the prompt instead of the ids'
    (a vision-language prompt whose image placeholder positions hold projected image features)."""
    if not prompt_ids:
        raise GenerationError("the prompt is empty; give at least one token (e.g. the BOS id)")
    if max_tokens < 1:
        raise GenerationError(f"max_tokens must be >= 1, got {max_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise GenerationError(f"need temperature >= 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    vocab = model.cfg.vocab_size
    bad = [i for i in prompt_ids if not 0 <= int(i) < vocab]
    if bad:
        raise GenerationError(f"prompt ids {bad[:5]} are outside the model's vocabulary of {vocab}")
    if stop_ids is None:
        stop_ids = tokenizer.stop_ids() if tokenizer is not None else []
    stops = set(stop_ids)
    rng = np.random.default_rng(seed)
    need = min(len(prompt_ids) + max_tokens, model.cfg.max_seq_len)
    if len(prompt_ids) >= model.cfg.max_seq_len:
        raise GenerationError(f"the prompt has {len(prompt_ids)} tokens; the model's context is {model.cfg.max_seq_len}")
    if prompt_embeds is not None and tuple(prompt_embeds.shape) != (len(prompt_ids), model.cfg.dim):
        raise GenerationError(f"prompt_embeds has shape {tuple(prompt_embeds.shape)}; expected "
                              f"({len(prompt_ids)}, {model.cfg.dim}): one embedding per prompt position")
    t0 = time.perf_counter()
    dec = get_decoder(model, need)
    logits = dec.prefill(list(prompt_ids)) if prompt_embeds is None else dec.prefill_embeds(prompt_embeds[None])[0]
    out: list[int] = []
    stop_reason = "max_tokens"
    emitted = ""

    def out_text_ids():
        return [i for i in out if i not in stops]

    def emit(tok: int):
        nonlocal emitted
        if on_token is None:
            return
        if tokenizer is None:
            return on_token(tok, "")
        full = tokenizer.decode(out_text_ids())
        if full.endswith("\ufffd"):   # half of a multi-byte character: emit it with the next token
            return
        piece, emitted = full[len(emitted):], full
        on_token(tok, piece)

    t_first = None
    pos = len(prompt_ids)
    while True:
        tok = sample(logits, temperature, top_p, rng)
        out.append(tok)
        if t_first is None:
            t_first = time.perf_counter()
        if tok in stops:
            stop_reason = "stop_token"
            break
        emit(tok)
        if len(out) >= max_tokens:
            break
        if pos >= dec.max_len or pos >= model.cfg.max_seq_len:
            stop_reason = "context_full"
            break
        logits = dec.step(tok, pos)
        pos += 1
    t_end = time.perf_counter()
    text = tokenizer.decode(out_text_ids()) if tokenizer is not None else None
    return GenerationResult(prompt_ids=list(prompt_ids), ids=out, text=text, stop_reason=stop_reason,
                            prefill_s=t_first - t0, decode_s=t_end - t_first,
                            timings={"cache_len": dec.max_len, "compute_dtype": str(model.compute_dtype)})


def generate_text(model: Llama, tokenizer, prompt: str, chat: bool = False, **kw) -> GenerationResult:
    """Encode `prompt` (through the chat template when `chat`) and generate."""
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    else:
        ids = tokenizer.encode(prompt, add_bos=tokenizer.add_bos)
    return generate(model, tokenizer, ids, **kw)


def greedy_batch(model: Llama, prompt_embeds: np.ndarray, max_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    """Greedy continuations of a batch of prompts given as input embeddings (batch, n, dim), all of length n (an
    evaluation asks one question per image, so its prompts line up). One prefill, then one jitted decode step per
    token for the whole batch; a row stops at its first stop id (left out of the result)."""
    b, n, _ = prompt_embeds.shape
    need = min(n + max_tokens, model.cfg.max_seq_len)
    if n >= model.cfg.max_seq_len:
        raise GenerationError(f"the prompts have {n} positions; the model's context is {model.cfg.max_seq_len}")
    dec = get_decoder(model, need, batch=b)
    logits = dec.prefill_embeds(prompt_embeds)
    stops, out = set(stop_ids), [[] for _ in range(b)]
    done = np.zeros(b, bool)
    pos = n
    for _ in range(max_tokens):
        toks = logits.argmax(-1)
        for i, t in enumerate(toks):
            if not done[i]:
                if int(t) in stops:
                    done[i] = True
                else:
                    out[i].append(int(t))
        if done.all() or pos >= dec.max_len:
            break
        logits = dec.step(toks, pos)
        pos += 1
    return out
