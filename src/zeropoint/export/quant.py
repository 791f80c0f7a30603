"""int8 two ways.

1. `quantize_onnx_int8`: onnxruntime's dynamic quantization of an exported fp32 graph, after its documented
   pre-processing step (`quant_pre_process`: symbolic shape inference + graph optimisation), weights int8
   per output channel, activations quantized at run time. The served artifact runs on onnxruntime.
2. `quantize_llama_int8`: int8 weight-only quantization for tinygrad inference. Each projection weight becomes
   int8 rows with one fp32 scale per output channel (symmetric, amax / 127); `Int8Linear` dequantizes inside
   the matmul's kernel, so weights sit in memory at a quarter of fp32. Embeddings and norms stay fp32 (the
   embedding doubles as the tied head of SmolLM2, and a per-row int8 table loses the head's small logit gaps).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tinygrad import Tensor, dtypes

from ..errors import ZeropointError


class QuantError(ZeropointError):
    pass


# Measured on SmolLM2-135M (4 x 32 SOTU tokens): quantizing every projection gives top-1 48% / ppl +94% (the
# down_proj inputs carry activation outliers that one uint8 scale per tensor cannot hold); leaving down_proj in
# fp32 gives 76% / +3.1%. per_channel=True produced garbage logits (cosine -0.03) in onnxruntime 1.32.
DEFAULT_EXCLUDE = ("down_proj",)


def quantize_onnx_int8(src: str | Path, dst: str | Path, per_channel: bool = False,
                       exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> dict:
    """fp32 ONNX -> dynamically quantized int8 ONNX: MatMuls whose weight is an initializer (not attention's
    activation x activation products), except those whose weight name contains an `exclude` entry.
    -> {"files", "quantization"}."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise QuantError("onnxruntime is not installed; pip install onnxruntime==1.32.0") from None
    src, dst = Path(src), Path(dst)
    big = src.with_name(src.name + ".data").exists()
    with tempfile.TemporaryDirectory(dir=dst.parent) as td:
        pre = Path(td) / "preprocessed.onnx"
        # the pre-processing step onnxruntime documents before quantizing (shape inference + optimisation)
        # symbolic shape inference gives up on our data-dependent shapes (the causal mask built from the sequence
        # length) after minutes of sympy; ONNX's own shape inference + onnxruntime's optimisation still run
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=big,
                          all_tensors_to_one_file=True, external_data_location="preprocessed.onnx.data")
        import onnx
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
    from ..models.llama import Linear
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
