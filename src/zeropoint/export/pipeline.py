"""One export, top to bottom: write the artifact, run it in its runtime on real inputs, gate, record the manifest.

    rec = export_llama(model, cfg, tok, source={"ref": "smollm2-135m", "path": ...}, fmt="onnx")
    rec["status"]   # "succeeded" or "failed" (gate), with rec["parity"] holding every figure

Formats: onnx (fp32), onnx-int8 (onnxruntime dynamic int8), onnx-int8-wo (weight-only int8, MatMulNBits), int8
(weight-only int8 safetensors for tinygrad), gguf (F32), gguf-f16, gguf-q8_0, hf (safetensors dir).

The reference: an artifact served by tinygrad (gguf, hf, int8) is compared with the original's fp32 tinygrad
forward, so an identical reload gives 0 difference. An artifact served by another runtime (ONNX on
onnxruntime) is compared with a float64 numpy evaluation of the original weights (`models.reference`): two fp32
runtimes each carry their own rounding (docs/export.md has the figures), so gating one fp32 runtime against the
other would charge the reference's rounding to the export. The report carries the original's own error against the oracle
and the artifact's distance to the fp32 original beside the gated figure.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import onnx
from tinygrad.llm.gguf import gguf_load

from ..clock import utcnow
from ..errors import ZeropointError
from ..models.gguf import load_gguf, read_header
from ..models.hf import config_to_hf, load_hf_dir, save_hf_dir
from ..models.llama import from_weights, param_count, state_dict
from ..models.llm import build_llm, checkpoint_model_spec, is_finetune_checkpoint, open_checkpoint, trainable_params
from ..models.lora import adapter_tensors
from ..models.peft import HF_IDS, init_adapters_from_peft, write_peft_adapter
from ..models.reference import forward_batch, linear_input_hessians
from ..workspace import workspace
from . import manifest as M
from . import parity as P
from .formats import ADAPTER_FORMATS, EXPORT_FORMATS, LLM_FORMATS
from .gguf_writer import tokenizer_metadata, write_llama_gguf
from .llamacpp import LLAMA_CPP_EMULATED, gguf_logits, llama_cpp_version
from .onnx import kv_feeds, write_llama_onnx, write_llama_onnx_kv
from .quant import (
    GPTQ_DAMP,
    Q8_0_CODES,
    load_llama_int8,
    quantize_onnx_int8,
    quantize_onnx_int8_weights,
    save_llama_int8,
)

TINYGRAD_RUNNER_MAX_PARAMS = 50_000_000   # OnnxRunner is slow on larger graphs (docs/export.md): opt-in above this


def _weights_np(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in state_dict(model).items()}


def _start(fmt: str, out: str | Path | None, source: dict) -> tuple[str, Path, dict]:
    if fmt not in LLM_FORMATS:
        raise ZeropointError(f"unknown export format {fmt!r}; choose one of {', '.join(LLM_FORMATS)}")
    eid = M.new_export_id(fmt)
    d = Path(out) if out else workspace().exports / eid
    if d.exists() and any(d.iterdir()):
        raise ZeropointError(f"{d} already exists and is not empty; pass a new --out (nothing was overwritten)")
    d.mkdir(parents=True, exist_ok=True)
    src = dict(source)
    if src.get("path"):
        src.update(M.source_hash(src["path"]))
    rec = {"id": eid, "status": "running", "format": fmt, "source": src, "created_at": utcnow(),
           "tools": M.tool_versions(), "opset": None, "quantization": None, "parity": None, "files": []}
    M.write_manifest(d, rec)
    return eid, d, rec


def export_llama(model, cfg, tok, source: dict, fmt: str = "onnx", out: str | Path | None = None,
                 n_seq: int | None = None, seq_len: int = 64, seq_axis: int | None = None, tinygrad_runner: bool | None = None,
                 gguf_meta: dict | None = None, progress=None) -> dict:
    """Export a Llama (LoRA already merged) and check it. Never raises on a failed gate: the manifest and the
    returned record say `failed` with the reasons; it raises only when the export itself cannot be written."""
    step = progress or (lambda msg: None)
    if fmt in ADAPTER_FORMATS:
        raise ZeropointError(f"--format {fmt} writes a checkpoint's LoRA adapters, not a merged model: "
                             "export a LoRA finetune checkpoint directory (export_peft)")
    eid, d, rec = _start(fmt, out, source)
    t_all = time.perf_counter()
    try:
        weights = _weights_np(model)
        tokens, inputs = P.sotu_tokens(tok, n_seq or P.default_parity_seqs(fmt), seq_len)
        step("running the original tinygrad model on held-out text")
        t0 = time.perf_counter()
        ref = P.llama_logits(model, tokens)
        rec["timings_s"] = {"original_forward": round(time.perf_counter() - t0, 3)}
        if tinygrad_runner is None:
            tinygrad_runner = param_count(cfg) <= TINYGRAD_RUNNER_MAX_PARAMS
        t0 = time.perf_counter()
        if fmt.startswith("onnx"):
            step("writing ONNX graph")
            fp32 = d / ("model.onnx" if fmt in ("onnx", "onnx-kv") else "model.fp32.onnx")
            if fmt == "onnx-kv":   # optimum's layout: config.json beside the graph, as ORTModelForCausalLM reads it
                info = write_llama_onnx_kv(cfg, weights, fp32, metadata={"zeropoint.export_id": eid})
                (d / "config.json").write_text(json.dumps(config_to_hf(cfg, "float32", tok.bos_id, tok.eos_id), indent=2)
                                               + "\n", encoding="utf-8")
            else:
                info = write_llama_onnx(cfg, weights, fp32, seq_len=seq_axis, metadata={"zeropoint.export_id": eid})
            rec.update(opset=info["opset"], seq_axis=info["seq_axis"])
            artifact = fp32
            if fmt not in ("onnx", "onnx-kv"):
                step("quantizing (" + ("onnxruntime dynamic int8" if fmt == "onnx-int8" else "weight-only int8, MatMulNBits") + ")")
                if fmt == "onnx-int8":
                    q = quantize_onnx_int8(fp32, d / "model.onnx")
                else:
                    # 8192 tokens: GPTQ's X^T X for a 1536-wide down_proj input needs well over 1536 rows
                    cal, cal_src = P.calibration_tokens(tok, 128, 64)
                    q = quantize_onnx_int8_weights(fp32, d / "model.onnx", calibration=cal, calibration_source=cal_src)
                rec["quantization"] = q["quantization"] | {"fp32_bytes": fp32.stat().st_size}
                for f in [fp32, fp32.with_name(fp32.name + ".data")]:
                    f.unlink(missing_ok=True)
                artifact = d / "model.onnx"
            rec["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
            step("float64 oracle of the original weights (the reference for another runtime)")
            t1 = time.perf_counter()
            oracle = forward_batch(weights, cfg, tokens)
            rec["timings_s"]["oracle"] = round(time.perf_counter() - t1, 3)
            second = bool(tinygrad_runner and fmt == "onnx")
            step("parity: onnxruntime" + (" + tinygrad OnnxRunner" if second else ""))
            rep = _onnx_report(artifact, cfg, fmt, tokens, inputs, oracle, ref, second)
            if fmt == "onnx" and not tinygrad_runner:
                rep["skipped_runtimes"] = {"tinygrad-onnx-runner": f"model has over {TINYGRAD_RUNNER_MAX_PARAMS:,} "
                                           "parameters (minutes on a CPU); pass --tinygrad-runner to include it"}
        elif fmt == "int8":
            step("quantizing (weight-only int8 per output row, for tinygrad)")
            artifact = d / "model.int8.safetensors"
            q = save_llama_int8(model, cfg, artifact)
            rec["quantization"] = q
            rec["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
            step("parity: reloading the int8 file into tinygrad")
            t1 = time.perf_counter()
            out = P.llama_logits(load_llama_int8(artifact), tokens)
            rep = P.report(fmt, {"tinygrad-int8": {**P.compare(ref, out, tokens), "run_s": round(time.perf_counter() - t1, 3)}},
                           inputs)
        elif fmt.startswith("gguf"):
            ttype = {"gguf": "f32", "gguf-f16": "f16", "gguf-q8_0": "q8_0"}[fmt]
            hessians, cal_src = None, None
            if ttype == "q8_0":
                # the same 8192 calibration tokens as onnx-int8-wo (disjoint from the parity text)
                cal, cal_src = P.calibration_tokens(tok, 128, 64)
                step(f"calibrating: X^T X of every projection's input on {cal.size} tokens (float64 reference forward)")
                t1 = time.perf_counter()
                hessians = linear_input_hessians(weights, cfg, cal)
                rec["timings_s"]["calibration"] = round(time.perf_counter() - t1, 3)
                t0 = time.perf_counter()
            step(f"writing GGUF ({ttype})" + (": scale search + GPTQ per tensor" if hessians else ""))
            artifact = d / f"model.{ttype}.gguf"
            info = write_llama_gguf(cfg, weights, tokenizer_metadata(tok, gguf_meta), artifact, ttype,
                                    name=str(source.get("name") or source.get("ref") or "zeropoint-export"),
                                    hessians=hessians, progress=lambda i, n: step(f"writing GGUF ({ttype}): tensor {i + 1}/{n}"))
            rec["quantization"] = {"gguf_tensor_type": ttype, "ggml_types": info["ggml_types"]}
            if ttype == "q8_0":
                data_free = sorted(k for k, w in weights.items() if w.ndim == 2 and k not in hessians
                                   and not (k == "lm_head.weight" and cfg.tie_embeddings))
                rec["quantization"] |= {
                    "scales": f"fp16 d per block of 32 searched over amax/c, c = {Q8_0_CODES[0]}..{Q8_0_CODES[-1]}, "
                              "minimising the block's rounding error weighted by diag(X^T X)",
                    "rounding": {"method": "GPTQ on the searched grids, input channels in decreasing diag(X^T X) "
                                           "order", "damp": GPTQ_DAMP, "calibration": cal_src},
                    "data_free_tensors": {"names": data_free, "why": "no X^T X: the embedding is a Gather (and the tied "
                                          "head, whose error there counts too)", "method": "scale search, round to nearest"}}
            del hessians
            rec["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
            step("parity: reloading with tinygrad's gguf_load and the project's GGUF loader")
            kv, sd = gguf_load(artifact)
            rep = _gguf_report(artifact, fmt, tokens, inputs, ref, cfg, step)
            rep["tinygrad_gguf_load"] = {"tensors": len(sd), "architecture": kv.get("general.architecture")}
        else:   # hf
            step("writing HF safetensors directory")
            artifact = save_hf_dir(weights, cfg, tok, d / "hf")
            rec["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
            step("parity: reloading the HF directory")
            c2, w2, _ = load_hf_dir(artifact, max_seq_len=cfg.max_seq_len)
            t1 = time.perf_counter()
            out = P.llama_logits(from_weights(c2, w2), tokens)
            rep = P.report(fmt, {"zeropoint-hf-loader": {**P.compare(ref, out, tokens), "run_s": round(time.perf_counter() - t1, 3)}},
                           inputs)
        _record_parity(rec, d, rep, str(artifact.relative_to(d)))
    except BaseException as e:
        rec.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        rec["timings_s"] = {**rec.get("timings_s", {}), "total": round(time.perf_counter() - t_all, 3)}
        rec["ended_at"] = utcnow()
        M.write_manifest(d, rec)
    rec["dir"] = str(d)
    return rec


def _peft_runtime(base_dir: Path, adapter_dir: Path, tokens: np.ndarray) -> np.ndarray:
    """Logits of transformers + peft (the runtime that serves a PEFT adapter) on a local base directory. peft,
    transformers and torch are the `test` extra: imported here, only when installed."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


