"""The KV-cache ONNX graph (`zpctl export --format onnx-kv`, optimum's past_key_values layout) generating in
onnxruntime as a generator runs it (prefill, then one token per call with the returned cache), against
`zpctl generate` on the same model and prompt (greedy): are the token ids identical, and how far are the decode
steps' logits from one full call over the same ids (and from the project's tinygrad forward).
Usage: PYTHONPATH=src python bench/onnx_kv_generate.py [--model smollm2-135m] [--tokens 16] [--chat] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", default="The state of our union is")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    import onnxruntime as ort
    from tinygrad import Tensor

    from zeropoint.export.onnx import kv_feeds, kv_input_names, write_llama_onnx_kv
    from zeropoint.models.llama import state_dict
    from zeropoint.models.llm import open_lm
    out = {"model": a.model, "prompt": a.prompt, "chat": a.chat, "cpu_count": os.cpu_count(),
           "load_before": os.getloadavg(), "onnxruntime": ort.__version__}
    cmd = [sys.executable, "-m", "zeropoint.cli.main", "generate", a.model, "-p", a.prompt, "-n", str(a.tokens), "--json"]
    t0 = time.perf_counter()
    gen = json.loads(subprocess.run(cmd + (["--chat"] if a.chat else []), check=True, capture_output=True, text=True).stdout)
    out["zpctl_generate"] = {"ids": gen["ids"], "stop_reason": gen["stop_reason"], "s": round(time.perf_counter() - t0, 1)}
    lm = open_lm(a.model)
    tok, cfg = lm.tokenizer, lm.config
    prompt = tok.apply_chat_template([{"role": "user", "content": a.prompt}], add_generation_prompt=True, tokenize=True) \
        if a.chat else tok.encode(a.prompt, add_bos=tok.add_bos)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        write_llama_onnx_kv(cfg, {k: v.numpy() for k, v in state_dict(lm.model).items()}, Path(d) / "model.onnx")
        out["write_s"] = round(time.perf_counter() - t0, 1)
        sess = ort.InferenceSession(str(Path(d) / "model.onnx"), providers=["CPUExecutionProvider"])
        t0 = time.perf_counter()
        res = sess.run(None, kv_feeds(cfg, np.array([prompt])))
        steps, ids = [res[0][0, -1]], []
        for _ in range(a.tokens):
            ids.append(int(res[0][0, -1].argmax()))
            if ids[-1] == tok.eos_id:
                break
            res = sess.run(None, kv_feeds(cfg, np.array([[ids[-1]]]), dict(zip(kv_input_names(cfg), res[1:]))))
            steps.append(res[0][0, -1])
        out["onnxruntime_kv"] = {"ids": ids, "s": round(time.perf_counter() - t0, 2)}
        seq = np.array([prompt + ids[:len(steps) - 1]])
        full = sess.run(["logits"], kv_feeds(cfg, seq))[0][0, len(prompt) - 1:]
    ref = lm.model(Tensor(seq.astype(np.int32))).numpy()[0, len(prompt) - 1:]
    dec = np.stack(steps)
    out["identical_ids"] = ids == gen["ids"]
    out["decode_vs_full_forward_max_abs"] = float(np.abs(dec - full).max())
    out["decode_vs_tinygrad_max_abs"] = float(np.abs(dec - ref).max())
    out["decode_steps_compared"] = len(steps)
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
