"""FLOPs per step and MFU against a calculation done by hand for a small config."""
import pytest

from zeropoint.models.llama import LlamaConfig, param_count
from zeropoint.models.lora import LoRASpec, count_lora_params
from zeropoint.perf.flops import matmul_params, mfu, step_flops
from zeropoint.perf.meter import summarize_steps

CFG = LlamaConfig(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=16, vocab_size=10, max_seq_len=16)


def test_matmul_params_by_hand():
    # per layer: q,o 8x8 each = 128; k,v 8x4 each = 64; gate,up,down 8x16 each = 384 -> 576; x2 layers = 1152
    # LM head 8x10 = 80 -> 1232
    assert matmul_params(CFG) == 1232
    # and it is the model's parameter count minus norms and the (untied) input embedding
    assert matmul_params(CFG) == param_count(CFG) - CFG.n_layers * 2 * CFG.dim - CFG.dim - CFG.vocab_size * CFG.dim


def test_full_step_flops_and_mfu_by_hand():
    f = step_flops(CFG, seq_len=4, tokens_per_step=2 * 4, method="full")
    assert f.per_token_dense == 6 * 1232 == 7392
    assert f.per_token_attention == 12 * 2 * 4 * 2 * 4 == 768     # 12 * L * T * H * hd
    assert f.per_token == 8160
    assert f.per_step == 8160 * 8 == 65280
    assert mfu(f.per_step, 0.5, 1e6) == pytest.approx(65280 / 0.5 / 1e6)   # 0.13056
    assert mfu(f.per_step, 0.5, None) is None


def test_lora_step_flops_by_hand():
    n_lora = count_lora_params(CFG, LoRASpec(rank=2, targets=["q_proj", "v_proj"]))
    assert n_lora == 2 * (2 * (8 + 8) + 2 * (8 + 4)) == 112
    f = step_flops(CFG, seq_len=4, tokens_per_step=8, method="lora", n_lora=n_lora)
    assert f.per_token_dense == 4 * 1232 + 6 * 112 == 5600
    assert f.per_step == (5600 + 768) * 8
    with pytest.raises(ValueError):
        step_flops(CFG, seq_len=4, tokens_per_step=8, method="qlora")


def test_summary_splits_warmup_from_steady_state():
    steps = [{"step": i + 1, "seconds": s, "tokens": 8} for i, s in enumerate([10.0, 4.0, 0.5, 0.4, 0.6])]
    peak = {"flops": 1e6, "source": "test"}
    s = summarize_steps(steps, flops_per_step=65280, device="CPU", warmup_steps=2, peak=peak, energy={"energy_j": None})
    assert s["compile_s"] == 14.0 and s["first_step_s"] == 10.0
    assert s["steady_step_s"]["median"] == 0.5 and s["steady_step_s"]["n"] == 3
    assert s["tokens_per_s"] == pytest.approx(16.0)
    assert s["mfu"] == pytest.approx(0.13056)
