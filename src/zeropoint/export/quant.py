"""int8 four ways.

1. `quantize_onnx_int8`: onnxruntime's dynamic quantization of an exported fp32 graph, after its documented
   pre-processing step (`quant_pre_process`: symbolic shape inference + graph optimisation), weights int8
   per output channel, activations quantized at run time. The served artifact runs on onnxruntime.
   (format `onnx-int8`)
2. `quantize_onnx_int8_weights`: weight-only int8 in onnxruntime's MatMulNBits (bits=8, blocks of 32 with a
   scale each, as GGUF Q8_0), after activation-aware scaling (AWQ) and with GPTQ rounding, both calibrated on
   text that parity never sees; activations stay fp32. (format `onnx-int8-wo`)
3. `quantize_llama_int8`: int8 weight-only quantization for tinygrad inference. Each projection weight becomes
   int8 rows with one fp32 scale per output channel (symmetric, amax / 127); `Int8Linear` dequantizes inside
   the matmul's kernel, so weights sit in memory at a quarter of fp32. Embeddings and norms stay fp32 (the
   embedding doubles as the tied head of SmolLM2, and a per-row int8 table loses the head's small logit gaps). (format `int8`)
4. `quantize_q8_0`: GGUF Q8_0 blocks (fp16 scale + 32 int8 codes) with the scale searched per block and, given
   calibration X^T X, the codes rounded by GPTQ; `gguf_writer` packs them. (format `gguf-q8_0`)
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from safetensors import safe_open
from safetensors.numpy import save
from tinygrad import Tensor, dtypes

from ..errors import ZeropointError
from ..models.llama import Linear, Llama, LlamaConfig, expected_keys, load_weights, state_dict
from ..workspace import atomic_write_bytes


class QuantError(ZeropointError):
    pass


# down_proj's inputs carry activation outliers one uint8 scale per tensor cannot hold: it stays fp32 (figures in
# docs/export.md, "Measurements behind the defaults")
DEFAULT_EXCLUDE = ("down_proj",)


def quantize_onnx_int8(src: str | Path, dst: str | Path, per_channel: bool = False,
                       exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> dict:
    """fp32 ONNX -> dynamically quantized int8 ONNX: MatMuls whose weight is an initializer (not attention's
    activation x activation products), except those whose weight name contains an `exclude` entry.
    -> {"files", "quantization"}."""
    src, dst = Path(src), Path(dst)
    big = src.with_name(src.name + ".data").exists()
    with tempfile.TemporaryDirectory(dir=dst.parent) as td:
        pre = Path(td) / "preprocessed.onnx"
        # the pre-processing step onnxruntime documents before quantizing (shape inference + optimisation)
        # symbolic shape inference gives up on our data-dependent shapes (the causal mask built from the sequence
        # length) after minutes of sympy; ONNX's own shape inference + onnxruntime's optimisation still run
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=big,
                          all_tensors_to_one_file=True, external_data_location="preprocessed.onnx.data")
        g = onnx.load(str(pre), load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        weight_mm = [n for n in g.node if n.op_type == "MatMul" and n.input[1] in inits]
        chosen = [n.name for n in weight_mm if not any(e in n.input[1] for e in exclude)]
        quantize_dynamic(str(pre), str(dst), nodes_to_quantize=chosen, per_channel=per_channel,
                         weight_type=QuantType.QInt8, use_external_data_format=big)
    files = [dst] + ([dst.with_name(dst.name + ".data")] if dst.with_name(dst.name + ".data").exists() else [])
    return {"files": [str(f) for f in files],
            "quantization": {"method": "onnxruntime.quantize_dynamic", "preprocess": "quant_pre_process(skip_symbolic_shape=True)",
                             "weight_type": "int8", "per_channel": per_channel, "activations": "uint8 dynamic",
                             "op_types": ["MatMul"], "quantized_matmuls": len(chosen),
                             "fp32_matmuls": len(weight_mm) - len(chosen), "excluded": list(exclude)}}


AWQ_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _q8_blocks(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) fp32 -> uint8 (N, K/block, block) with zero point 128 and fp32 scales (N, K/block), symmetric."""
    K, N = w.shape
    blocks = w.astype(np.float32).T.reshape(N, K // block_size, block_size)
    scale = np.abs(blocks).max(-1) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = (np.clip(np.rint(blocks / scale[..., None]), -127, 127) + 128).astype(np.uint8)
    return q, scale


def _dequant(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((q.astype(np.float32) - 128) * scale[..., None]).reshape(q.shape[0], -1).T


def calibration_stats(src: str | Path, names: list[str], tokens: np.ndarray, keep_rows: int = 1024,
                      batch: int = 8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The fp32 graph run on calibration tokens in onnxruntime, `batch` sequences at a time, returning for each
    named intermediate tensor (the inputs of the MatMuls to quantize) its first `keep_rows` rows as (rows,
    channels) and X^T X over every row (float64; GPTQ's Hessian). Loads its own copy: saving with external data
    rewrites a ModelProto in place, so the caller's graph is never used for this."""
    m = onnx.load(str(src))
    for n in names:
        m.graph.output.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    acts: dict[str, np.ndarray] = {}
    hess: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "calibration.onnx"
        onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="calibration.data")
        del m
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        for i in range(0, len(tokens), batch):
            outs = sess.run(list(names), {feed: tokens[i:i + batch].astype(np.int64)})
            for n, a in zip(names, outs):
                x = a.reshape(-1, a.shape[-1]).astype(np.float32)
                hess[n] = hess.get(n, 0) + x.T.astype(np.float64) @ x
                have = len(acts.get(n, ()))
                if have < keep_rows:
                    acts[n] = x[:keep_rows - have] if n not in acts else np.concatenate([acts[n], x[:keep_rows - have]])
    return acts, hess


GPTQ_DAMP = 0.01


def _gptq(W: np.ndarray, H: np.ndarray, block_size: int, damp: float = GPTQ_DAMP, scales: np.ndarray | None = None,
          order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ (Frantar et al. 2022) into symmetric int8 blocks of `block_size` input channels: channels are rounded
    one at a time and each rounding error is pushed onto the channels not yet rounded, weighted by the inverse of
    H = X^T X of the calibration inputs, so the output error on those inputs (not the weight error) stays small.
    With `scales` (N, K/block) the grids are fixed beforehand and channels may go in any `order` (e.g. by
    decreasing H diagonal); without, a block's scale is amax / 127 of its weights as updated when its first
    channel is reached (natural order). W (N, K) float64, one row per output channel (modified in place).
    -> codes (N, K) in -127..127 as float64, scales (N, K/block)."""
    if scales is None and order is not None:
        raise ValueError("a channel order needs fixed scales: a block's scale is set when its first channel is reached")
    N, K = W.shape
    H = H.astype(np.float64).copy()
    dead = np.diag(H) == 0                                 # channels never active: nothing to fit, weight 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * np.mean(np.diag(H)) * np.eye(K)
    perm = np.arange(K) if order is None else np.asarray(order)
    W, H = W[:, perm], H[np.ix_(perm, perm)]
    U = np.linalg.cholesky(np.linalg.inv(H)).T             # upper Cholesky factor of H^-1
    S = np.zeros((N, K // block_size)) if scales is None else np.asarray(scales, np.float64)
    Q = np.zeros((N, K))
    lazy = 128                                             # columns updated together (the paper's lazy batch)
    for b0 in range(0, K, lazy):
        b1 = min(b0 + lazy, K)
        err = np.zeros((N, b1 - b0))
        for i in range(b0, b1):
            j = perm[i] // block_size
            if scales is None and i % block_size == 0:
                sc = np.abs(W[:, i:i + block_size]).max(1) / 127.0
                S[:, j] = np.where(sc == 0, 1.0, sc).astype(np.float32)
            sc = S[:, j]
            Q[:, i] = np.clip(np.rint(W[:, i] / sc), -127, 127)
            e = (W[:, i] - Q[:, i] * sc) / U[i, i]
            err[:, i - b0] = e
            W[:, i + 1:b1] -= np.outer(e, U[i, i + 1:b1])
        W[:, b1:] -= err @ U[b0:b1, b1:]
    out = np.empty_like(Q)
    out[:, perm] = Q
    return out, S


def _gptq_q8(w: np.ndarray, H: np.ndarray, block_size: int, damp: float = GPTQ_DAMP) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ into the same blocks as `_q8_blocks`, each block's scale amax / 127 of its weights as updated when
    its first channel is reached. (K, N) fp32, (K, K) -> uint8 (N, K/block, block) with zero point 128, fp32
    scales (N, K/block)."""
    N, K = w.shape[1], w.shape[0]
    Q, S = _gptq(w.T.astype(np.float64), H, block_size, damp)
    return (Q + 128).astype(np.uint8).reshape(N, K // block_size, block_size), S.astype(np.float32)


# GGUF Q8_0: blocks of 32 inputs, one fp16 scale d each, int8 codes. llama.cpp's reference quantizer takes
# d = amax / 127; any d is valid, so the scale is searched. A weight that was itself dequantized from a coarser
# grid (the SmolLM2 this project ships comes from a Q4_1 file: 16 levels m + d4*k per block) sits exactly or
# nearly on some Q8_0 grid with d = amax / c for c < 127, which amax / 127 misses.
# c: d = amax / c. 127 is the reference; the range reaches d = s/4 of a 16-level block (amax ~ 15 s, c ~ 60).
# Not tuned beyond that: search time grows with the number of candidates.
Q8_0_CODES = tuple(range(127, 60, -1))


def q8_0_scales(w: np.ndarray, importance: np.ndarray | None = None, block_size: int = 32,
                codes: tuple[int, ...] = Q8_0_CODES) -> np.ndarray:
    """Per block of `block_size` input channels of w (N, K), the fp16 scale d among amax / c (c in `codes`) that
    minimises the block's rounding error sum_k importance_k (w_k - d round(w_k / d))^2 (importance: one weight
    per input channel, e.g. the diagonal of X^T X, llama.cpp's "imatrix"; None = plain squared error). Ties keep
    the larger c, so amax / 127 (the reference quantizer) wins unless another grid is strictly better.
    -> float16 (N, K/block)."""
    N, K = w.shape
    out = np.empty((N, K // block_size), np.float16)
    imp = None if importance is None else np.asarray(importance, np.float32).reshape(1, K // block_size, block_size)
    rows = max(1, (1 << 20) // K)                          # ~1M weights at a time: bounded temporaries
    for r0 in range(0, N, rows):
        b = np.asarray(w[r0:r0 + rows], np.float32).reshape(-1, K // block_size, block_size)
        amax = np.abs(b).max(-1)
        best_d = best_e = None
        for c in codes:
            d = (amax / c).astype(np.float16)
            df = np.where(d == 0, 1, d).astype(np.float32)[..., None]
            r = np.square(b - np.clip(np.rint(b / df), -127, 127) * df)
            e = (r if imp is None else r * imp).sum(-1)
            if best_d is None:
                best_d, best_e = d, e
            else:
                better = e < best_e
                best_d, best_e = np.where(better, d, best_d), np.where(better, e, best_e)
        out[r0:r0 + rows] = best_d
    return out


def quantize_q8_0(w: np.ndarray, hessian: np.ndarray | None = None, block_size: int = 32, damp: float = GPTQ_DAMP,
                  act_order: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """w (N, K) -> (d float16 (N, K/block), q int8 (N, K)): GGUF Q8_0 blocks along the input dimension.
    Scales by `q8_0_scales`; with `hessian` (X^T X of calibration inputs, K x K) the search is weighted by its
    diagonal and the codes come from GPTQ on those fixed grids, channels in decreasing order of H's diagonal;
    without, codes are round to nearest."""
    N, K = w.shape
    if K % block_size:
        raise QuantError(f"Q8_0 needs the input dimension ({K}) to be a multiple of {block_size}")
    d = q8_0_scales(w, None if hessian is None else np.diag(hessian), block_size)
    dd = np.where(d == 0, 1, d).astype(np.float64)
    if hessian is None:
        q = np.clip(np.rint(np.asarray(w, np.float64).reshape(N, -1, block_size) / dd[..., None]), -127, 127).reshape(N, K)
    else:
        order = np.argsort(-np.diag(hessian), kind="stable") if act_order else None
        q, _ = _gptq(np.array(w, np.float64), hessian, block_size, damp, scales=dd, order=order)
    return d, q.astype(np.int8)


def quantize_onnx_int8_weights(src: str | Path, dst: str | Path, block_size: int = 32,
                               exclude: tuple[str, ...] = (), calibration: np.ndarray | None = None,
                               calibration_source: dict | None = None, alphas: tuple[float, ...] = AWQ_ALPHAS,
                               gptq: bool = True) -> dict:
    """fp32 ONNX -> weight-only int8 ONNX: every MatMul whose weight is a 2-D initializer becomes onnxruntime's
    `com.microsoft.MatMulNBits` with bits=8: weights stored as uint8 (zero point 128) in blocks of `block_size`
    along the input dimension with one fp32 scale per block, the scheme of GGUF's Q8_0. Activations stay fp32.
    The embedding (a Gather, also the tied head's weight) stays fp32.

    With `calibration` tokens, activation-aware scaling (AWQ, Lin et al. 2023) comes first: input channel k of a
    weight is multiplied by s_k = mean|x_k|^alpha before rounding and the activation by 1/s_k (a Mul node), so the
    channels that carry large activations lose less precision; alpha is picked per MatMul from `alphas` by the
    output error on the calibration activations (alpha 0 = plain rounding, so it never does worse there).

    With `gptq` (and calibration tokens), the scaled weights are then rounded by GPTQ (`_gptq_q8`) against X^T X of
    all calibration inputs instead of to nearest. What each step buys on SmolLM2-135M: docs/export.md.
    -> {"files", "quantization"}."""
    src, dst = Path(src), Path(dst)
    m = onnx.load(str(src))                                   # loads external data too
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    chosen = []
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is not None and len(w.dims) == 2 and w.dims[0] % block_size == 0 and not any(e in n.input[1] for e in exclude):
            chosen.append(n)
    if not chosen:
        raise QuantError(f"{src} has no MatMul with a 2-D weight initializer divisible by block {block_size}")
    acts, hess = calibration_stats(src, sorted({n.input[0] for n in chosen}), calibration) \
        if calibration is not None else ({}, {})
    picked: dict[float, int] = {}
    nodes, n_q, q_bytes, f_bytes = [], 0, 0, 0
    chosen_ids = {id(n) for n in chosen}
    for n in g.node:
        if id(n) not in chosen_ids:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        K, N = w.shape
        s = None
        if acts:
            x = acts[n.input[0]]
            y, mag, best = x @ w, np.abs(x).mean(0) + 1e-8, None
            for a in alphas:
                sv = (mag ** a).astype(np.float32)
                sv /= np.sqrt(sv.max() * sv.min())
                err = float(np.square(y - (x / sv) @ _dequant(*_q8_blocks(w * sv[:, None], block_size))).mean())
                if best is None or err < best[0]:
                    best = (err, a, sv)
            _, a, s = best
            picked[a] = picked.get(a, 0) + 1
            if a == 0.0:
                s = None
        ws = w if s is None else w * s[:, None]
        if gptq and hess:
            H = hess[n.input[0]]
            q, scale = _gptq_q8(ws, H if s is None else H / np.outer(s, s), block_size)   # x/s: H scales by 1/s s^T
        else:
            q, scale = _q8_blocks(ws, block_size)
        qn, sn = n.input[1] + "_q8", n.input[1] + "_scales"
        g.initializer.remove(inits[n.input[1]])
        g.initializer.extend([numpy_helper.from_array(q, qn), numpy_helper.from_array(scale.reshape(-1), sn)])
        x_in = n.input[0]
        if s is not None:
            inv, x_in = n.input[1] + "_awq_inv", n.output[0] + "_awq_x"
            g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            nodes.append(helper.make_node("Mul", [n.input[0], inv], [x_in], name=n.name + "_awq"))
        nodes.append(helper.make_node("MatMulNBits", [x_in, qn, sn], list(n.output), name=n.name + "_q8",
                                      domain="com.microsoft", K=K, N=N, bits=8, block_size=block_size))
        n_q, q_bytes, f_bytes = n_q + 1, q_bytes + q.nbytes + scale.nbytes, f_bytes + w.nbytes
    n_fp32 = sum(1 for n in g.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits
                 and id(n) not in chosen_ids)
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    big = m.ByteSize() > 1_800_000_000                     # protobuf's 2 GB limit
    onnx.save(m, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
              location=dst.name + ".data")
    files = [dst] + ([dst.with_name(dst.name + ".data")] if dst.with_name(dst.name + ".data").exists() else [])
    awq = None if calibration is None else {
        "method": "activation-aware per-input-channel scaling (AWQ), alpha per MatMul by calibration output error",
        "calibration": calibration_source or {"tokens": int(calibration.size)}, "alphas": list(alphas),
        "alpha_counts": {f"{a:g}": c for a, c in sorted(picked.items())},
        "alpha_selection_rows": int(min(len(v) for v in acts.values()))}
    rounding = {"method": "GPTQ (Frantar et al. 2022): error-compensating rounding against X^T X of the calibration "
                          "inputs", "damp": GPTQ_DAMP, "calibration_tokens": int(calibration.size)} \
        if gptq and calibration is not None else {"method": "round to nearest"}
    return {"files": [str(f) for f in files],
            "quantization": {"method": "weight-only int8 (onnxruntime com.microsoft.MatMulNBits, bits=8)",
                             "block_size": block_size, "weight_type": "uint8, zero point 128, fp32 scale per block",
                             "activations": "fp32", "quantized_matmuls": n_q, "fp32_matmuls": n_fp32,
                             "quantized_weight_bytes": q_bytes, "fp32_weight_bytes_replaced": f_bytes,
                             "excluded": list(exclude), "awq": awq, "rounding": rounding}}


# ---- weight-only int8 for tinygrad --------------------------------------------------------------------------
def quantize_rows_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) fp32 -> int8 (out, in) and fp32 scale (out,), symmetric per output row."""
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=1) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


class Int8Linear:
    """Drop-in for `models.llama.Linear`: y = x @ (q * scale).T with q int8 and one fp32 scale per row."""
    def __init__(self, q: np.ndarray, scale: np.ndarray):
        self.q = Tensor(q, dtype=dtypes.int8).realize()
        self.scale = Tensor(scale).realize()

    @property
    def weight(self) -> Tensor:   # dequantized view for code that reads `.weight`
        return self.q.cast(dtypes.float32) * self.scale.reshape(-1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return x @ self.weight.cast(x.dtype).T


PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_llama_int8(model) -> dict:
    """Replace every attention/MLP projection of a Llama (LoRA merged) with an Int8Linear, in place.
    -> {"quantized": n, "weight_bytes_fp32": ..., "weight_bytes_int8": ...}."""
    n, fp32_b, int8_b = 0, 0, 0
    for layer in model.model.layers:
        for owner, names in ((layer.self_attn, PROJ[:4]), (layer.mlp, PROJ[4:])):
            for name in names:
                lin = getattr(owner, name)
                if not isinstance(lin, Linear):
                    raise QuantError(f"{name} is a {type(lin).__name__}, not a plain projection; merge LoRA "
                                     "adapters (models.lora.merge_lora) before quantizing")
                q, s = quantize_rows_int8(lin.weight.numpy())
                setattr(owner, name, Int8Linear(q, s))
                n, fp32_b, int8_b = n + 1, fp32_b + q.size * 4, int8_b + q.size + s.size * 4
    return {"quantized": n, "weight_bytes_fp32": fp32_b, "weight_bytes_int8": int8_b}


INT8_FILE_FORMAT = "zeropoint-llama-int8/1"


def save_llama_int8(model, cfg, path: str | Path) -> dict:
    """A Llama (LoRA merged) as one safetensors file: every projection as `<name>.qweight` int8 rows plus
    `<name>.scale` fp32, everything else fp32, the LlamaConfig in the header. Written atomically."""
    tensors, n, fp32_b, int8_b = {}, 0, 0, 0
    for k, v in state_dict(model).items():
        a = v.numpy()
        if k.endswith(tuple(f".{p}.weight" for p in PROJ)):
            if ".lora_" in k:
                raise QuantError("merge LoRA adapters (models.lora.merge_lora) before quantizing")
            q, s = quantize_rows_int8(a)
            base = k[: -len("weight")]
            tensors[base + "qweight"], tensors[base + "scale"] = q, s
            n, fp32_b, int8_b = n + 1, fp32_b + a.size * 4, int8_b + q.size + s.size * 4
        else:
            tensors[k] = np.ascontiguousarray(a, dtype=np.float32)
    if not n:
        raise QuantError("no attention/MLP projection weights found to quantize")
    atomic_write_bytes(Path(path), save(tensors, metadata={"format": INT8_FILE_FORMAT, "config": json.dumps(cfg.to_dict())}))
    return {"method": "weight-only int8 per output row (symmetric, amax/127), tinygrad Int8Linear", "quantized": n,
            "weight_bytes_fp32": fp32_b, "weight_bytes_int8": int8_b}


def load_llama_int8(path: str | Path):
    """The model saved by `save_llama_int8`, its projections as Int8Linear (int8 in memory)."""
    path = Path(path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != INT8_FILE_FORMAT:
            raise QuantError(f"{path} is not a Zeropoint int8 Llama file (format {meta.get('format')!r}, expected "
                             f"{INT8_FILE_FORMAT!r}); write one with `zpctl export --format int8`")
        cfg = LlamaConfig.from_dict(json.loads(meta["config"]))
        arrs = {k: f.get_tensor(k) for k in f.keys()}
    packed = {k[: -len("qweight")] + "weight": (a, arrs[k[: -len("qweight")] + "scale"])
              for k, a in arrs.items() if k.endswith(".qweight")}
    # projections go in as Int8Linear before anything is loaded, so no fp32 copy of them is ever allocated
    model = Llama(cfg, init=False)
    for i, layer in enumerate(model.model.layers):
        for owner, names, part in ((layer.self_attn, PROJ[:4], "self_attn"), (layer.mlp, PROJ[4:], "mlp")):
            for name in names:
                key = f"model.layers.{i}.{part}.{name}.weight"
                if key not in packed or not isinstance(getattr(owner, name), Linear):
                    raise QuantError(f"{path}: no int8 weights for {key}; the file does not match its own config")
                setattr(owner, name, Int8Linear(*packed.pop(key)))
    rest = {k: Tensor(a) for k, a in arrs.items() if not k.endswith((".qweight", ".scale"))}
    missing = [k for k in expected_keys(cfg) if k not in rest and not k.endswith(tuple(f".{p}.weight" for p in PROJ))]
    if missing or packed:
        raise QuantError(f"{path}: missing {missing[:5]}, unused int8 tensors {sorted(packed)[:5]}")
    load_weights(model, rest, strict=False)
    return model
