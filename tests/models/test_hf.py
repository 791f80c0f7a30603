import json

import numpy as np
import pytest
from tinygrad import Tensor

from zeropoint.data.assets import minilm_dir
from zeropoint.models.hf import HFFormatError, load_hf_dir, read_safetensors, save_hf_dir, write_safetensors
from zeropoint.models.llama import CONFIGS, Llama, from_weights, state_dict
from zeropoint.models.registry import load_model
from zeropoint.models.tokenizer import Tokenizer

from .test_tokenizer import _meta
from .tiny import random_llama


@pytest.mark.parametrize("name", ["tiny-untied", "tiny-llama3"])
def test_hf_round_trip_identical_logits(tmp_path, name):
    cfg = CONFIGS[name]
    m = random_llama(cfg, 7)
    toks = Tensor(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 7)).astype(np.int32))
    before = m(toks).numpy()
    tok = Tokenizer.from_gguf_metadata(_meta())
    out = save_hf_dir(m, cfg, tok, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == cfg.rope_scaling
    m2, cfg2, tok2 = load_model(out)
    assert cfg2 == cfg
    after = m2(toks).numpy()
    assert np.abs(after - before).max() <= 1e-5
    assert tok2.encode("Hello world") == tok.encode("Hello world") and tok2.eos_id == tok.eos_id


def test_sharded_save_and_load(tmp_path):
    cfg = CONFIGS["tiny-untied"]
    sd = {k: v.numpy() for k, v in state_dict(random_llama(cfg, 8)).items()}
    out = save_hf_dir(sd, cfg, None, tmp_path / "sharded", max_shard_bytes=64 * 1024)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).is_file() for s in shards)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in sd.values())
    cfg2, w, tok = load_hf_dir(out)
    assert tok is None and cfg2 == cfg and set(w) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(w[k].numpy(), sd[k])
    # a missing shard is named
    (out / shards[1]).unlink()
    with pytest.raises(HFFormatError, match="missing"):
        load_hf_dir(out)


def test_bf16_storage_rounds(tmp_path):
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    cfg = CONFIGS["tiny-untied"]
    sd = {k: v.numpy() for k, v in state_dict(Llama(cfg, init=False)).items()}
    sd = {k: np.full(v.shape, 0.5, np.float32) for k, v in sd.items()}
    sd["model.norm.weight"] = np.resize(x, sd["model.norm.weight"].shape)
    out = save_hf_dir(sd, cfg, None, tmp_path / "bf16", dtype="bfloat16")
    _, w, _ = load_hf_dir(out)
    got, want = w["model.norm.weight"].numpy(), sd["model.norm.weight"]
    assert np.abs(got - want).max() <= np.abs(want).max() * 2 ** -8 and not np.array_equal(got, want)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_refuses_existing_dir_and_corrupt_files(tmp_path):
    cfg = CONFIGS["tiny-untied"]
    sd = {k: np.zeros(v.shape, np.float32) for k, v in state_dict(Llama(cfg, init=False)).items()}
    out = save_hf_dir(sd, cfg, None, tmp_path / "m")
    with pytest.raises(HFFormatError, match="already exists"):
        save_hf_dir(sd, cfg, None, out)
    ones = {k: np.ones_like(v) for k, v in sd.items()}
    save_hf_dir(ones, cfg, None, out, overwrite=True)          # swapped in whole
    assert read_safetensors(out / "model.safetensors")["model.norm.weight"].min() == 1.0
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]   # no staging or backup left
    st = out / "model.safetensors"
    data = bytearray(st.read_bytes())
    st.write_bytes(bytes(data[: len(data) // 2]))           # truncated
    with pytest.raises(HFFormatError, match="corrupt or truncated"):
        read_safetensors(st)
    st.write_bytes(b"\xff" * 8 + bytes(data[8:]))            # absurd header length
    with pytest.raises(HFFormatError, match="impossible"):
        read_safetensors(st)
    st.unlink()
    (out / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(HFFormatError, match="pickle-based weights are never loaded"):
        load_hf_dir(out)


def test_write_read_safetensors_dtypes(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_safetensors(tmp_path / "x.safetensors", {"a": (a, "F32"), "b": (a.astype(np.float16), "F16")})
    r = read_safetensors(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(r["a"], a)
    np.testing.assert_array_equal(r["b"], a)
    # the safetensors reference implementation reads our file the same way
    from safetensors.numpy import load_file
    np.testing.assert_array_equal(load_file(str(tmp_path / "x.safetensors"))["a"], a)


def test_non_llama_hf_dir_is_refused():
    with pytest.raises(HFFormatError, match="model_type is 'bert'"):
        load_hf_dir(minilm_dir())


def test_load_weights_rejects_mismatch():
    cfg = CONFIGS["tiny-untied"]
    sd = {k: Tensor.zeros(*v.shape).contiguous() for k, v in state_dict(Llama(cfg, init=False)).items()}
    sd.pop("model.norm.weight")
    with pytest.raises(ValueError, match="missing.*model.norm.weight"):
        from_weights(cfg, sd)
