"""Scoring a causal LM the way lm-evaluation-harness does, batched, on any tinygrad device.

- `encode_pair`: lm-eval's `TemplateLM._encode_pair` (trailing context spaces move to the continuation; the
  whole string is encoded and split at the context's token count, so merges across the boundary match).
- `rolling_windows`: lm-eval's `get_rolling_token_windows` + `make_disjoint_window` (context_len=1).
- `LMScorer.loglikelihood_tokens`: every request is (context_tokens, continuation_tokens); the model input is
  `(ctx + cont)[-(max_length+1):][:-1]` as in lm-eval's HF backend. Requests whose inputs are identical
  (multiple choice with one-token answers: " A", " B", ...) share one forward pass (prefix sharing: the
  question is run once, not once per choice). Unique inputs are sorted longest first and batched with right
  padding to a bucketed length and a bucketed row count (few distinct shapes = few kernel compiles). The result for a request only
  depends on the set of requests scored together, so two callers that build the same requests get the same
  bits: that is what the lm-eval golden test relies on.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes

from ..engine.jitcache import PersistentJit
from ..engine.trainer import device_array
from ..models.generate import generate
from ..models.llama import Llama, bound_tensors, cache_key


def _bucket(n: int, lo: int) -> int:
    """Round up to a power of two (at least lo), so a whole eval needs only a handful of shapes."""
    b = lo
    while b < n:
        b *= 2
    return b


def _length_bucket(n: int) -> int:
    """Sequence-length bucket: powers of two up to 256, then multiples of 128 (a 547-token MMLU prompt runs at
    640 positions, not 1024: attention is quadratic, and padding costs as much compute as real tokens)."""
    return _bucket(n, 32) if n <= 256 else -(-n // 128) * 128


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation, add_bos=False)
    ctx = tok.encode(context, add_bos=False)
    return ctx, whole[len(ctx):]


def encode_request(tok, prefix_id: int, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's `TemplateLM.loglikelihood` tokenisation, including the empty-context case."""
    if context == "":
        cont = tok.encode(continuation, add_bos=False)
        return ([prefix_id], cont) if prefix_id != cont[0] else (cont[:1], cont[1:])
    return encode_pair(tok, context, continuation)


def rolling_windows(tokens: list[int], prefix_id: int, max_seq_len: int, context_len: int = 1):
    """(context, continuation) pairs covering every token once, each with up to max_seq_len of context."""
    assert 1 <= context_len <= max_seq_len
    if not tokens:
        return []
    out = []
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    out.append(([prefix_id] + tokens[:first - 1], tokens[:first]))
    predicted = first
    while predicted < len(tokens):
        wlen = min(len(tokens) - predicted, pred_len)
        end = predicted + wlen
        out.append((tokens[end - max_seq_len - 1:end - 1], tokens[end - wlen:end]))
        predicted += wlen
    return [(a[:len(a) - (len(b) - 1)], b) for a, b in out]   # make_disjoint_window


def special_id(tok, *names) -> int | None:
    for n in names:
        v = getattr(tok, n, None)
        if isinstance(v, int):
            return v
    return None


def prefix_token_id(tok) -> int:
    """The token a rolling window / empty context conditions on: BOS if the tokenizer has one, else EOS."""
    v = special_id(tok, "bos_id", "bos_token_id", "bos", "eos_id", "eos_token_id", "eos")
    if v is None:
        raise ValueError("tokenizer exposes neither a BOS nor an EOS id; cannot build rolling windows")
    return v


