"""`zpctl export` / `zpctl parity` end to end on a tiny model saved as an HF directory (GPT-2 tokenizer, real
held-out SOTU text for parity): manifest, hashes, exit codes, a failed gate, and a tampered artifact."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from tests.snapshots import assert_snapshot, evidence_keys
from zeropoint.cli.main import app

pytest.importorskip("onnxruntime")
runner = CliRunner()


def zp(*args):
    r = runner.invoke(app, list(args))
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    from zeropoint.data.assets import gpt2_encoder_dir
    from zeropoint.models.hf import save_hf_dir
    from zeropoint.models.llama import Llama, get_config
    from zeropoint.models.tokenizer import Tokenizer
    d = gpt2_encoder_dir()
    tok = Tokenizer.from_gpt2_files(d / "encoder.json", d / "vocab.bpe")
    cfg = get_config("tiny", vocab_size=50257)
    Tensor.manual_seed(0)
    return save_hf_dir(Llama(cfg), cfg, tok, tmp_path_factory.mktemp("src") / "tiny-hf")


def test_export_gguf_writes_manifest_and_parity_reruns(tiny_hf_dir, zp_home):
    from zeropoint.hashing import sha256_file
    code, out = zp("export", str(tiny_hf_dir), "--format", "gguf", "--parity-seqs", "2", "--parity-len", "16", "--json")
    assert code == 0, out
    rec = json.loads(out)
    d = zp_home / "exports" / rec["id"]
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "succeeded" and man["format"] == "gguf" and man["parity"]["passed"]
    assert man["source"]["kind"] == "tree" and len(man["source"]["sha256"]) == 64
    assert man["parity"]["inputs"]["dataset"] == "sotu"
    assert man["parity"]["runtimes"]["zeropoint-gguf-loader"]["max_abs"] <= 1e-5
    [f] = man["files"]
    assert f["sha256"] == sha256_file(d / f["path"])
    run = json.loads(next((zp_home / "runs").glob("export-*/run.json")).read_text())
    assert run["status"] == "succeeded" and run["export_id"] == rec["id"]
    assert_snapshot("evidence_keys_export_gguf.txt", evidence_keys(zp_home))
    # `zpctl parity` on the export directory re-verifies hashes and reruns parity
    code, out = zp("parity", str(tiny_hf_dir), str(d), "--parity-seqs", "2", "--parity-len", "16", "--json")
    assert code == 0 and json.loads(out)["passed"], out
    # a tampered artifact is refused before it is trusted
    with open(d / f["path"], "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x01\x02\x03\x04")
    code, out = zp("parity", str(tiny_hf_dir), str(d))
    assert code == 2 and "does not match its manifest hash" in out


def test_wrong_export_fails_parity_with_exit_1(tiny_hf_dir, tmp_path):
    from tests.export.onnx_faults import corrupt_transpose
    from zeropoint.export.onnx import write_llama_onnx
    from zeropoint.models.hf import load_hf_dir
    cfg, w, _ = load_hf_dir(tiny_hf_dir)
    write_llama_onnx(cfg, {k: v.numpy() for k, v in w.items()}, tmp_path / "ok.onnx")
    corrupt_transpose(tmp_path / "ok.onnx", tmp_path / "bad.onnx", "layers.0.self_attn.q_proj")
    code, out = zp("parity", str(tiny_hf_dir), str(tmp_path / "bad.onnx"), "--parity-seqs", "2", "--parity-len", "16")
    assert code == 1 and "gate failed" in out and "max abs error" in out
    code, out = zp("parity", str(tiny_hf_dir), str(tmp_path / "ok.onnx"), "--parity-seqs", "2", "--parity-len", "16",
                   "--json")
    assert code == 0 and json.loads(out)["runtimes"]["onnxruntime-cpu"]["top1_agreement"] == 1.0


def test_onnx_export_is_gated_against_the_float64_oracle(tiny_hf_dir, zp_home):
    code, out = zp("export", str(tiny_hf_dir), "--format", "onnx", "--parity-seqs", "2", "--parity-len", "16", "--json")
    assert code == 0, out
    rep = json.loads(out)["parity"]
    assert rep["reference"]["kind"].startswith("float64")
    own = rep["reference"]["original_tinygrad_fp32_vs_reference"]["max_abs"]
    rt = rep["runtimes"]["onnxruntime-cpu"]
    assert 0 < own < 1e-4 and 0 < rt["max_abs"] <= 1e-4 and rt["max_abs_vs_tinygrad_fp32"] > 0
    assert_snapshot("evidence_keys_export_onnx.txt", evidence_keys(zp_home))


def test_int8_export_round_trips_through_its_file(tiny_hf_dir, zp_home, tmp_path):
    from zeropoint.export.quant import Int8Linear, load_llama_int8, quantize_llama_int8
    from zeropoint.models.registry import load_model
    code, out = zp("export", str(tiny_hf_dir), "--format", "int8", "--parity-seqs", "2", "--parity-len", "16", "--json")
    assert code == 0, out
    rec = json.loads(out)
    d = zp_home / "exports" / rec["id"]
    m = rec["parity"]["runtimes"]["tinygrad-int8"]
    assert rec["status"] == "succeeded" and m["top1_agreement"] >= 0.99 and 0 < m["max_abs"]
    back = load_llama_int8(d / rec["artifact"])
    assert isinstance(back.model.layers[0].self_attn.q_proj, Int8Linear)
    assert_snapshot("evidence_keys_export_int8.txt", evidence_keys(zp_home))
    model, _, _ = load_model(str(tiny_hf_dir))
    quantize_llama_int8(model)                                          # the same quantization in memory
    x = Tensor(np.arange(12, dtype=np.int32).reshape(1, 12))
    assert np.array_equal(back(x).numpy(), model(x).numpy())
    (tmp_path / "x.safetensors").write_bytes((d / rec["artifact"]).read_bytes()[:8] + b"garbage")
    code, out = zp("parity", str(tiny_hf_dir), str(tmp_path / "x.safetensors"))
    assert code != 0


def test_bad_format_and_missing_source_are_clear_errors():
    code, out = zp("export", "smollm2-135m", "--format", "tflite")
    assert code == 2 and "unknown --format 'tflite'" in out
    code, out = zp("export", "/nonexistent/model.gguf", "--format", "gguf")
    assert code == 2 and "no model" in out
