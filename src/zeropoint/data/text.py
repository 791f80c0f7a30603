"""Text data for LLM finetuning: read documents, tokenise, mask chat prompts, pack or pad, split, batch.

Formats:
- `text`: plain files (each file one document) or JSONL with a `text` field per line;
- `jsonl`: JSONL whose lines are `{"text": ...}` or chat `{"messages": [{"role", "content"}, ...]}`.
  Chat examples are rendered with the tokenizer's chat template; only assistant replies are trained on
  (prompt tokens get label -1, which the loss ignores).

Every sample is `seq_len + 1` tokens; inputs are `[:-1]`, labels `[1:]`. The train/validation split is by
document (a held-out speech is really held out), shuffled with the seed. Batches are a pure function of
(seed, step), so a resumed run reads exactly the batches the uninterrupted run would have.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ZeropointError

IGNORE = -1


class DataError(ZeropointError):
    pass


# ---- reading -----------------------------------------------------------------------------------------------
def read_documents(files: list[Path], fmt: str = "text", read=None) -> list[dict]:
    """-> [{"text": str} | {"messages": [...]}, ...] in file order. Bad lines name the file and line.
    `read(path) -> bytes` lets the caller verify what is read (governance re-hashes each file)."""
    read = read or (lambda p: Path(p).read_bytes())
    docs: list[dict] = []
    for name in files:
        f = Path(name)
        if f.suffix == ".jsonl":
            for i, line in enumerate(read(name).decode("utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{f}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
                if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
                    docs.append({"messages": obj["messages"], "source": f"{f.name}:{i}"})
                elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
                    docs.append({"text": obj["text"], "source": f"{f.name}:{i}"})
                else:
                    raise DataError(f"{f}:{i}: expected a 'text' string or a 'messages' list")
        elif fmt == "text" and f.suffix in (".txt", ".md", ""):
            docs.append({"text": read(name).decode("utf-8", errors="replace"), "source": f.name})
        # anything else (e.g. the *.json metadata sidecars beside SOTU speeches) is not training text
    if not docs:
        raise DataError(f"no training documents found in {len(files)} file(s) for format {fmt!r}; "
                        "text needs .txt files, jsonl needs .jsonl files with 'text' or 'messages'")
    return docs


# ---- tokenising --------------------------------------------------------------------------------------------
def tokenize_doc(doc: dict, tok, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """-> (ids, labels_mask) where mask 1 = train on this token. Chat: only assistant turns are trained."""
    if "text" in doc:
        ids = tok.encode(doc["text"], add_bos=bool(getattr(tok, "add_bos", False)))
        if add_eos and tok.eos_id is not None:
            ids = ids + [tok.eos_id]
        return ids, [1] * len(ids)
    msgs = doc["messages"]
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise DataError(f"{doc.get('source')}: message {i} must be {{'role': system|user|assistant, 'content': str}}")
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{doc.get('source')}: chat example has no assistant message to train on")
    ids: list[int] = []
    mask: list[int] = []
    # Render growing prefixes and tokenise only what each message adds, so the template decides the text.
    # An assistant turn's header ("<|im_start|>assistant\n") is prompt; only the reply itself is a label.
    prev = ""
    for i, m in enumerate(msgs):
        text = tok.apply_chat_template(msgs[:i + 1], add_generation_prompt=False)
        head = tok.apply_chat_template(msgs[:i], add_generation_prompt=True) if m["role"] == "assistant" else text
        if not (text.startswith(head) and head.startswith(prev)):
            raise DataError(f"{doc.get('source')}: the chat template is not prefix-stable; cannot mask prompts")
        for seg, lab in ((head[len(prev):], 0), (text[len(head):], 1)):
            if seg:
                t = tok.encode(seg)
                ids += t
                mask += [lab] * len(t)
        prev = text
    if add_eos and tok.eos_id is not None and (not ids or ids[-1] != tok.eos_id):
        ids.append(tok.eos_id)
        mask.append(1)
    return ids, mask


def pack(seqs: list[tuple[list[int], list[int]]], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate all documents and cut into (N, seq_len+1) samples; the tail shorter than a sample is dropped."""
    ids = np.fromiter((t for s, _ in seqs for t in s), dtype=np.int32)
    mask = np.fromiter((m for _, ms in seqs for m in ms), dtype=np.int8)
    n = (len(ids) - 1) // seq_len
    if n <= 0:
        return np.zeros((0, seq_len + 1), np.int32), np.zeros((0, seq_len + 1), np.int8)
    # samples overlap by one token so that every token is a label exactly once
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return ids[idx], mask[idx]


