"""The export formats: the one table the pipeline, `zpctl export`, the job API and the parity gates read."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    artifact: str
    quantized: bool     # held to the quantized gate (top-1 agreement and perplexity), else to an exact one


EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", "ONNX graph, fp32", False),
    ExportFormat("onnx-kv", "ONNX decoder with a KV cache (optimum's past_key_values layout), fp32", False),
    ExportFormat("onnx-int8", "ONNX graph, onnxruntime dynamic int8", True),
    ExportFormat("onnx-int8-wo", "ONNX graph, weight-only int8 (MatMulNBits)", True),
    ExportFormat("int8", "weight-only int8 safetensors for tinygrad", True),
    ExportFormat("gguf", "GGUF, F32", False),
    ExportFormat("gguf-f16", "GGUF, F16", True),
    ExportFormat("gguf-q8_0", "GGUF, Q8_0", True),
    ExportFormat("hf", "Hugging Face safetensors directory, fp32", False),
    ExportFormat("peft", "PEFT LoRA adapter directory (adapter_model.safetensors + adapter_config.json)", False),
)}
# formats written from a checkpoint's unmerged adapters (every other format takes the merged model)
ADAPTER_FORMATS = ("peft",)
LLM_FORMATS = tuple(EXPORT_FORMATS)
