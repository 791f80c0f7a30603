"""Exports loaded by the tools users run: a tiny LoRA checkpoint's PEFT adapter through
`peft.PeftModel.from_pretrained` (no missing keys, logits within 1e-5 of the project's), training that starts from a
PEFT adapter directory, and the HF export of a byte-tokenizer checkpoint through transformers (weights and
tokenizer)."""
import json

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from tests.export.interop import tiny_lora_checkpoint
from zeropoint.cli.main import app

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
runner = CliRunner()
TEXT = "Madam Speaker, the state of our union: 世界 👩‍👩‍👧 שלום\r\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_lora_checkpoint(tmp_path_factory.mktemp("ck") / "checkpoints")


@pytest.fixture(scope="module")
def adapted(ckpt):
    from zeropoint.models.llm import open_checkpoint
    lm = open_checkpoint(ckpt, merge=False)
    ids = np.array([list(TEXT.encode())[:16]], np.int64)   # the parity shape (1, 16): kernels compile once
    return ids, lm.model(Tensor(ids.astype(np.int32))).numpy()


def test_peft_export_loads_in_peft_with_the_projects_logits(ckpt, adapted, tmp_path, zp_home):
    ids, ref = adapted
    out = tmp_path / "adapter"
    r = runner.invoke(app, ["export", str(ckpt), "--format", "peft", "--out", str(out), "--parity-seqs", "1",
                            "--parity-len", "16", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["status"] == "succeeded" and set(rec["parity"]["runtimes"]) == {"zeropoint-peft-loader", "peft"}
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["task_type"] == "CAUSAL_LM" and conf["peft_type"] == "LORA" and conf["r"] == 4
    assert sorted(conf["target_modules"]) == ["lm_head", "q_proj", "v_proj"]
    assert conf["base_model_name_or_path"] == str((out / "base").resolve())   # a random-init base ships beside it
    # the user's own code: base from the exported directory, adapter from the export
    base = transformers.AutoModelForCausalLM.from_pretrained(conf["base_model_name_or_path"], dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    from safetensors.numpy import load_file
    saved = load_file(str(out / "adapter_model.safetensors"))
    sd = model.state_dict()
    lora_keys = {k for k in sd if ".lora_A." in k or ".lora_B." in k}
    assert len(lora_keys) == 2 * (2 * 2 + 1)                   # q, v on 2 layers + lm_head, A and B each
    for k in lora_keys:                                        # no missing key: every adapter holds the file's values
        np.testing.assert_array_equal(sd[k].numpy(), saved[k.replace(".default.", ".")])
    with torch.no_grad():
        got = model(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(got - ref).max() <= 1e-5
    with torch.no_grad(), model.disable_adapter():               # and the adapter is what makes the difference
        assert np.abs(model(torch.from_numpy(ids)).logits.numpy() - ref).max() > 1e-3
    tok = transformers.AutoTokenizer.from_pretrained(conf["base_model_name_or_path"])
    assert tok(TEXT)["input_ids"] == list(TEXT.encode())


def test_training_starts_from_a_peft_adapter(ckpt, adapted, tmp_path):
    from zeropoint.models.peft import PeftFormatError, write_peft_adapter
    from zeropoint.models.lora import LoRASpec, adapter_tensors
    from zeropoint.models.llm import open_checkpoint
    from zeropoint.recipes import load_config
    from zeropoint.recipes.llm_finetune import build
    ids, ref = adapted
    src = open_checkpoint(ckpt, merge=False).model
    d = write_peft_adapter({k: t.numpy() for k, t in adapter_tensors(src).items()},
                           LoRASpec(rank=4, alpha=8, targets=["q_proj", "v_proj", "lm_head"]), "base", tmp_path / "a")
    cfg, _ = load_config("configs/llm/tiny_lora.yaml", [f"lora.init_from={d}"])
    lm, params = build(cfg)
    assert np.abs(lm.model(Tensor(ids.astype(np.int32))).numpy() - ref).max() <= 1e-6
    assert any(np.abs(p.numpy()).max() > 0 for k, p in params.items() if "lora_B" in k)
    saved = {k: t.numpy() for k, t in adapter_tensors(src).items()}
    cfg, _ = load_config("configs/llm/tiny_lora.yaml", [f"lora.init_from={d}", "lora.base_quant=nf4"])
    lm, params = build(cfg)                                   # a QLoRA (NF4) base starts from the adapter too
    assert sorted(params) == sorted(saved) and all(np.array_equal(params[k].numpy(), saved[k]) for k in saved)
    cfg, _ = load_config("configs/llm/tiny_lora.yaml", [f"lora.init_from={d}", "lora.rank=8"])
    with pytest.raises(PeftFormatError, match="r=4"):
        build(cfg)


def test_hf_export_of_a_byte_tokenizer_checkpoint_loads_in_transformers(ckpt, adapted, tmp_path, zp_home):
    ids, ref = adapted
    r = runner.invoke(app, ["export", str(ckpt), "--format", "hf", "--out", str(tmp_path / "x"), "--parity-seqs", "1",
                            "--parity-len", "16", "--json"])
    assert r.exit_code == 0, r.output
    d = tmp_path / "x" / "hf"
    tok = transformers.AutoTokenizer.from_pretrained(d)
    assert tok(TEXT)["input_ids"] == list(TEXT.encode()) and tok.eos_token_id == 256
    assert tok.decode(list(TEXT.encode())) == TEXT
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        assert np.abs(model(torch.from_numpy(ids)).logits.numpy() - ref).max() <= 1e-5
