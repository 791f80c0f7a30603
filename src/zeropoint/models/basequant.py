"""Quantised frozen base weights for QLoRA: NF4 with double-quantised absmax, and int8 per-row absmax.

NF4 follows the QLoRA paper (Dettmers et al., 2023) and its bitsandbytes reference:
- the weight is flattened row-major and cut into blocks of 64; each block is divided by its absmax and every
  value is replaced by the nearest of the 16 NormalFloat levels (`NF4_LEVELS`: quantiles of N(0, 1) scaled to
  [-1, 1], with an exact zero); two 4-bit codes share a byte, the first in the high nibble;
- double quantisation: the fp32 absmax of every block is centred on its mean and quantised again, 256 absmax to a
  block, to the signed 8-bit dynamic map of Dettmers et al. (2022) (`dynamic_map_8bit`), one fp32 scale per block
  of 256 (stored beside a copy of the mean). 4 + 8/64 + 64/(64*256) = 4.129 bits per weight (the paper: 4.127).

int8: each row (output channel) is divided by absmax/127 and rounded; one fp32 scale per row. 8.03 bits per
weight for a 4096-wide row.

Quantising is numpy (once, at load). Dequantising is lazy tinygrad arithmetic (`.cast(dtype)` returns an
unrealized tensor), so inside a jitted step it is scheduled with the matmul that reads it; nothing
full-precision is stored. Both lookups (NF4 level, 8-bit absmax) are elementwise arithmetic, not gathers: see
`_level_lookup`.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Device, Tensor, dtypes
from tinygrad.dtype import DType
from tinygrad.helpers import Context

from ..errors import ZeropointError

BASE_QUANTS = ("none", "nf4", "int8")
NF4_BLOCK = 64          # weights per absmax (QLoRA paper, bitsandbytes default for 4-bit)
ABSMAX_BLOCK = 256      # absmax values per second-level scale (double quantisation)

# The 16 NF4 levels as published (bitsandbytes `get_4bit_type("nf4")`, QLoRA appendix E); the test rebuilds them
# from normal quantiles.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)


def dynamic_map_8bit() -> np.ndarray:
    """The signed 8-bit dynamic (tree) quantisation map, indexed by code: 256 distinct values in [-1, 1].

    Code = sign bit (bit 7) | j (7 bits). j = 0 is 0.0 (sign 0) or +1.0 (sign 1). For j >= 1 the exponent
    e = floor(log2 j) in 0..6 scales by 10^(e-6), and f = j - 2^e picks the f-th of the midpoints of 2^e equal
    intervals of [0.1, 1]: 127 magnitudes per sign, as in Dettmers et al. (2022). The codes are laid out by
    bit fields, not sorted, so the step can decode them with arithmetic alone (`_decode_dynamic`)."""
    j = np.arange(128, dtype=np.float64)
    e = np.floor(np.log2(np.maximum(j, 1)))
    p = 2.0 ** e
    mag = 10.0 ** (e - 6) * (0.1 + 0.9 * (j - p + 0.5) / p)
    pos = np.where(j == 0, 0.0, mag)
    neg = np.where(j == 0, 1.0, -mag)
    return np.concatenate([pos, neg]).astype(np.float32)


DYNAMIC_MAP = dynamic_map_8bit()


def _nearest_code(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Code of the nearest entry of an unsorted `table` (ties to the lower value)."""
    order = np.argsort(table, kind="stable")
    return order[_nearest(values, table[order])].astype(np.uint8)


