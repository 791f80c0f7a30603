"""Parity: the same real inputs through the original tinygrad model and through the exported artifact in the
runtime that will serve it, compared with numbers and a gate.

Figures: max abs error, relative error (||d|| / ||ref||, and max abs / max |ref|), cosine similarity (global and
worst row), top-1 agreement; for LMs perplexity of both on the same held-out text and its relative delta, for
classifiers accuracy of both on real labels.

Gates (defaults from the issue): fp32 artifacts max abs <= 1e-4 and top-1 100%; int8 / Q8_0 artifacts top-1 >= 99%
and perplexity (or accuracy) within 2% of the fp32 original.
"""
from __future__ import annotations

import gzip
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from tinygrad import Tensor
from tinygrad.nn.onnx import OnnxRunner

from ..data.assets import fashion_mnist_dir, sotu_dir
from ..errors import ZeropointError
from .formats import EXPORT_FORMATS
from .onnx import kv_feeds, kv_input_names


class ParityError(ZeropointError):
    pass


@dataclass(frozen=True)
class Gate:
    name: str
    max_abs: float | None          # None: not gated on raw error (quantized artifacts differ by design)
    min_top1: float
    max_metric_rel: float | None   # |ppl_exp - ppl_ref| / ppl_ref (LM) or |acc_exp - acc_ref| / acc_ref (classifier)


FP32_GATE = Gate("fp32", max_abs=1e-4, min_top1=1.0, max_metric_rel=None)
GGUF_F32_GATE = Gate("gguf-f32", max_abs=1e-5, min_top1=1.0, max_metric_rel=None)
INT8_GATE = Gate("int8", max_abs=None, min_top1=0.99, max_metric_rel=0.02)


def default_parity_seqs(fmt: str) -> int:
    """Held-out sequences (of 64 tokens) parity uses by default. A quantized artifact's gate is a rate, so it
    needs 64 sequences (4096 tokens; why: docs/export.md, "How many tokens a quantized gate needs"); exact gates
    need no more than 8."""
    return 64 if gate_for(fmt) is INT8_GATE else 8


def gate_for(fmt: str) -> Gate:
    if EXPORT_FORMATS[fmt].quantized:
        return INT8_GATE
    return GGUF_F32_GATE if fmt == "gguf" else FP32_GATE


# ---- metrics ------------------------------------------------------------------------------------------------
def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def compare(ref: np.ndarray, out: np.ndarray, tokens: np.ndarray | None = None, labels: np.ndarray | None = None,
            chunk_rows: int = 256) -> dict:
    """Every figure comparing reference outputs with an artifact's outputs (same shapes). Rows (positions) are
    taken `chunk_rows` at a time in float64: 4096 positions x a 49k vocabulary is 1.6 GB per float64 copy."""
    if ref.shape != out.shape:
        raise ParityError(f"output shapes differ: original {ref.shape} vs exported {out.shape}; the export computes a "
                          "different function (wrong vocab/classes or sequence axis)")
    r2, o2 = ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1])
    # next-token targets per row (-1: the last position of a sequence predicts nothing)
    tgt = None
    if tokens is not None:
        t = np.full(tokens.shape, -1, np.int64)
        t[:, :-1] = tokens[:, 1:]
        tgt = t.reshape(-1)
    finite = bool(np.isfinite(o2).all())
    acc = dict(max_abs=0.0, sum_abs=0.0, d2=0.0, r2=0.0, o2=0.0, ro=0.0, max_ref=0.0, min_cos=np.inf, agree=0,
               nll_r=0.0, nll_o=0.0, n_nll=0)
    for i in range(0, r2.shape[0], chunk_rows):
        r, o = r2[i:i + chunk_rows].astype(np.float64), o2[i:i + chunk_rows].astype(np.float64)
        acc["agree"] += int((r.argmax(-1) == o.argmax(-1)).sum())
        if tgt is not None:
            sel = tgt[i:i + chunk_rows] >= 0
            for key, x in (("nll_r", r), ("nll_o", o)):
                if key == "nll_o" and not finite:
                    continue
                lp = _log_softmax(x[sel])
                acc[key] -= float(np.take_along_axis(lp, tgt[i:i + chunk_rows][sel][:, None], -1).sum())
            acc["n_nll"] += int(sel.sum())
        if not finite:
            continue
        d = o - r
        acc["max_abs"] = max(acc["max_abs"], float(np.abs(d).max()))
        acc["sum_abs"] += float(np.abs(d).sum())
        acc["max_ref"] = max(acc["max_ref"], float(np.abs(r).max()))
        acc["d2"] += float(np.square(d).sum())
        acc["r2"] += float(np.square(r).sum())
        acc["o2"] += float(np.square(o).sum())
        rowdot = (r * o).sum(-1)
        acc["ro"] += float(rowdot.sum())
        row_cos = rowdot / np.maximum(np.linalg.norm(r, axis=-1) * np.linalg.norm(o, axis=-1), 1e-30)
        acc["min_cos"] = min(acc["min_cos"], float(row_cos.min()))
    n = r2.shape[0]
    m = {"n_rows": int(n), "finite": finite,
         "max_abs": acc["max_abs"] if finite else None,
         "mean_abs": acc["sum_abs"] / r2.size if finite else None,
         "rel_l2": math.sqrt(acc["d2"]) / max(math.sqrt(acc["r2"]), 1e-30) if finite else None,
         "max_abs_over_max_ref": acc["max_abs"] / max(acc["max_ref"], 1e-30) if finite else None,
         "cosine": acc["ro"] / max(math.sqrt(acc["r2"]) * math.sqrt(acc["o2"]), 1e-30) if finite else None,
         "min_row_cosine": acc["min_cos"] if finite else None,
         "top1_agreement": acc["agree"] / n}
    if tokens is not None:
        m["ppl_original"] = math.exp(acc["nll_r"] / acc["n_nll"])
        m["ppl_exported"] = math.exp(acc["nll_o"] / acc["n_nll"]) if finite else None
        m["ppl_rel_delta"] = (m["ppl_exported"] - m["ppl_original"]) / m["ppl_original"] if finite else None
    if labels is not None:
        m["acc_original"] = float((r2.argmax(-1) == labels).mean())
        m["acc_exported"] = float((o2.argmax(-1) == labels).mean())
        m["acc_rel_delta"] = (m["acc_exported"] - m["acc_original"]) / max(m["acc_original"], 1e-12)
    return m


