"""Exports run by the runtimes users run, on tiny models: the KV-cache ONNX graph generates in onnxruntime exactly
what `zpctl generate` generates, and its decode steps match the full forward; the HF directory and the GGUF
export load in transformers (`gguf_file=`) with the project's logits."""
import json

import numpy as np
import onnxruntime as ort
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from tests.export.interop import tiny_lora_checkpoint
from zeropoint.cli.main import app

runner = CliRunner()


def greedy_onnx_kv(path, cfg, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding as optimum's generate loop does it: prefill, then one token per call with the cache."""
    from zeropoint.export.onnx import kv_feeds, kv_input_names
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, kv_feeds(cfg, np.array([prompt])))
    ids = []
    for _ in range(n):
        ids.append(int(out[0][0, -1].argmax()))
        out = sess.run(None, kv_feeds(cfg, np.array([[ids[-1]]]), dict(zip(kv_input_names(cfg), out[1:]))))
    return ids


def test_onnx_kv_export_generates_like_zpctl_generate(tmp_path, zp_home):
    from zeropoint.models.generate import generate
    from zeropoint.models.llm import open_lm
    ck = tiny_lora_checkpoint(tmp_path / "checkpoints")
    r = runner.invoke(app, ["export", str(ck), "--format", "onnx-kv", "--out", str(tmp_path / "kv"),
                            "--parity-seqs", "2", "--parity-len", "16", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    dec = rec["parity"]["runtimes"]["onnxruntime-cpu-kv-decode"]
    assert dec["passed"] and dec["decode_steps"] == 8 and dec["max_abs_vs_full_forward"] <= 1e-4
    assert rec["parity"]["runtimes"]["onnxruntime-cpu"]["passed"]
    assert json.loads((tmp_path / "kv" / "config.json").read_text())["num_key_value_heads"] == 2
    lm = open_lm(ck)
    prompt = list(b"The state of our union is")
    want = generate(lm.model, lm.tokenizer, prompt, max_tokens=16, stop_ids=[]).ids
    assert greedy_onnx_kv(tmp_path / "kv" / "model.onnx", lm.config, prompt, 16) == want
    # padding on the left (a batch of prompts of different lengths): the padded row's logits are the unpadded ones
    from zeropoint.export.onnx import empty_past
    sess = ort.InferenceSession(str(tmp_path / "kv" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 0] + prompt[:6], prompt[:8]])
    mask = np.array([[0, 0] + [1] * 6, [1] * 8])
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    out = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **empty_past(lm.config, 2)})[0]
    solo = lm.model(Tensor(np.array([prompt[:6]], np.int32))).numpy()
    assert np.abs(out[0, 2:] - solo[0]).max() <= 1e-4


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    # the byte tokenizer in its HF form (byte-level BPE, no merges): GPT-2's 50k-token vocabulary made transformers'
    # GGUF reader spend ~20 s parsing the tokenizer metadata, three times
    from zeropoint.models.hf import save_hf_dir
    from zeropoint.models.llama import get_config
    from zeropoint.models.tokenizer import ByteTokenizer
    from tests.models.tiny import random_llama
    cfg = get_config("tiny", vocab_size=257)
    return save_hf_dir(random_llama(cfg, seed=3), cfg, ByteTokenizer(), tmp_path_factory.mktemp("src") / "tiny-hf")


def test_hf_dir_and_gguf_load_in_transformers(tiny_hf_dir, tmp_path, zp_home):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from zeropoint.models.registry import load_model
    model, _, tok = load_model(str(tiny_hf_dir))
    text = "Q: 世界 👩\r\n"                     # 16 bytes: the parity shape (1, 16), so no new kernels compile
    ids = np.array([tok.encode(text)])
    assert ids[0].tolist() == list(text.encode())
    ref = model(Tensor(ids.astype(np.int32))).numpy()
    r = runner.invoke(app, ["export", str(tiny_hf_dir), "--format", "gguf", "--out", str(tmp_path / "g"),
                            "--parity-seqs", "1", "--parity-len", "16", "--json"])
    assert r.exit_code == 0, r.output
    for kw in ({"pretrained_model_name_or_path": str(tiny_hf_dir)},
               {"pretrained_model_name_or_path": str(tmp_path / "g"), "gguf_file": "model.f32.gguf"}):
        hf = transformers.AutoModelForCausalLM.from_pretrained(**kw, dtype=torch.float32).eval()
        with torch.no_grad():
            got = hf(torch.from_numpy(ids)).logits.numpy()
        assert np.abs(got - ref).max() <= 1e-4, kw
        htok = transformers.AutoTokenizer.from_pretrained(**kw)
        assert htok(text, add_special_tokens=False)["input_ids"] == ids[0].tolist(), kw