def _nearest(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of the sorted `table`; a value exactly halfway goes to the lower entry."""
    mids = (table[:-1] + table[1:]) / 2
    return np.searchsorted(mids, values, side="left").astype(np.uint8)


def _blockwise(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(x padded with zeros to whole blocks and shaped (n_blocks, block), absmax per block)."""
    pad = (-len(x)) % block
    xb = np.concatenate([x, np.zeros(pad, x.dtype)]).reshape(-1, block)
    return xb, np.abs(xb).max(axis=1)


def quantize_nf4_np(w: np.ndarray) -> dict[str, np.ndarray]:
    """NF4 with double-quantised absmax -> {codes u8 (n/2,), absmax_codes u8 (n/64,),
    absmax_scale_offset f32 (n/64/256, 2)}. The weight's element count must be a multiple of 64."""
    flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
    if flat.size % NF4_BLOCK:
        raise ZeropointError(f"NF4 needs a weight whose size is a multiple of {NF4_BLOCK}; got shape {w.shape}. "
                             "Use lora.base_quant: int8 or none for this model")
    blocks, absmax = _blockwise(flat, NF4_BLOCK)
    codes = _nearest(blocks / np.where(absmax > 0, absmax, 1.0)[:, None], NF4_LEVELS).reshape(-1)
    packed = (codes[0::2] << 4) | codes[1::2]
    # second level: absmax - mean, blocks of 256, to the 8-bit dynamic map
    offset = np.float32(absmax.mean())
    centred, scale = _blockwise(absmax - offset, ABSMAX_BLOCK)
    acodes = _nearest_code(centred / np.where(scale > 0, scale, 1.0)[:, None], DYNAMIC_MAP).reshape(-1)[:len(absmax)]
    # scale and offset side by side in one buffer: the step's dequantisation then reads three buffers, and
    # tinygrad 0.14 keeps (materialises) any elementwise expression that reads more than three
    scale_offset = np.stack([scale, np.full_like(scale, offset)], axis=1).astype(np.float32)
    return {"codes": packed.astype(np.uint8), "absmax_codes": acodes, "absmax_scale_offset": scale_offset}


def dequantize_nf4_np(q: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The numpy reference of `NF4Weight.cast`: fp32 weight of `shape`."""
    so = np.repeat(q["absmax_scale_offset"], ABSMAX_BLOCK, axis=0)[:len(q["absmax_codes"])]
    absmax = DYNAMIC_MAP[q["absmax_codes"]] * so[:, 0] + so[:, 1]
    codes = np.stack([q["codes"] >> 4, q["codes"] & 15], axis=1).reshape(-1)
    return (NF4_LEVELS[codes].reshape(-1, NF4_BLOCK) * absmax[:, None].astype(np.float32)).reshape(shape)


def quantize_int8_np(w: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row absmax int8 -> {q i8 (out, in), scale f32 (out, 1)}: w ~= q * scale."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    q = np.clip(np.rint(w / np.where(scale > 0, scale, 1.0)), -127, 127).astype(np.int8)
    return {"q": q, "scale": scale.astype(np.float32)}


def _level_lookup(idx: Tensor, table: np.ndarray) -> Tensor:
    """table[idx] as sum_k table[k] * (idx == k): elementwise, so it fuses into the matmul that reads it. A
    gather is a one-hot reduction and a `where` over a broadcast constant made tinygrad 0.14 materialise the
    whole weight (measured); this form does not."""
    out = None
    for k, v in enumerate(table):
        if v != 0:
            term = (idx == k).cast(dtypes.float32) * float(v)
            out = term if out is None else out + term
    return out


def _decode_dynamic(code: Tensor) -> Tensor:
    """DYNAMIC_MAP[code] from the code's bit fields, in arithmetic only (see `dynamic_map_8bit`)."""
    c = code.cast(dtypes.int32)
    sign, j = (c >= 128).cast(dtypes.float32), (c % 128)
    ge = [(j >= 2 ** t).cast(dtypes.float32) for t in range(1, 7)]     # e = sum(ge): floor(log2 j) for j >= 1
    p = 1.0 + sum(g * 2.0 ** (t - 1) for t, g in enumerate(ge, 1))      # 2^e
    p10 = 1e-6 + sum(g * (10.0 ** (t - 6) - 10.0 ** (t - 7)) for t, g in enumerate(ge, 1))   # 10^(e-6)
    mag = p10 * (0.1 + 0.9 * (j.cast(dtypes.float32) - p + 0.5) / p)
    nonzero = (j > 0).cast(dtypes.float32)
    return nonzero * (1.0 - 2.0 * sign) * mag + (1.0 - nonzero) * sign


class NF4Weight:
    """A frozen projection weight in NF4. `.cast(dtype)` is the dequantised weight as a lazy tensor."""

    def __init__(self, w: np.ndarray, device: str | None = None):
        self.shape = tuple(w.shape)
        q = quantize_nf4_np(w)
        self.codes = Tensor(q["codes"], device=device).realize()
        self.absmax_codes = Tensor(q["absmax_codes"], device=device).realize()
        self.absmax_scale_offset = Tensor(q["absmax_scale_offset"], device=device).realize()

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes() for t in (self.codes, self.absmax_codes, self.absmax_scale_offset))

    def absmax(self) -> Tensor:
        n = self.absmax_codes.shape[0]
        so = self.absmax_scale_offset.reshape(-1, 1, 2).expand(-1, ABSMAX_BLOCK, 2).reshape(-1, 2)[:n]
        return _decode_dynamic(self.absmax_codes) * so[:, 0] + so[:, 1]

    def cast(self, dtype: DType) -> Tensor:
        c = self.codes.cast(dtypes.int32)
        idx = Tensor.stack(c // 16, c % 16, dim=1).reshape(-1)
        w = _level_lookup(idx, NF4_LEVELS).reshape(-1, NF4_BLOCK) * self.absmax().reshape(-1, 1)
        return w.reshape(self.shape).cast(dtype)

    def numpy(self) -> np.ndarray:
        return dequantize_nf4_np({"codes": self.codes.numpy(), "absmax_codes": self.absmax_codes.numpy(),
                                  "absmax_scale_offset": self.absmax_scale_offset.numpy()}, self.shape)


class Int8Weight:
    """A frozen projection weight in int8 with one fp32 scale per row; `.cast(dtype)` dequantises lazily."""

    def __init__(self, w: np.ndarray, device: str | None = None):
        self.shape = tuple(w.shape)
        q = quantize_int8_np(w)
        self.q = Tensor(q["q"], device=device).realize()
        self.scale = Tensor(q["scale"], device=device).realize()

    @property
    def nbytes(self) -> int:
        return self.q.nbytes() + self.scale.nbytes()

    def cast(self, dtype: DType) -> Tensor:
        return (self.q.cast(dtypes.float32) * self.scale).cast(dtype)

    def numpy(self) -> np.ndarray:
        return self.q.numpy().astype(np.float32) * self.scale.numpy()


def quantize_weight(w: np.ndarray, kind: str, device: str | None = None):
    if kind == "nf4":
        return NF4Weight(w, device)
    if kind == "int8":
        return Int8Weight(w, device)
    raise ZeropointError(f"lora.base_quant {kind!r} is not supported; use one of {', '.join(BASE_QUANTS)}")


def bits_per_weight(kind: str, shape: tuple[int, int]) -> float:
    """Stored bits per weight of a (out, in) projection, from shapes alone (for the memory plan)."""
    n = shape[0] * shape[1]
    if kind == "nf4":
        nb = -(-n // NF4_BLOCK)
        return (n * 4 + nb * 8 + -(-nb // ABSMAX_BLOCK) * 64) / n
    if kind == "int8":
        return 8 + 32 / shape[1]
    raise ZeropointError(f"no bit width for base_quant {kind!r}")


# ---- bf16 on the host: numpy has no bfloat16, and tinygrad's CPU backend computes bf16 only under emulation ----
def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round fp32 to the nearest bf16, ties to even (NaN stays NaN): the only rounding a bf16 merge applies."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded).astype(np.uint16)


def bf16_tensor(bits: np.ndarray, device: str | None = None) -> Tensor:
    """A realized bf16 tensor holding these bf16 bit patterns (uint16)."""
    t = Tensor(np.ascontiguousarray(bits, dtype=np.uint16), device=device).bitcast(dtypes.bfloat16)
    on_cpu = (device or Device.DEFAULT).split(":")[0] == "CPU"
    with Context(EMULATED_DTYPES="bfloat16") if on_cpu else Context():   # clang 14 has no __bf16
        return t.contiguous().realize()


def weight_numpy_f32(w) -> np.ndarray:
    """Any frozen weight (fp32/fp16/bf16 tensor, NF4Weight, Int8Weight) as an fp32 numpy array, exactly."""
    if isinstance(w, (NF4Weight, Int8Weight)):
        return w.numpy()
    if w.dtype == dtypes.bfloat16:
        return bf16_bits_to_f32(w.bitcast(dtypes.uint16).numpy())
    return w.numpy().astype(np.float32)