def check_gate(m: dict, gate: Gate) -> list[str]:
    """Failures as sentences naming the figure, its value and the limit (empty = passed)."""
    fails = []
    if not m["finite"]:
        fails.append("exported outputs contain NaN/inf")
        return fails
    if gate.max_abs is not None and m["max_abs"] > gate.max_abs:
        fails.append(f"max abs error {m['max_abs']:.3g} > {gate.max_abs:g}")
    if m["top1_agreement"] < gate.min_top1:
        fails.append(f"top-1 agreement {100 * m['top1_agreement']:.2f}% < {100 * gate.min_top1:g}%")
    if gate.max_metric_rel is not None:
        for key, what in (("ppl_rel_delta", "perplexity"), ("acc_rel_delta", "accuracy")):
            if m.get(key) is not None and abs(m[key]) > gate.max_metric_rel:
                fails.append(f"{what} differs from the original by {100 * m[key]:+.2f}% (limit ±{100 * gate.max_metric_rel:g}%)")
    return fails


# ---- real inputs --------------------------------------------------------------------------------------------
HELD_OUT_SPEECHES = ("2019_donald_j_trump_r.txt", "2020_donald_j_trump_r.txt", "2021_joseph_r_biden_d.txt")


def sotu_tokens(tok, n_seq: int = 4, seq_len: int = 32) -> tuple[np.ndarray, dict]:
    """(n_seq, seq_len) int64 windows of real State of the Union text (the newest speeches, held out from the
    finetune corpora that use the older ones), non-overlapping, from the start of each speech's text."""
    d = sotu_dir()
    ids: list[int] = []
    used = []
    for name in HELD_OUT_SPEECHES:
        if (d / name).is_file():
            ids += tok.encode((d / name).read_text(encoding="utf-8", errors="replace"))
            used.append(name)
        if len(ids) >= n_seq * seq_len:
            break
    if len(ids) < n_seq * seq_len:
        raise ParityError(f"not enough held-out text for {n_seq} x {seq_len} tokens in {d}")
    arr = np.asarray(ids[:n_seq * seq_len], dtype=np.int64).reshape(n_seq, seq_len)
    return arr, {"dataset": "sotu", "files": used, "n_seq": n_seq, "seq_len": seq_len}


# Calibration text for quantizers (AWQ scales): other speeches than the held-out ones parity is measured on.
CALIBRATION_SPEECHES = ("2015_barack_obama_d.txt", "2016_barack_obama_d.txt", "2017_donald_j_trump_r.txt",
                        "2018_donald_j_trump_r.txt")


