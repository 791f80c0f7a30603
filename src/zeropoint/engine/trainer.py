"""The training engine every recipe shares: AdamW on fp32 masters, loss scaling, accumulation, clipping, LR.

Model-agnostic contract (LLM and vision recipes use the same one):

    params  = {"name": Tensor}        # the TRAINABLE fp32 master weights; frozen weights are simply not passed
    loss_fn = lambda *batch: Tensor   # scalar fp32 mean loss of one micro-batch; casts to the compute dtype inside
    trainer = Trainer(params, loss_fn, EngineConfig(lr=3e-4, total_steps=100, grad_accum=4, precision="fp16"))
    stats   = trainer.step([(x0, y0), (x1, y1), (x2, y2), (x3, y3)])   # one optimizer step over 4 micro-batches
    val     = trainer.eval_loss(val_loss_fn, [(xv, yv), ...])

Why it is built this way (tinygrad 0.14, see shared/notes/tinygrad-0.14.md):
- Two TinyJits, not one: a micro-step that adds this micro-batch's gradient into persistent buffers with
  `assign`, and an optimizer step that reads them, updates, and zeroes them. One jitted function per
  micro-batch count would recompile for every `grad_accum`, and gradients created inside a single JIT call
  cannot outlive it.
- LR, loss scale and the bias-correction step count live in device tensors that the host `assign`s, so the
  JIT replays with the new values instead of baking the capture-time constants in.
- Every batch tensor is copied into a fresh realized buffer before it enters the JIT (`fresh()`): a sliced
  view can otherwise be captured once and replayed forever (the slice-baking trap).
- fp16: the loss is multiplied by a dynamic scale before backward; the optimizer step unscales, and if the
  global gradient norm is not finite it leaves weights and moments untouched (a `where`, still inside the JIT),
  the host halves the scale and the step is reported as skipped. After `growth_interval` good steps the
  scale doubles.
- bf16 on the CPU: clang 14 cannot compile `__bf16`, so bf16 kernels are built with
  `EMULATED_DTYPES=bfloat16` (bit-exact bf16 rounding, emulated in integer ops).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes
from tinygrad.helpers import Context

from ..errors import ZeropointError
from .parallel import Placement

PRECISIONS = {"fp32": dtypes.float32, "fp16": dtypes.float16, "bf16": dtypes.bfloat16}


@dataclass
class EngineConfig:
    """Optimizer, schedule and precision settings. Recipes fill this from their typed YAML config."""
    lr: float = 3e-4
    total_steps: int = 100            # cosine decay reaches min_lr at this step
    warmup_steps: int = 0             # linear warm-up from lr/warmup to lr over these steps
    min_lr_ratio: float = 0.1         # final lr = lr * min_lr_ratio
    weight_decay: float = 0.0         # decoupled (AdamW); applied to matrices only (ndim >= 2), not norms/biases
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0            # max global L2 norm; 0 disables clipping
    grad_accum: int = 1               # micro-batches per optimizer step
    precision: str = "fp32"           # compute dtype: fp32 | fp16 | bf16 (master weights and Adam state stay fp32)
    loss_scale: float = 2.0 ** 15     # initial dynamic loss scale (fp16 only)
    growth_interval: int = 200        # good fp16 steps before the scale doubles
    jit: bool = True                  # TinyJit on micro-step, optimizer step and eval
    devices: int | tuple[str, ...] = 1   # data parallel over N devices (or these names); see engine/parallel.py
    shard_optimizer: bool = False     # ZeRO-1: partition the fp32 Adam moments across the devices

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ZeropointError(f"precision {self.precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
        if self.grad_accum < 1:
            raise ZeropointError(f"grad_accum must be >= 1 (got {self.grad_accum})")
        if self.total_steps < 1:
            raise ZeropointError(f"total_steps must be >= 1 (got {self.total_steps})")
        self.betas = tuple(self.betas)
        if not isinstance(self.devices, int):
            self.devices = tuple(self.devices)


def lr_at(step: int, cfg: EngineConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warm-up, then cosine from lr down to lr*min_lr_ratio."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    prog = min(1.0, (step - cfg.warmup_steps) / span)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1.0 + math.cos(math.pi * prog))


def compute_dtype(precision: str):
    return PRECISIONS[precision]


def precision_context(precision: str) -> Context:
    """Context to build kernels in: bf16 on the CPU device goes through emulation (clang 14 lacks __bf16)."""
    if precision == "bf16" and Device.DEFAULT.split(":")[0] == "CPU":
        return Context(EMULATED_DTYPES="bfloat16")
    return Context()


def fresh(x) -> Tensor:
    """A realized tensor with its own buffer: what may safely enter a TinyJit (guards the slice-baking trap)."""
    if isinstance(x, Tensor):
        return x.clone().realize()
    return Tensor(np.ascontiguousarray(x)).realize()


@dataclass
class StepStats:
    step: int                 # 1-based index of the optimizer step just taken
    loss: float               # mean loss over the micro-batches (unscaled)
    lr: float
    grad_norm: float | None   # global L2 norm of the unscaled gradient before clipping (inf/nan when skipped)
    skipped: bool             # fp16 overflow: no update was applied
    loss_scale: float
    step_s: float
    micro_losses: list[float] = field(default_factory=list)


class Trainer:
    """AdamW over fp32 master weights with fp32 moments; see the module docstring for the contract."""

    def __init__(self, params: dict[str, Tensor], loss_fn: Callable[..., Tensor], cfg: EngineConfig):
        if not params:
            raise ZeropointError("nothing to train: the params dict is empty (are all weights frozen?)")
        for name, p in params.items():
            if p.dtype != dtypes.float32:
                raise ZeropointError(f"trainable weight {name} is {p.dtype}; master weights must be float32 "
                                     "(the model casts to the compute dtype itself)")
        self.cfg, self.loss_fn = cfg, loss_fn
        # one device, or data parallel: params replicated in place (frozen weights: the caller's place.replicate)
        self.place = Placement.of(cfg.devices, cfg.shard_optimizer)
        self.names = list(params)
        self.params = [self.place.replicate(params[n]).realize() for n in self.names]
        self.m = [self.place.state_zeros(p.shape) for p in self.params]
        self.v = [self.place.state_zeros(p.shape) for p in self.params]
        self.grads = [self.place.zeros(p.shape) for p in self.params]
        self.decay = [p.ndim >= 2 and cfg.weight_decay > 0 for p in self.params]
        # host-controlled scalars live on the device so the JIT reads their current values
        self.lr_t = self.place.put([lr_at(0, cfg)])
        self.scale_t = self.place.put([cfg.loss_scale if cfg.precision == "fp16" else 1.0])
        self.adam_t = self.place.put([0.0])   # updates applied (bias correction)
        self.step_count = 0        # optimizer steps taken (including skipped ones)
        self.good_steps = 0        # consecutive non-overflow steps since the last scale change
        self.skipped_steps = 0
        self._micro = TinyJit(self._micro_step) if cfg.jit else self._micro_step
        self._opt = TinyJit(self._opt_step) if cfg.jit else self._opt_step
        self._evals: dict[int, Callable] = {}

    # ---- jitted pieces ---------------------------------------------------------------------------------
    def _micro_step(self, *batch: Tensor) -> Tensor:
        with Context(TRAINING=1):
            loss = self.loss_fn(*batch).float()
            scaled = loss * self.scale_t.reshape(()) * (1.0 / self.cfg.grad_accum)
            grads = scaled.gradient(*self.params)
            for buf, g in zip(self.grads, grads):
                buf.assign(buf + g.float())
            Tensor.realize(loss, *self.grads)
        return loss

    def _opt_step(self) -> Tensor:
        cfg = self.cfg
        b1, b2 = cfg.betas
        inv = 1.0 / self.scale_t
        gs = [g * inv for g in self.grads]
        norm = Tensor.stack(*[(g * g).sum() for g in gs]).sum().sqrt().reshape(1)
        ok = norm.isfinite()
        coef = (cfg.grad_clip / (norm + 1e-6)).minimum(1.0) if cfg.grad_clip > 0 else norm.ones_like()
        t = self.adam_t + ok.cast(dtypes.float32)
        bc1 = 1.0 - (t * math.log(b1)).exp()
        bc2 = 1.0 - (t * math.log(b2)).exp()
        lr = self.lr_t
        out = []
        for p, m, v, g, buf, decay in zip(self.params, self.m, self.v, gs, self.grads, self.decay):
            g = g * coef
            m_new = m * b1 + g * (1.0 - b1)
            v_new = v * b2 + (g * g) * (1.0 - b2)
            upd = (m_new / bc1) / ((v_new / bc2).sqrt() + cfg.eps)
            if decay:
                upd = upd + cfg.weight_decay * p
            # under ZeRO-1 m, v and so the update are this device's slice; the new weight is gathered whole
            p.assign(self.place.gather(ok.where(p - lr * upd, p)))
            m.assign(ok.where(m_new, m))
            v.assign(ok.where(v_new, v))
            buf.assign(buf.zeros_like())
            out += [p, m, v, buf]
        self.adam_t.assign(t)
        Tensor.realize(norm, self.adam_t, *out)
        return norm

    # ---- host API --------------------------------------------------------------------------------------
    def step(self, micro_batches: Sequence[Sequence]) -> StepStats:
        """One optimizer step over exactly `grad_accum` micro-batches (each a tuple of arrays/tensors)."""
        if len(micro_batches) != self.cfg.grad_accum:
            raise ZeropointError(f"step() got {len(micro_batches)} micro-batches; grad_accum is {self.cfg.grad_accum}")
        t0 = time.perf_counter()
        lr = lr_at(self.step_count, self.cfg)
        self.lr_t.assign(self.place.put([lr])).realize()
        losses = []
        with precision_context(self.cfg.precision):
            for mb in micro_batches:
                loss = self._micro(*[self.place.batch(fresh(x)) for x in mb])
                losses.append(float(loss.item()))      # JIT outputs reuse one buffer: read it now
            norm = float(self._opt().item())
        self.step_count += 1
        skipped = not math.isfinite(norm)
        scale = float(self.scale_t.item())
        if skipped:
            self.skipped_steps += 1
            self.good_steps = 0
            if self.cfg.precision == "fp16":
                scale = max(scale / 2.0, 1.0)
                self.scale_t.assign(self.place.put([scale])).realize()
            else:
                raise ZeropointError(f"non-finite gradient norm at step {self.step_count} in {self.cfg.precision}: "
                                     "the loss diverged; lower train.lr or enable grad_clip")
        else:
            self.good_steps += 1
            if self.cfg.precision == "fp16" and self.good_steps % self.cfg.growth_interval == 0:
                scale *= 2.0
                self.scale_t.assign(self.place.put([scale])).realize()
        return StepStats(step=self.step_count, loss=float(np.mean(losses)), lr=lr, grad_norm=norm, skipped=skipped,
                         loss_scale=scale, step_s=time.perf_counter() - t0, micro_losses=losses)

    def eval_loss(self, loss_fn: Callable[..., Tensor], batches: Iterable[Sequence]) -> float:
        """Mean of `loss_fn` over batches, no gradients. Batches of one shape share one jitted graph."""
        key = id(loss_fn)
        if key not in self._evals:
            def f(*b):
                return loss_fn(*b).float().realize()
            self._evals = {key: TinyJit(f) if self.cfg.jit else f}   # one live eval graph at a time
        fn = self._evals[key]
        vals = []
        with precision_context(self.cfg.precision):
            for b in batches:
                vals.append(float(fn(*[self.place.batch(fresh(x), strict=False) for x in b]).item()))
        if not vals:
            raise ZeropointError("eval_loss got no batches: the validation split is empty (make it larger in the recipe's data section)")
        return float(np.mean(vals))

    # ---- state for checkpoints -------------------------------------------------------------------------
    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(moment arrays keyed `m.<name>`/`v.<name>`, scalar state). Parameters are NOT included."""
        arrays = {}
        for n, m, v in zip(self.names, self.m, self.v):
            arrays[f"m.{n}"] = m.numpy()
            arrays[f"v.{n}"] = v.numpy()
        scalars = {"step_count": self.step_count, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps,
                   "adam_t": float(self.adam_t.item()), "loss_scale": float(self.scale_t.item()),
                   "engine_config": asdict(self.cfg)}
        return arrays, scalars

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        for n, m, v in zip(self.names, self.m, self.v):
            for key, t in ((f"m.{n}", m), (f"v.{n}", v)):
                if key not in arrays:
                    raise ZeropointError(f"optimizer state has no {key}; the checkpoint belongs to a different model/method")
                if tuple(arrays[key].shape) != tuple(t.shape):
                    raise ZeropointError(f"optimizer state {key} has shape {arrays[key].shape}, expected {t.shape}")
                t.assign(self.place.like(arrays[key], t)).realize()
        self.step_count = int(scalars["step_count"])
        self.good_steps = int(scalars["good_steps"])
        self.skipped_steps = int(scalars.get("skipped_steps", 0))
        self.adam_t.assign(self.place.put([float(scalars["adam_t"])])).realize()
        self.scale_t.assign(self.place.put([float(scalars["loss_scale"])])).realize()

    def param_arrays(self) -> dict[str, np.ndarray]:
        return {n: p.numpy() for n, p in zip(self.names, self.params)}