@dataclass
class LMScorer:
    model: object
    tok: object
    max_length: int = 2048
    batch_size: int = 8
    jit: bool = True
    share_prefix: bool = True   # requests with identical model inputs share one forward (off: for measuring)
    cache: dict | None = None   # {(ctx tokens, cont tokens): (ll, greedy)}; lm-eval's CachingLM, keyed by tokens
    stats: dict = field(default_factory=lambda: {"forward_passes": 0, "batches": 0, "requests": 0, "unique_inputs": 0,
                                                 "tokens_forwarded": 0, "tokens_padded": 0, "score_s": 0.0,
                                                 "first_batch_s": None})   # compile or cache load + first forward
    _jits: dict = field(default_factory=dict, repr=False)

    @property
    def prefix_id(self) -> int:
        return prefix_token_id(self.tok)

    def _compiled(self, B: int, T: int, W: int, K: int):
        """One TinyJit per padded shape: tinygrad spends seconds scheduling a 30-layer graph, and kernels are
        compiled per shape, so shapes are bucketed (powers of two) and each bucket is captured once."""
        key = (B, T, W, K)
        if key not in self._jits:
            model = self.model
            split = hasattr(model, "hidden") and hasattr(model, "logits_from_hidden")

            def fwd(toks: Tensor, pos: Tensor, nxt: Tensor, cand: Tensor):
                if split:   # our Llama: run the LM head only on the W positions that are scored
                    h = model.hidden(toks, start_pos=0)
                    h = h.gather(1, pos.unsqueeze(-1).expand(B, W, h.shape[-1]))
                    logits = model.logits_from_hidden(h).float()
                else:
                    logits = model(toks, start_pos=0).float()
                    logits = logits.gather(1, pos.unsqueeze(-1).expand(B, W, logits.shape[-1]))
                lp = logits.log_softmax(-1)
                tok_lp = lp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
                am = logits.argmax(-1).cast(dtypes.int32)
                cand_lp = lp[:, W - 1, :].gather(-1, cand)
                return tok_lp.realize(), am.realize(), cand_lp.realize()
            self._jits[key] = self._jit(fwd, key) if self.jit else fwd
        return self._jits[key]

    def _jit(self, fwd, shape: tuple):
        """Our Llama's forwards are stored under $ZP_CACHE (engine/jitcache.py), so the next process that scores
        with the same model and shapes replays them without compiling; other models get a plain TinyJit."""
        if not isinstance(self.model, Llama):
            return TinyJit(fwd)
        B, T, W, K = shape
        return PersistentJit(fwd, name=f"score.B{B}T{T}W{W}K{K}", key={**cache_key(self.model), "scorer": 1},
                             bindings=lambda: bound_tensors(self.model))

    def _release_longer(self, T: int) -> None:
        """Inputs are scored longest first, so a JIT for a longer bucket is not needed again in this call: drop it
        and hand its buffers back (tinygrad's allocator keeps freed buffers cached; an MMLU run grew to 15 GB
        RSS and was OOM-killed holding six buckets' activations)."""
        stale = [k for k in self._jits if k[1] > T]
        if not stale:
            return
        for k in stale:
            del self._jits[k]
        gc.collect()
        alloc = getattr(Device[Device.DEFAULT], "allocator", None)
        if hasattr(alloc, "free_cache"):
            alloc.free_cache()

    def _forward_batch(self, rows: list[list[int]], W: int, last_targets: list[list[int]]):
        """Run one right-padded batch and read only the last W positions of each row (the ones that predict
        continuation tokens): their log-probs of the next input token, their argmax, and at the final
        position the log-probs of every requested last token."""
        t_first = time.perf_counter() if self.stats["batches"] == 0 else None
        n_rows = len(rows)
        # a short last batch (or a small task) runs at the next power of two rows, not at batch_size: padding rows
        # cost as much compute as real ones, and on a CPU the forward, not the compile, is what takes the time
        B = min(self.batch_size, _bucket(n_rows, 1))
        T = min(self.max_length, _length_bucket(max(len(r) for r in rows)))
        self._release_longer(T)
        W = 1 if W == 1 else T   # two head shapes per length bucket: last position only, or all of them
        K = _bucket(max(len(t) for t in last_targets), 4)
        toks = np.zeros((B, T), dtype=np.int32)
        pos = np.zeros((B, W), dtype=np.int32)
        nxt = np.zeros((B, W), dtype=np.int32)
        cand = np.zeros((B, K), dtype=np.int32)
        for i, r in enumerate(rows):
            n = len(r)
            toks[i, :n] = r
            p = np.arange(n - W, n)
            pos[i] = np.maximum(p, 0)
            for w in range(W - 1):
                if p[w] >= 0:
                    nxt[i, w] = r[p[w] + 1]
            cand[i, :len(last_targets[i])] = last_targets[i]
        outs = self._compiled(B, T, W, K)(*[device_array(a) for a in (toks, pos, nxt, cand)])
        tok_lp, am, cand_lp = (o.numpy().copy() for o in outs)
        self.stats["forward_passes"] += n_rows
        self.stats["batches"] += 1
        self.stats["tokens_forwarded"] += int(sum(len(r) for r in rows))
        self.stats["tokens_padded"] += int(B * T)
        if t_first is not None:
            self.stats["first_batch_s"] = round(time.perf_counter() - t_first, 4)
        return tok_lp, am, cand_lp, W

    def loglikelihood_tokens(self, requests: list[tuple[list[int], list[int]]], progress=None) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), is_greedy) per request, lm-eval's `_loglikelihood_tokens`."""
        t0 = time.perf_counter()
        if self.cache is not None:
            keys = [(tuple(c), tuple(x)) for c, x in requests]
            todo = [k for k in dict.fromkeys(keys) if k not in self.cache]
            if todo:
                for k, r in zip(todo, self._score([(list(c), list(x)) for c, x in todo], progress)):
                    self.cache[k] = r
            self.stats["cache_hits"] = self.stats.get("cache_hits", 0) + len(keys) - len(todo)
            self.stats["score_s"] += time.perf_counter() - t0
            return [self.cache[k] for k in keys]
        out = self._score(requests, progress)
        self.stats["score_s"] += time.perf_counter() - t0
        return out

    def _score(self, requests, progress=None):
        inputs: dict[tuple, list[int]] = {}   # model input -> request indices sharing it
        seqs = []
        for i, (ctx, cont) in enumerate(requests):
            if not cont:
                raise ValueError(f"request {i} has an empty continuation after tokenisation")
            seq = (list(ctx) + list(cont))[-(self.max_length + 1):]
            inp = tuple(seq[:-1])
            seqs.append((seq, len(cont)))
            inputs.setdefault((inp, -1 if self.share_prefix else i), []).append(i)
        order = sorted(inputs, key=lambda k: (-len(k[0]), k))
        self.stats["requests"] += len(requests)
        self.stats["unique_inputs"] += len(order)
        chunks = [order[b:b + self.batch_size] for b in range(0, len(order), self.batch_size)]
        finals = [[sorted({seqs[i][0][-1] for i in inputs[inp]}) for inp in chunk] for chunk in chunks]
        batches = [([list(inp[0]) for inp in chunk], max(seqs[i][1] for inp in chunk for i in inputs[inp]), fin)
                   for chunk, fin in zip(chunks, finals)]
        counts = [sum(len(inputs[inp]) for inp in chunk) for chunk in chunks]
        out: list = [None] * len(requests)
        for chunk, fin, (tok_lp, am, cand_lp, W) in zip(chunks, finals, self.forward_batches(batches, counts, progress)):
            for r, inp in enumerate(chunk):
                n = len(inp[0])
                for i in inputs[inp]:
                    seq, c = seqs[i]
                    # positions n-c .. n-1 predict the continuation; they are columns W-c .. W-1
                    ll = float(sum(float(v) for v in tok_lp[r, W - c:W - 1]))
                    ll += float(cand_lp[r, fin[r].index(seq[-1])])
                    greedy = bool(np.all(am[r, W - c:W - 1] == np.array(seq[n - c + 1:n], dtype=np.int32))) \
                        and int(am[r, W - 1]) == seq[-1]
                    out[i] = (ll, greedy)
        return out

    def forward_batches(self, batches: list[tuple[list[list[int]], int, list[list[int]]]], counts: list[int],
                        progress=None):
        """Each planned batch's outputs, in plan order. The plan (which inputs share a batch, at which padded
        shape) is made once by `_score`; a fan-out scorer runs the same batches elsewhere
        (orchestrator/ray_eval.py), so every request gets the bits it gets here."""
        for (rows, W, fin), n in zip(batches, counts):
            res = self._forward_batch(rows, W, fin)
            if progress:
                progress(n)
            yield res

    def loglikelihood(self, pairs: list[tuple[str, str]], progress=None) -> list[tuple[float, bool]]:
        reqs = [encode_request(self.tok, self.prefix_id, c, x) for c, x in pairs]
        return self.loglikelihood_tokens(reqs, progress)

    def rolling_requests(self, text: str) -> list[tuple[list[int], list[int]]]:
        return rolling_windows(self.tok.encode(text, add_bos=False), self.prefix_id, self.max_length, 1)

    def generate_many(self, requests: list[tuple[str, list[str], int]], progress=None) -> list[str]:
        """`generate_until` for each (context, until, max_gen_toks), in order."""
        out = []
        for ctx, until, max_gen_toks in requests:
            out.append(self.generate_until(ctx, until, max_gen_toks))
            if progress:
                progress(1)
        return out

    def fanout(self) -> dict | None:
        """Where the scoring ran, when not in this process (results.json `fanout`)."""
        return None

    def generate_until(self, context: str, until: list[str], max_gen_toks: int = 256) -> str:
        """Greedy decoding, cut at the first stop sequence or EOS, as lm-eval's HF backend does. Our Llama goes
        through `models.generate` (KV cache, jitted decode step); other models re-run the full prefix."""
        eos = special_id(self.tok, "eos_id", "eos_token_id", "eos")
        stops = [s for s in until or [] if s]
        if eos is not None and self.tok.decode([eos]):
            stops.append(self.tok.decode([eos]))
        ids = self.tok.encode(context, add_bos=False)[-(self.max_length - max_gen_toks):]
        if hasattr(self.model, "make_cache") and hasattr(self.model, "cfg"):

            class _Stop(Exception):
                pass
            pieces: list[str] = []

            def on_token(_tok, piece):
                pieces.append(piece)
                if any(s in "".join(pieces) for s in stops):
                    raise _Stop
            try:
                res = generate(self.model, self.tok, ids, max_tokens=max_gen_toks, temperature=0.0,
                               stop_ids=[eos] if eos is not None else [], on_token=on_token)
                text = res.text or ""
            except _Stop:
                text = "".join(pieces)
        else:
            gen: list[int] = []
            for _ in range(max_gen_toks):
                seq = ids + gen
                nxt = int(self.model(Tensor(np.array([seq], dtype=np.int32)), start_pos=0)[0, len(seq) - 1].argmax().item())
                if eos is not None and nxt == eos:
                    break
                gen.append(nxt)
                if any(s in self.tok.decode(gen) for s in stops):
                    break
            text = self.tok.decode(gen)
        self.stats["generations"] = self.stats.get("generations", 0) + 1
        for s in stops:
            text = text.split(s)[0]
        return text
