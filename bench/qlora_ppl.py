"""Held-out perplexity of two LoRA checkpoints of the same recipe (e.g. NF4 base against bf16 base), paired.

Each checkpoint's model is rebuilt exactly as it trained (its config: precision, frozen base dtype or NF4,
adapters loaded), and both score the same held-out sequences of the recipe's validation split (read through the
governance gate, as the recipe reads them). Per sequence: mean next-token loss. Reported: each perplexity, the
paired mean loss difference (B - A) with a 95% bootstrap CI over sequences (10,000 resamples), and the
perplexity ratio B/A with the same CI. Sequences from one document are correlated, so the CI is optimistic.

    ZP_HOME=... PYTHONPATH=src python bench/qlora_ppl.py RUN_A/checkpoints/step-00000008 RUN_B/... --val-batches 32
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def per_sequence_losses(ckpt: str, val_batches: int):
    import numpy as np
    from tinygrad import Tensor, TinyJit

    from zeropoint.checkpoint import load_checkpoint
    from zeropoint.config import validate
    from zeropoint.data.text import build_dataset
    from zeropoint.engine import precision_context
    from zeropoint.governance.audit import default_actor
    from zeropoint.governance.gate import require_approved
    from zeropoint.models.llm import load_trained_weights
    from zeropoint.recipes.llm_finetune import LLMFinetuneConfig, build, governed_documents
    ck = load_checkpoint(ckpt)
    cfg = validate(LLMFinetuneConfig, ck.config, f"{ckpt}/config.json")
    lm, params = build(cfg)                      # the base exactly as it trained: precision, NF4/int8/bf16
    model, mc, tok = lm.model, lm.config, lm.tokenizer
    load_trained_weights(model, params, ck, cfg.method)
    records = require_approved(cfg.data.datasets, actor=default_actor(), purpose="llm_finetune:eval")
    docs = governed_documents(cfg, records)
    t, d = cfg.train, cfg.data
    ds = build_dataset(docs, tok, seq_len=d.seq_len, val_fraction=d.val_fraction, seed=t.seed,
                       micro_batch_size=t.micro_batch_size, grad_accum=t.grad_accum, packing=d.packing,
                       max_docs=d.max_docs, max_chars=d.max_chars)

    @TinyJit
    def seq_loss(x, y):
        logp = model(x).log_softmax(-1)
        nll = -(logp * y.one_hot(mc.vocab_size)).sum(-1)          # (B, T); packed: every label is a real token
        return nll.mean(-1).realize()
    out = []
    with precision_context(t.precision):
        for x, y in ds.val_batches(t.micro_batch_size, val_batches):
            out += seq_loss(Tensor(np.ascontiguousarray(x)).realize(), Tensor(np.ascontiguousarray(y)).realize()).tolist()
    return cfg, np.array(out)


def main() -> int:
    import numpy as np
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt_a")
    ap.add_argument("ckpt_b")
    ap.add_argument("--val-batches", type=int, default=32)
    ap.add_argument("--cache", default=None, help="directory keeping each checkpoint's per-sequence losses (.npy), "
                                                  "so the two can be scored in separate processes")
    args = ap.parse_args()

    def scored(ckpt):
        import hashlib

        from zeropoint.checkpoint import load_checkpoint
        from zeropoint.config import validate
        from zeropoint.recipes.llm_finetune import LLMFinetuneConfig
        f = Path(args.cache) / (hashlib.sha256(f"{Path(ckpt).resolve()}|{args.val_batches}".encode()).hexdigest()[:16]
                                + ".npy") if args.cache else None
        if f is not None and f.is_file():
            ck = load_checkpoint(ckpt)
            return validate(LLMFinetuneConfig, ck.config, ckpt), np.load(f)
        cfg, losses = per_sequence_losses(ckpt, args.val_batches)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, losses)
        return cfg, losses
    cfg_a, a = scored(args.ckpt_a)
    cfg_b, b = scored(args.ckpt_b)
    if cfg_a.data != cfg_b.data or len(a) != len(b):
        raise SystemExit("the two checkpoints were trained on different data configs; the comparison needs the same")
    diff = b - a
    rng = np.random.default_rng(0)
    boots = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(10_000)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    print(json.dumps({
        "a": {"ckpt": args.ckpt_a, "base_quant": cfg_a.lora.base_quant, "precision": cfg_a.train.precision,
              "val_loss": float(a.mean()), "val_ppl": math.exp(a.mean())},
        "b": {"ckpt": args.ckpt_b, "base_quant": cfg_b.lora.base_quant, "precision": cfg_b.train.precision,
              "val_loss": float(b.mean()), "val_ppl": math.exp(b.mean())},
        "sequences": len(diff), "tokens_per_sequence": cfg_a.data.seq_len,
        "loss_diff_b_minus_a": float(diff.mean()), "loss_diff_ci95": [float(lo), float(hi)],
        "ppl_ratio_b_over_a": math.exp(diff.mean()), "ppl_ratio_ci95": [math.exp(lo), math.exp(hi)],
        "load_avg_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
