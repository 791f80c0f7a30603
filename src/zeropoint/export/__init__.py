"""Export and runtime parity: ONNX (fp32, onnxruntime int8), GGUF (F32/F16/Q8_0), HF safetensors, tinygrad int8.

- `onnx.py`: opset-17 graphs written with onnx.helper from the model definitions (Llama, ViT, CLIP)
- `quant.py`: onnxruntime dynamic int8 (after quant_pre_process) and int8 weight-only Int8Linear for tinygrad
- `gguf_writer.py`: GGUF v3 writer with llama.cpp names, q/k permutation, tokenizer and chat template
- `parity.py`: the same real inputs through original and artifact; figures and gates
- `manifest.py`: exports/<id>/manifest.json (source hash, format, quantization, parity, file hashes, status)
- `pipeline.py`: export + parity + manifest in one call (`zpctl export`, `zpctl parity`)
"""
