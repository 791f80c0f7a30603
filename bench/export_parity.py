"""ONNX runtime latency per token vs tinygrad's, on the same model and the same real tokens.

    PYTHONPATH=src python bench/export_parity.py [--model smollm2-135m] [--seq-len 32] [--repeats 5] [--int8]

Both run the prefill of one sequence (positions 0..T-1, no KV cache: the exported graph has none) after a
warm-up (tinygrad: kernel compile, JIT capture; onnxruntime: session build); reported is the median of the
timed repeats divided by T, plus the parity figures of the same run. Prints one JSON document."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="named model, .gguf or HF dir")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--int8", action="store_true", help="also time the onnxruntime dynamic-int8 graph")
    a = ap.parse_args()

    import onnxruntime as ort
    from tinygrad import Tensor, TinyJit

    from zeropoint.export import parity as P
    from zeropoint.export.onnx import write_llama_onnx
    from zeropoint.models.llama import state_dict
    from zeropoint.models.registry import load_model

    model, cfg, tok = load_model(a.model)
    toks, meta = P.sotu_tokens(tok, 1, a.seq_len)
    res = {"model": a.model, "seq_len": a.seq_len, "repeats": a.repeats, "inputs": meta}

    jit = TinyJit(lambda t: model(t).realize())
    x = Tensor(toks.astype(np.int32)).realize()
    t0 = time.perf_counter()
    for _ in range(2):   # call 1 eager, call 2 captures
        ref = jit(x).numpy()
    res["tinygrad_warmup_s"] = round(time.perf_counter() - t0, 2)
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        jit(x).numpy()
        times.append(time.perf_counter() - t0)
    res["tinygrad_ms_per_token"] = round(1000 * statistics.median(times) / a.seq_len, 3)

    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "m.onnx"
        write_llama_onnx(cfg, {k: v.numpy() for k, v in state_dict(model).items()}, path)
        graphs = {"onnxruntime_fp32": path}
        if a.int8:
            from zeropoint.export.quant import quantize_onnx_int8
            quantize_onnx_int8(path, Path(td) / "q.onnx")
            graphs["onnxruntime_int8"] = Path(td) / "q.onnx"
        for name, g in graphs.items():
            t0 = time.perf_counter()
            sess = ort.InferenceSession(str(g), providers=["CPUExecutionProvider"])
            out = sess.run(None, {"input_ids": toks})[0]
            res[f"{name}_warmup_s"] = round(time.perf_counter() - t0, 2)
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                sess.run(None, {"input_ids": toks})
                times.append(time.perf_counter() - t0)
            res[f"{name}_ms_per_token"] = round(1000 * statistics.median(times) / a.seq_len, 3)
            m = P.compare(ref, out, toks)
            res[f"{name}_parity"] = {k: m[k] for k in ("max_abs", "cosine", "top1_agreement", "ppl_rel_delta")}
    res["speedup_onnxruntime_vs_tinygrad"] = round(res["tinygrad_ms_per_token"] / res["onnxruntime_fp32_ms_per_token"], 2)
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
