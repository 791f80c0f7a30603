import json

import numpy as np
import pytest
from tinygrad import Tensor
from typer.testing import CliRunner

from zeropoint.models.generate import GenerationError, generate, get_decoder, sample
from zeropoint.models.hf import save_hf_dir
from zeropoint.models.llama import CONFIGS
from zeropoint.models.tokenizer import Tokenizer

from .test_tokenizer import _meta
from .tiny import random_llama


@pytest.fixture(scope="module")
def tiny():
    return random_llama(CONFIGS["tiny-untied"], 11)


def test_jitted_decode_equals_full_forward(tiny):
    ids = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]
    full = tiny(Tensor([ids])).numpy()[0]
    dec = get_decoder(tiny, 64)
    np.testing.assert_allclose(dec.prefill(ids[:4]), full[3], atol=1e-5)
    # 6 steps: call 1 runs eagerly, 2 captures, 3+ replay the captured kernels with a new position
    for p in range(4, 10):
        np.testing.assert_allclose(dec.step(ids[p], p), full[p], atol=1e-5, err_msg=f"position {p}")
    # a second prompt through the same (already captured) decoder is still right
    ids2 = [7, 7, 1, 2, 5, 9]
    full2 = tiny(Tensor([ids2])).numpy()[0]
    np.testing.assert_allclose(dec.prefill(ids2[:2]), full2[1], atol=1e-5)
    for p in range(2, 6):
        np.testing.assert_allclose(dec.step(ids2[p], p), full2[p], atol=1e-5)


def test_generate_greedy_matches_argmax_and_sampling_is_seeded(tiny):
    prompt = [5, 17, 300, 42]
    r = generate(tiny, None, prompt, max_tokens=5)
    assert len(r.ids) == 5 and r.stop_reason == "max_tokens" and r.prefill_s > 0
    # greedy: each generated token is the argmax of the full forward over prompt + earlier tokens
    logits = tiny(Tensor([prompt + r.ids[:-1]])).numpy()[0]
    assert r.ids == [int(logits[len(prompt) - 1 + i].argmax()) for i in range(5)]
    a = generate(tiny, None, prompt, max_tokens=5, temperature=1.5, seed=3)
    b = generate(tiny, None, prompt, max_tokens=5, temperature=1.5, seed=3)
    assert a.ids == b.ids
    # stop ids end generation and are reported
    s = generate(tiny, None, prompt, max_tokens=5, stop_ids=[r.ids[1]])
    assert s.ids == r.ids[:2] and s.stop_reason == "stop_token"


def test_sample_top_p():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert sample(logits, 0.0, 1.0, rng) == 0
    draws = {sample(logits, 1.0, 0.7, rng) for _ in range(200)}
    assert draws == {0, 1}     # 0.5 + 0.3 covers 0.7: tokens 2 and 3 are cut
    assert len({sample(logits, 1.0, 1.0, rng) for _ in range(400)}) == 4


def test_generate_rejects_bad_input(tiny):
    with pytest.raises(GenerationError, match="empty"):
        generate(tiny, None, [], max_tokens=3)
    with pytest.raises(GenerationError, match="outside the model's vocabulary"):
        generate(tiny, None, [10 ** 6], max_tokens=3)
    with pytest.raises(GenerationError, match="the model's context is 128"):
        generate(tiny, None, [1] * 128, max_tokens=4)


def test_cli_generate_json_records_a_run(tmp_path, zp_home):
    from zeropoint.cli.main import app
    cfg = CONFIGS["tiny-untied"]
    meta = _meta()
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + [f"<x{i}>" for i in range(512 - len(meta["tokenizer.ggml.tokens"]))]
    out = save_hf_dir(random_llama(cfg, 12), cfg, Tokenizer.from_gguf_metadata(meta), tmp_path / "m")
    res = CliRunner().invoke(app, ["generate", str(out), "--prompt", "Hello world", "--max-tokens", "3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["generated_tokens"] == 3 and doc["prompt_tokens"] == 2 and doc["simulated"] is False
    run = json.loads((zp_home / "runs" / doc["run_id"] / "run.json").read_text())
    assert run["status"] == "succeeded" and run["kind"] == "generate" and run["result"]["generated_tokens"] == 3
    from zeropoint.hashing import sha256_tree
    assert run["model_source"]["format"] == "hf" and run["model_source"]["sha256"] == sha256_tree(out)[0]
    bad = CliRunner().invoke(app, ["generate", str(tmp_path / "nothing"), "--prompt", "x"])
    assert bad.exit_code == 2 and "no model" in bad.output


def test_decoder_state_stays_out_of_the_state_dict(tiny):
    from tinygrad import nn
    get_decoder(tiny, 64)
    assert tiny.runtime.decoders
    assert all(k.startswith("model.") or k == "lm_head.weight" for k in nn.state.get_state_dict(tiny))


def test_prompt_embeds_and_batched_greedy_match_the_token_path(tiny):
    """A prompt given as input embeddings (how a VLM splices image features in) decodes like the same prompt given
    as ids, and `greedy_batch` (one row per prompt, one jitted step for all rows) gives each row's greedy answer."""
    from zeropoint.models.generate import greedy_batch
    prompts = [[5, 17, 300, 42], [9, 8, 7, 6], [1, 2, 3, 4]]
    want = [generate(tiny, None, p, max_tokens=4, stop_ids=[]).ids for p in prompts]
    emb = tiny.embed(Tensor(np.array(prompts, np.int32))).numpy()
    assert generate(tiny, None, prompts[0], max_tokens=4, stop_ids=[], prompt_embeds=emb[0]).ids == want[0]
    assert greedy_batch(tiny, emb, 4, stop_ids=[]) == want
    assert greedy_batch(tiny, emb, 4, stop_ids=[want[1][2]])[1] == want[1][:2]   # a row stops at its stop id
    with pytest.raises(GenerationError, match="one embedding per prompt position"):
        generate(tiny, None, prompts[0], max_tokens=2, prompt_embeds=emb[0, :3])