def _peft_installed() -> str | None:
    """None when peft, transformers and torch import; else why the peft runtime is skipped."""
    for mod in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install zeropoint[test]); the adapter was checked by the project's loader only"
    return None


def export_peft(checkpoint: str | Path, out: str | Path | None = None, n_seq: int | None = None, seq_len: int = 64,
                progress=None) -> dict:
    """A LoRA checkpoint's adapters as a PEFT adapter directory, then parity: the adapter reloaded onto a fresh
    base by the project's own PEFT reader, and (when installed) by transformers + peft, against the checkpoint's
    adapted model on held-out text. The base it names: the Hugging Face id of a known named base; otherwise the
    base is exported beside the adapter as an HF directory (`base/`) and named by its absolute path."""
    step = progress or (lambda msg: None)
    if not is_finetune_checkpoint(checkpoint):
        raise ZeropointError(f"{checkpoint} is not a finetune checkpoint directory; --format peft exports the LoRA "
                             "adapters of one (runs/<id>/checkpoints/step-N)")
    lm = open_checkpoint(checkpoint, merge=False)
    if lm.info["method"] != "lora":
        raise ZeropointError(f"{checkpoint} is a full finetune (no adapters); export it with --format hf instead")
    spec, _, lora, seed = checkpoint_model_spec(lm.info["recipe_config"], f"{checkpoint}/config.json")
    eid, d, rec = _start("peft", out, {"ref": str(checkpoint), "path": str(checkpoint), "kind": "checkpoint",
                                       "base": spec.weights, "method": "lora"})
    t_all = time.perf_counter()
    try:
        tokens, inputs = P.sotu_tokens(lm.tokenizer, n_seq or P.default_parity_seqs("peft"), seq_len)
        step("running the checkpoint's adapted model on held-out text")
        t0 = time.perf_counter()
        ref = P.llama_logits(lm.model, tokens)
        rec["timings_s"] = {"original_forward": round(time.perf_counter() - t0, 3)}
        base_dir = None
        if spec.weights in HF_IDS:
            base_name = HF_IDS[spec.weights]
        elif spec.weights and Path(spec.weights).is_dir():
            base_dir = Path(spec.weights).resolve()
            base_name = str(base_dir)
        else:   # a random-init or GGUF base has no HF form users could fetch: ship it
            step("writing the base as an HF directory (base/)")
            base_dir = (d / "base").resolve()
            base_w = {k: v for k, v in state_dict(lm.model).items() if ".lora_" not in k}
            save_hf_dir(base_w, lm.config, lm.tokenizer, base_dir)
            base_name = str(base_dir)
        adapters = {k: t.numpy() for k, t in adapter_tensors(lm.model).items()}
        t0 = time.perf_counter()
        step("writing the PEFT adapter")
        write_peft_adapter(adapters, lora, base_name, d)
        rec["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
        rec["peft"] = {"base_model_name_or_path": base_name, "base_exported": base_dir is not None and base_dir.parent == d.resolve(),
                       "adapters": len(adapters), "r": lora.rank, "lora_alpha": lora.alpha,
                       "target_modules": sorted(lora.expanded_targets())}
        step("parity: the adapter reloaded onto a fresh base (the project's PEFT reader)")
        fresh = build_llm(spec, precision="fp32", seed=seed)
        trainable_params(fresh.model, "lora", lora, seed)
        init_adapters_from_peft(fresh.model, d, lora)
        t1 = time.perf_counter()
        runtimes = {"zeropoint-peft-loader": {**P.compare(ref, P.llama_logits(fresh.model, tokens), tokens),
                                              "run_s": round(time.perf_counter() - t1, 3)}}
        skipped = {}
        why = _peft_installed() or (None if base_dir else f"the base {base_name} is a hub id with no local copy here")
        if why is None:
            step("parity: transformers + peft (PeftModel.from_pretrained)")
            t1 = time.perf_counter()
            runtimes["peft"] = {**P.compare(ref, _peft_runtime(base_dir, d, tokens), tokens),
                                "run_s": round(time.perf_counter() - t1, 3)}
        else:
            skipped["peft"] = why
        rep = P.report("peft", runtimes, inputs)
        if skipped:
            rep["skipped_runtimes"] = skipped
        _record_parity(rec, d, rep, ".")
    except BaseException as e:
        rec.update(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        rec["timings_s"] = {**rec.get("timings_s", {}), "total": round(time.perf_counter() - t_all, 3)}
        rec["ended_at"] = utcnow()
        M.write_manifest(d, rec)
    rec["dir"] = str(d)
    return rec


def _record_parity(rec: dict, d: Path, rep: dict, artifact: str) -> None:
    """The export record after its parity gate: the report, every file of the export dir, and the outcome."""
    files = [p for p in d.iterdir() if p.name != M.MANIFEST]
    rec.update(parity=rep, files=M.file_entries(d, files), artifact=artifact,
               status="succeeded" if rep["passed"] else "failed",
               error=None if rep["passed"] else "parity gate failed: " + "; ".join(rep["failures"]))


def _gguf_report(artifact: Path, fmt: str, tokens: np.ndarray, inputs: dict, ref: np.ndarray, cfg, step,
                 runtime: str = "auto") -> dict:
    """A GGUF against the original: in llama.cpp (itself when llama-cpp-python is installed, else its emulation;
    the runtime's name says which) and in the project's own GGUF loader on tinygrad. A quantized GGUF is gated in
    both. An F32 GGUF is gated in the project's loader only: llama.cpp keeps its KV cache in fp16, so the exact
    gate (1e-5) cannot apply there, and its figures are reported beside the gate."""
    c2, w2, _ = load_gguf(artifact, max_seq_len=cfg.max_seq_len)
    t1 = time.perf_counter()
    out = P.llama_logits(from_weights(c2, w2), tokens)
    rts = {"zeropoint-gguf-loader": {**P.compare(ref, out, tokens), "run_s": round(time.perf_counter() - t1, 3)}}
    del out
    ver = llama_cpp_version()
    step("parity: " + (f"llama.cpp (llama-cpp-python {ver})" if ver and runtime != LLAMA_CPP_EMULATED
                       else "emulated llama.cpp kernels (llama-cpp-python is not installed)"))
    t1 = time.perf_counter()
    name, lc, info = gguf_logits(artifact, tokens, runtime)
    m = {**P.compare(ref, lc, tokens), "run_s": round(time.perf_counter() - t1, 3)}
    gated = EXPORT_FORMATS[fmt].quantized
    rep = P.report(fmt, {**rts, name: m} if gated else rts, inputs)
    if not gated:
        rep["informational_runtimes"] = {name: {**m, "why_not_gated": "llama.cpp's fp16 KV cache rounds K and V; "
                                                "the F32 gate (max abs 1e-5) measures the file, in the project's loader"}}
    rep["gguf_runtime"] = info
    return rep


def _onnx_report(artifact: Path, cfg, fmt: str, tokens: np.ndarray, inputs: dict, oracle: np.ndarray,
                 ref: np.ndarray, second: bool) -> dict:
    """ONNX parity against the float64 oracle; a KV-cache graph is run twice, both gated: one full call with an
    empty cache, and as a generator runs it (half the tokens prefilled, then one token per call with the cache)."""
    feeds = kv_feeds(cfg, tokens) if fmt == "onnx-kv" else {"input_ids": tokens}
    rep = P.onnx_parity(artifact, oracle, feeds, fmt, tokens=tokens, inputs=inputs, second_runtime=second,
                        also_vs={"tinygrad_fp32": ref})
    if fmt == "onnx-kv":
        prefill = max(1, tokens.shape[1] // 2)
        dec, full, s = P.onnx_kv_decode(artifact, cfg, tokens, prefill)
        m = {**P.compare(oracle, dec, tokens), "run_s": round(s, 4), "prefill_tokens": prefill,
             "decode_steps": tokens.shape[1] - prefill,
             "max_abs_vs_full_forward": float(np.abs(dec - full).max()),
             "max_abs_vs_tinygrad_fp32": float(np.abs(dec.astype(np.float64) - ref).max())}
        rep = P.report(fmt, {**{k: {x: y for x, y in v.items() if x not in ("passed", "failures")}
                                for k, v in rep["runtimes"].items()}, "onnxruntime-cpu-kv-decode": m}, inputs)
    rep["reference"] = {"kind": "float64 numpy oracle of the original weights (models.reference)",
                        "original_tinygrad_fp32_vs_reference": P.compare(oracle, ref, tokens)}
    return rep


_ONNX_INT8_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul"}


def artifact_format(p: Path, kind: str) -> str:
    """A bare artifact's export format, hence its default gate, from its contents: a GGUF's tensor types, an ONNX
    graph's quantized ops. (A Q8_0 GGUF held to the F32 gate would fail for being what it was meant to be.)"""
    if kind == "gguf":
        types = {t for _, _, t, _ in read_header(p)[1]}
        if 8 in types:                                     # Q8_0 (our writer keeps norms F32, odd widths F16)
            return "gguf-q8_0"
        if types <= {0, 1, 30}:                            # F32, F16, BF16
            return "gguf-f16" if types & {1, 30} else "gguf"
        raise ZeropointError(f"{p} holds GGUF tensor types {sorted(types)}; only F32, F16 and Q8_0 have a default "
                             "gate: pass --format (gguf-q8_0 applies the quantized gate)")
    if kind == "onnx":
        graph = onnx.load(str(p), load_external_data=False).graph
        if any(i.name.startswith("past_key_values.") for i in graph.input):
            return "onnx-kv"
        ops = {n.op_type for n in graph.node}
        return "onnx-int8-wo" if "MatMulNBits" in ops else "onnx-int8" if ops & _ONNX_INT8_OPS else "onnx"
    return kind


def parity_llama(model, tok, exported: str | Path, fmt: str | None = None, n_seq: int | None = None, seq_len: int = 64,
                 tinygrad_runner: bool = False, gguf_runtime: str = "auto") -> dict:
    """`zpctl parity`: an existing artifact (.onnx, .gguf, HF dir or an export dir) against an original model."""
    p = Path(exported)
    if p.is_dir() and (p / M.MANIFEST).is_file():
        man = M.verify_manifest(p)
        fmt = fmt or man["format"]
        p = p / man["artifact"] if man.get("artifact") else p
    # the artifact's kind, from its file type, decides the runtime; its contents (without --format) the gate
    kind = {".onnx": "onnx", ".safetensors": "int8", ".gguf": "gguf"}.get(p.suffix)
    if kind is None and p.is_dir() and (p / "config.json").is_file():
        kind = "hf"
    if kind is None:
        raise ZeropointError(f"{exported} is not an .onnx file, a .gguf file, an HF directory or an export directory")
    fmt = fmt or artifact_format(p, kind)
    tokens, inputs = P.sotu_tokens(tok, n_seq or P.default_parity_seqs(fmt), seq_len)
    ref = P.llama_logits(model, tokens)
    if kind == "onnx":      # another runtime: gated against the float64 oracle, as in export_llama
        oracle = forward_batch(_weights_np(model), model.cfg, tokens)
        return _onnx_report(p, model.cfg, fmt, tokens, inputs, oracle, ref, tinygrad_runner and fmt == "onnx")
    if kind == "int8":
        return P.report(fmt, {"tinygrad-int8": P.compare(ref, P.llama_logits(load_llama_int8(p), tokens), tokens)}, inputs)
    if kind == "gguf":
        return _gguf_report(p, fmt, tokens, inputs, ref, model.cfg, lambda m: None, gguf_runtime)
    c2, w2, _ = load_hf_dir(p, max_seq_len=model.cfg.max_seq_len)
    return P.report(fmt, {"zeropoint-hf-loader": P.compare(ref, P.llama_logits(from_weights(c2, w2), tokens), tokens)}, inputs)
