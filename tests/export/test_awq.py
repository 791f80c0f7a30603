"""Activation-aware scaling before weight-only int8 (onnx-int8-wo): where a few input channels carry large
activations, scaling them up in the weight (and down in the activation) before rounding loses less, and the
graph stays a plain MatMulNBits preceded by a per-channel Mul. Small random weights: this is a test of the math."""
import numpy as np
import onnx

from zeropoint.export import parity as P
from zeropoint.export.onnx import write_llama_onnx
from zeropoint.export.quant import quantize_onnx_int8_weights
from zeropoint.models.llama import get_config, state_dict
from tests.models.tiny import random_llama


def test_awq_scaling_beats_plain_rounding_on_outlier_channels_and_is_recorded(tmp_path):
    cfg = get_config("tiny-untied")
    model = random_llama(cfg, 0)
    w = {k: v.numpy() for k, v in state_dict(model).items()}
    for i in range(cfg.n_layers):   # outlier channels, as real LMs have: a few norm gains 30x the rest
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w[f"model.layers.{i}.{norm}.weight"][[3, 17]] *= 30.0
    write_llama_onnx(cfg, w, tmp_path / "f.onnx")
    rng = np.random.default_rng(0)
    cal = rng.integers(0, cfg.vocab_size, (4, 32))
    test = rng.integers(0, cfg.vocab_size, (4, 32))          # disjoint draws from the calibration tokens
    ref, _ = P.run_onnxruntime(tmp_path / "f.onnx", {"input_ids": test})
    plain = quantize_onnx_int8_weights(tmp_path / "f.onnx", tmp_path / "rtn.onnx")
    awq = quantize_onnx_int8_weights(tmp_path / "f.onnx", tmp_path / "awq.onnx", calibration=cal,
                                     calibration_source={"kind": "random ids"})
    awq_rtn = quantize_onnx_int8_weights(tmp_path / "f.onnx", tmp_path / "awq_rtn.onnx", calibration=cal, gptq=False)
    assert awq["quantization"]["rounding"]["method"].startswith("GPTQ")
    assert awq_rtn["quantization"]["rounding"] == {"method": "round to nearest"}
    assert plain["quantization"]["awq"] is None
    a = awq["quantization"]["awq"]
    assert a["calibration"] == {"kind": "random ids"} and sum(a["alpha_counts"].values()) == 7 * cfg.n_layers + 1
    assert sum(c for k, c in a["alpha_counts"].items() if k != "0") > 0      # some MatMuls were rescaled
    g = onnx.load(str(tmp_path / "awq.onnx")).graph
    muls = [n for n in g.node if n.name.endswith("_awq")]
    assert len(muls) == sum(c for k, c in a["alpha_counts"].items() if k != "0")
    assert sum(n.op_type == "MatMulNBits" for n in g.node) == 7 * cfg.n_layers + 1
    err = {}
    for name in ("rtn", "awq_rtn", "awq"):
        out, _ = P.run_onnxruntime(tmp_path / f"{name}.onnx", {"input_ids": test})
        err[name] = float(np.sqrt(np.mean((out - ref) ** 2)))
    assert 0 < err["awq_rtn"] < 0.8 * err["rtn"], err      # measured: rms 1.65e-3 vs 2.34e-3 (0.70x)
    assert 0 < err["awq"] < 0.85 * err["awq_rtn"], err     # + GPTQ rounding: 1.08e-3 (0.46x of plain rounding)


def test_gptq_rounding_lowers_output_error_and_keeps_the_q8_block_format():
    """GPTQ chooses the same block-32 int8 codes and scales format as plain rounding, but pushes each rounding
    error onto the channels not yet rounded, so the error of X @ W on inputs like the calibration ones (correlated
    channels, as hidden states are) drops, on held-out draws too. Small random tensors: a test of the math."""
    from zeropoint.export.quant import _dequant, _gptq_q8, _q8_blocks
    rng = np.random.default_rng(0)
    K, N = 128, 48
    mix = rng.normal(size=(K, K)) / np.sqrt(K) + np.eye(K)        # correlated input channels
    cal, held = (rng.normal(size=(n, K)) @ mix for n in (2048, 512))
    w = rng.normal(size=(K, N)).astype(np.float32)
    q, scale = _gptq_q8(w, cal.T @ cal, 32)
    assert q.dtype == np.uint8 and q.shape == (N, K // 32, 32) and scale.shape == (N, K // 32)
    assert np.abs(q.astype(int) - 128).max() <= 127
    err = {}
    for name, dq in (("rtn", _dequant(*_q8_blocks(w, 32))), ("gptq", _dequant(q, scale))):
        assert np.abs(dq - w).max() < 4 * scale.max()              # still a rounding of w, not another matrix
        err[name] = [float(np.square(x @ (dq - w)).mean()) for x in (cal, held)]
    assert err["gptq"][0] < 0.7 * err["rtn"][0], err
    assert err["gptq"][1] < 0.8 * err["rtn"][1], err           # measured: 0.58x (calibration), 0.60x (held out)
