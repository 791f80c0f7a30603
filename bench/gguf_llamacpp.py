"""GGUF files in llama.cpp's own kernels and in the project's emulation of them (export/llamacpp.py), on a real
model and the held-out parity text (64 x 64 = 4,096 tokens by default, as the export gate): top-1 agreement and
perplexity against the fp32 original in tinygrad for each file, in real llama.cpp and in the emulation, and how
often the two runtimes pick the same top-1 token. Needs llama-cpp-python (the `llamacpp` extra). With --write DIR
it first writes the project's Q8_0 export (scale search + GPTQ, as `zpctl export --format gguf-q8_0`) twice: all
matrices Q8_0, and with the token embedding (SmolLM2's tied output head) kept F16.
Usage: PYTHONPATH=src python bench/gguf_llamacpp.py [--write DIR] [FILE.gguf ...] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--write", type=Path, help="write the project's Q8_0 exports of --model here first")
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from zeropoint.export import parity as P
    from zeropoint.export.gguf_writer import tokenizer_metadata, write_llama_gguf
    from zeropoint.export.llamacpp import emulate_llama_cpp, llama_cpp_version, run_llama_cpp
    from zeropoint.models import gguf
    from zeropoint.models.llama import state_dict
    from zeropoint.models.reference import linear_input_hessians
    from zeropoint.models.registry import load_model, resolve_ref
    if not llama_cpp_version():
        raise SystemExit("llama-cpp-python is not installed (pip install 'zeropoint[llamacpp]')")
    out = {"model": a.model, "llama_cpp_python": llama_cpp_version(), "cpu_count": os.cpu_count(),
           "load_before": os.getloadavg(), "timings_s": {}, "files": {}}
    model, cfg, tok = load_model(a.model)
    files = list(a.files)
    if a.write:
        src = resolve_ref(a.model)
        meta = gguf.tokenizer_metadata(gguf.read_header(src, tensors=False)[0]) if src.suffix == ".gguf" else None
        weights = {k: v.numpy() for k, v in state_dict(model).items()}
        cal, _ = P.calibration_tokens(tok, 128, 64)
        t0 = time.perf_counter()
        hessians = linear_input_hessians(weights, cfg, cal)
        out["timings_s"]["calibration"] = round(time.perf_counter() - t0, 1)
        a.write.mkdir(parents=True, exist_ok=True)
        for name, types in (("q8_0", None), ("q8_0-embd-f16", {"model.embed_tokens.weight": "f16"})):
            t0 = time.perf_counter()
            write_llama_gguf(cfg, weights, tokenizer_metadata(tok, meta), a.write / f"model.{name}.gguf", "q8_0",
                             name=a.model, hessians=hessians, tensor_types=types)
            out["timings_s"][f"write {name}"] = round(time.perf_counter() - t0, 1)
            files.append(a.write / f"model.{name}.gguf")
        del hessians, weights
    tokens, out["inputs"] = P.sotu_tokens(tok, a.seqs, a.len)
    t0 = time.perf_counter()
    ref = P.llama_logits(model, tokens)
    out["timings_s"]["original tinygrad fp32"] = round(time.perf_counter() - t0, 1)
    for f in files:
        t0 = time.perf_counter()
        real = run_llama_cpp(f, tokens)
        t1 = time.perf_counter()
        emu = emulate_llama_cpp(f, tokens)
        t2 = time.perf_counter()
        r = {"size_mb": round(f.stat().st_size / 1e6, 1), "llama.cpp": P.compare(ref, real, tokens),
             "emulated": P.compare(ref, emu, tokens),
             "same_top1_llama.cpp_vs_emulated": float((real.argmax(-1) == emu.argmax(-1)).mean()),
             "max_abs_llama.cpp_vs_emulated": float(np.abs(real - emu).max()),
             "bit_equal_positions_llama.cpp_vs_emulated": float((real == emu).all(-1).mean()),
             "run_s": {"llama.cpp": round(t1 - t0, 1), "emulated": round(t2 - t1, 1)}}
        r["top1_gap_pp"] = round(100 * (r["emulated"]["top1_agreement"] - r["llama.cpp"]["top1_agreement"]), 3)
        out["files"][str(f)] = r
        print(f"{f.name}: llama.cpp top-1 {100 * r['llama.cpp']['top1_agreement']:.2f}%, emulated "
              f"{100 * r['emulated']['top1_agreement']:.2f}% (gap {r['top1_gap_pp']:+.3f} pp), same top-1 "
              f"{100 * r['same_top1_llama.cpp_vs_emulated']:.2f}%, bit-equal positions "
              f"{100 * r['bit_equal_positions_llama.cpp_vs_emulated']:.2f}%", flush=True)
        del real, emu
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=2, default=float)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