def calibration_tokens(tok, n_seq: int = 8, seq_len: int = 64) -> tuple[np.ndarray, dict]:
    """(n_seq, seq_len) windows spread over the calibration speeches (never the parity text)."""
    d, per = sotu_dir(), -(-n_seq // len(CALIBRATION_SPEECHES))
    rows, used = [], []
    for name in CALIBRATION_SPEECHES:
        ids = tok.encode((d / name).read_text(encoding="utf-8", errors="replace"))
        take = [ids[i * seq_len:(i + 1) * seq_len] for i in range(min(per, len(ids) // seq_len))]
        rows += take
        used += [name] if take else []
    if len(rows) < n_seq:
        raise ParityError(f"not enough calibration text for {n_seq} x {seq_len} tokens in {d}")
    return np.asarray(rows[:n_seq], dtype=np.int64), {"dataset": "sotu", "files": used, "n_seq": n_seq,
                                                      "seq_len": seq_len}


FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


def fashion_mnist_images(n: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """First n Fashion-MNIST test images as (n, 1, 28, 28) fp32, normalised with the dataset mean/std, + labels."""
    d = fashion_mnist_dir()
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = raw.reshape(-1, 1, 28, 28)[:n].astype(np.float32) / 255.0
    return (x - FMNIST_MEAN) / FMNIST_STD, labels[:n].astype(np.int64), {"dataset": "fashion-mnist/t10k", "n": n}


# ---- runtimes -----------------------------------------------------------------------------------------------
def run_onnxruntime(path: str | Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """First output of the graph on onnxruntime's CPU provider; -> (output, seconds of the run call)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    out = sess.run(None, feeds)[0]
    return out, time.perf_counter() - t0


def run_onnx_tinygrad(path: str | Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """The same graph through tinygrad's own ONNX runner (`tinygrad.nn.onnx.OnnxRunner`)."""
    runner = OnnxRunner(Path(path))
    t0 = time.perf_counter()
    out = runner({k: Tensor(v) for k, v in feeds.items()})
    res = next(iter(out.values())).numpy()
    return res, time.perf_counter() - t0


def llama_logits(model, tokens: np.ndarray) -> np.ndarray:
    return model(Tensor(tokens.astype(np.int32))).numpy()


# ---- the report ---------------------------------------------------------------------------------------------
def report(fmt: str, runtimes: dict[str, dict], inputs: dict, gate: Gate | None = None) -> dict:
    """`runtimes`: name -> compare() figures (+ seconds). Passed only if every runtime passes the gate."""
    gate = gate or gate_for(fmt)
    out = {"format": fmt, "gate": asdict(gate), "inputs": inputs, "runtimes": {}, "failures": []}
    for name, m in runtimes.items():
        fails = check_gate(m, gate)
        out["runtimes"][name] = {**m, "passed": not fails, "failures": fails}
        out["failures"] += [f"{name}: {f}" for f in fails]
    out["passed"] = not out["failures"]
    return out


def onnx_parity(path: str | Path, reference: np.ndarray, feeds: dict[str, np.ndarray], fmt: str,
                tokens: np.ndarray | None = None, labels: np.ndarray | None = None, inputs: dict | None = None,
                second_runtime: bool = True, gate: Gate | None = None,
                also_vs: dict[str, np.ndarray] | None = None) -> dict:
    """An ONNX artifact vs the original's outputs, on onnxruntime CPU and (fp32 graphs) tinygrad's OnnxRunner.

    tinygrad's runner has no integer-matmul kernels for quantized graphs, so int8 graphs are checked on
    onnxruntime only (the runtime that serves them)."""
    rts: dict[str, dict] = {}
    runners = [("onnxruntime-cpu", run_onnxruntime)] + ([("tinygrad-onnx-runner", run_onnx_tinygrad)] if second_runtime else [])
    for name, run in runners:
        out, s = run(path, feeds)
        rts[name] = {**compare(reference, out, tokens, labels), "run_s": round(s, 4)}
        for other, arr in (also_vs or {}).items():   # informational, not gated
            rts[name][f"max_abs_vs_{other}"] = float(np.abs(out.astype(np.float64) - arr).max())
    return report(fmt, rts, inputs or {}, gate)


def onnx_kv_decode(path: str | Path, cfg, tokens: np.ndarray, prefill: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A KV-cache graph as a generator runs it: `prefill` tokens in one call, then one token per call with the
    cache it returned. -> (logits of every position (B, T, V) from those calls, the same graph's logits from one
    full call with an empty cache, seconds of the decode calls)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = kv_input_names(cfg)
    full = sess.run(["logits"], kv_feeds(cfg, tokens))[0]
    t0 = time.perf_counter()
    out = sess.run(None, kv_feeds(cfg, tokens[:, :prefill]))
    parts = [out[0]]
    for t in range(prefill, tokens.shape[1]):
        out = sess.run(None, kv_feeds(cfg, tokens[:, t:t + 1], dict(zip(names, out[1:]))))
        parts.append(out[0])
    return np.concatenate(parts, axis=1), full, time.perf_counter() - t0


def summary_line(rep: dict) -> str:
    parts = []
    for name, m in rep["runtimes"].items():
        s = f"{name}: max_abs={m['max_abs']:.3g} cos={m['cosine']:.6f} top1={100 * m['top1_agreement']:.2f}%" \
            if m["finite"] else f"{name}: non-finite outputs"
        if m.get("max_abs_vs_tinygrad_fp32") is not None:
            s += f" (vs fp32 tinygrad {m['max_abs_vs_tinygrad_fp32']:.3g})"
        if m.get("ppl_rel_delta") is not None:
            s += f" ppl {m['ppl_original']:.3f}->{m['ppl_exported']:.3f} ({100 * m['ppl_rel_delta']:+.3f}%)"
        if m.get("acc_rel_delta") is not None:
            s += f" acc {m['acc_original']:.3f}->{m['acc_exported']:.3f}"
        parts.append(s + (" PASS" if m["passed"] else " FAIL"))
    return "; ".join(parts)


Forward = Callable[[np.ndarray], np.ndarray]