def pad(seqs: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample per document, truncated or padded to seq_len+1 (padding is never a label)."""
    out = np.full((len(seqs), seq_len + 1), pad_id, np.int32)
    msk = np.zeros((len(seqs), seq_len + 1), np.int8)
    for i, (s, m) in enumerate(seqs):
        s, m = s[:seq_len + 1], m[:seq_len + 1]
        out[i, :len(s)] = s
        msk[i, :len(m)] = m
    return out, msk


def to_xy(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, T+1) tokens and mask -> inputs (N, T) and labels (N, T) with IGNORE where not trained."""
    x = tokens[:, :-1].astype(np.int32)
    y = np.where(mask[:, 1:] > 0, tokens[:, 1:], IGNORE).astype(np.int32)
    return x, y


def split_documents(n_docs: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle document indices with the seed; the first ceil(frac*n) (at least 1 when frac>0) are validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 0xDA7A]).permutation(n_docs).tolist()
    n_val = 0 if val_fraction == 0 else max(1, int(np.ceil(val_fraction * n_docs)))
    if n_docs - n_val < 1:
        raise DataError(f"only {n_docs} document(s): nothing left to train on after the validation split; "
                        "lower data.val_fraction or add data")
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class TextDataset:
    """Training and validation samples as (N, T) input/label arrays, and a step -> micro-batches function."""
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    seed: int
    micro_batch_size: int
    grad_accum: int
    stats: dict

    @property
    def seq_len(self) -> int:
        return int(self.train_x.shape[1])

    def samples_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0xBA7C, epoch]).permutation(len(self.train_x))

    def batches(self, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The `grad_accum` micro-batches of optimizer step `step` (0-based): a pure function of (seed, step)."""
        n, b = len(self.train_x), self.micro_batch_size
        out, cache = [], {}
        for k in range(self.grad_accum):
            cur = (step * self.grad_accum + k) * b
            rows = []
            for j in range(cur, cur + b):
                ep = j // n
                if ep not in cache:
                    cache[ep] = self._order(ep)
                rows.append(cache[ep][j % n])
            rows = np.asarray(rows)
            out.append((self.train_x[rows], self.train_y[rows]))
        return out

    def position(self, step: int) -> dict:
        """Where the data stream stands after `step` optimizer steps (stored in checkpoints)."""
        consumed = step * self.samples_per_step()
        return {"samples_consumed": consumed, "epoch": consumed // max(1, len(self.train_x)),
                "train_samples": len(self.train_x)}

    def val_batches(self, batch_size: int, max_batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fixed validation batches (same every eval); a ragged tail is dropped so one jitted shape serves."""
        nb = min(max_batches, len(self.val_x) // batch_size)
        return [(self.val_x[i * batch_size:(i + 1) * batch_size], self.val_y[i * batch_size:(i + 1) * batch_size])
                for i in range(nb)]


def build_dataset(docs: list[dict], tok, *, seq_len: int, val_fraction: float, seed: int, micro_batch_size: int,
                  grad_accum: int, packing: bool = True, max_docs: int | None = None, max_chars: int | None = None,
                  add_eos: bool = True) -> TextDataset:
    """Tokenise and split documents into a TextDataset. `max_docs`/`max_chars` take a bounded slice (tests, demos)."""
    if seq_len < 2:
        raise DataError(f"data.seq_len must be >= 2 (got {seq_len})")
    if max_docs:
        docs = docs[:max_docs]
    if max_chars:
        docs = [dict(d, text=d["text"][:max_chars]) if "text" in d else d for d in docs]
    tr_idx, va_idx = split_documents(len(docs), val_fraction, seed)
    toks = [tokenize_doc(d, tok, add_eos) for d in docs]
    pad_id = tok.pad_id if getattr(tok, "pad_id", None) is not None else (tok.eos_id or 0)

    def make(idx):
        seqs = [toks[i] for i in idx]
        t, m = pack(seqs, seq_len) if packing else pad(seqs, seq_len, pad_id)
        return to_xy(t, m)
    tx, ty = make(tr_idx)
    vx, vy = make(va_idx) if va_idx else (np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32))
    if len(tx) < micro_batch_size:
        raise DataError(f"only {len(tx)} training samples of {seq_len} tokens; need at least micro_batch_size="
                        f"{micro_batch_size}: add data, lower data.seq_len or train.micro_batch_size")
    stats = {"documents": len(docs), "train_documents": len(tr_idx), "val_documents": len(va_idx),
             "tokens": int(sum(len(s) for s, _ in toks)), "train_samples": int(len(tx)), "val_samples": int(len(vx)),
             "trained_tokens_per_sample": seq_len, "packing": packing,
             "train_label_fraction": float((ty != IGNORE).mean()) if len(ty) else 0.0}
    return TextDataset(tx, ty, vx, vy, seed, micro_batch_size, grad_accum, stats)
