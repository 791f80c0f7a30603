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
- Activation checkpointing: pass a `SegmentedLoss` (the loss as a chain of stages) instead of a plain function.
  The micro-step then realizes only each stage's input in the forward, and walks the stages backwards, each in
  its own realize: recompute the stage from its saved input, take its gradient, add it in. Separate realizes
  are what make it real: within one graph tinygrad merges the recomputation with the forward it repeats (they
  are the same UOps) and keeps every activation, so gradient equality alone proves nothing. Split this way,
  the memory planner (eager, or over the JIT's captured calls) sees each stage's activations die with its
  backward, and the step's allocator high-water mark falls (tests/engine/test_checkpointing.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from tinygrad import Device, Tensor, TinyJit, dtypes
from tinygrad.device import Buffer
from tinygrad.dtype import _from_np_dtype, _to_np_dtype
from tinygrad.helpers import Context

from ..errors import ZeropointError
from .jitcache import PersistentJit

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

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ZeropointError(f"precision {self.precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
        if self.grad_accum < 1:
            raise ZeropointError(f"grad_accum must be >= 1 (got {self.grad_accum})")
        if self.total_steps < 1:
            raise ZeropointError(f"total_steps must be >= 1 (got {self.total_steps})")
        self.betas = tuple(self.betas)


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


def device_array(a, device: str | None = None) -> Tensor:
    """A realized tensor holding a copy of numpy array `a`: one copy into a new buffer, without tinygrad's
    scheduler (a step's inputs and the optimizer state are made this way, so a warm process schedules nothing)."""
    a = np.ascontiguousarray(a)
    t = Tensor.empty(*a.shape, dtype=_from_np_dtype(a.dtype), device=device)
    write_array(t, a)
    return t


def write_array(t: Tensor, a) -> Tensor:
    """Copy numpy array `a` into the storage of realized (or empty) tensor `t` in place, without scheduling."""
    buf = t.uop.base.buffer
    a = np.ascontiguousarray(a, dtype=_to_np_dtype(t.dtype))
    if a.size != buf.size:
        raise ZeropointError(f"cannot write {a.size} values into a tensor of {buf.size}")
    buf.ensure_allocated().copy_from(Buffer("NPY", a.size, t.dtype, opaque=a.reshape(-1)))
    return t


def fresh(x) -> Tensor:
    """A realized tensor with its own buffer: what may safely enter a TinyJit (guards the slice-baking trap)."""
    if isinstance(x, Tensor):
        return x.clone().realize()
    return device_array(x)


@dataclass
class SegmentedLoss:
    """A loss written as a chain, so the engine can checkpoint activations between its links:

        h = stages[0](None, *batch); h = stages[i](h, *batch) for the middle stages; loss = stages[-1](h, *batch)

    Calling it runs the chain as one graph (evaluation, or training without checkpointing). Each stage must be
    a pure function of its input, the batch and the weights: the backward runs it a second time, so random
    ops such as dropout would draw a different mask there."""
    stages: list[Callable[..., Tensor]]

    def __post_init__(self):
        if len(self.stages) < 2:
            raise ZeropointError(f"a SegmentedLoss needs at least two stages (got {len(self.stages)})")

    def __call__(self, *batch) -> Tensor:
        h = None
        for f in self.stages:
            h = f(h, *batch)
        return h


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


# EngineConfig fields the host applies (through device tensors or the loop): they do not change a compiled step
_HOST_ONLY = ("lr", "total_steps", "warmup_steps", "min_lr_ratio", "loss_scale", "growth_interval", "jit")


def _fn_id(fn: Callable) -> str:
    """Names the loss a compiled step was built from. A SegmentedLoss (activation checkpointing) is named by its
    stages in order, so a step checkpointed every layer never replays as one checkpointed every k layers."""
    if isinstance(fn, SegmentedLoss):
        return f"segmented[{len(fn.stages)}]:" + ",".join(_fn_id(f) for f in fn.stages)
    code = getattr(fn, "__code__", None)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}" + \
        (f":{code.co_firstlineno}" if code is not None else "")


class Trainer:
    """AdamW over fp32 master weights with fp32 moments; see the module docstring for the contract.

    Warm start (engine/jitcache.py): with `cache_key` (what the loss computes: model config, method, ...) and
    `frozen` (every other tensor the loss reads: frozen weights, RoPE tables), the jitted micro-step, optimizer
    step and eval are stored under $ZP_CACHE and the next process with the same key replays them without
    compiling. Without `cache_key` they are plain TinyJits."""

    def __init__(self, params: dict[str, Tensor], loss_fn: Callable[..., Tensor], cfg: EngineConfig, *,
                 frozen: dict[str, Tensor] | None = None, cache_key: dict | None = None):
        if not params:
            raise ZeropointError("nothing to train: the params dict is empty (are all weights frozen?)")
        for name, p in params.items():
            if p.dtype != dtypes.float32:
                raise ZeropointError(f"trainable weight {name} is {p.dtype}; master weights must be float32 "
                                     "(the model casts to the compute dtype itself)")
        self.cfg, self.loss_fn = cfg, loss_fn
        self.names = list(params)
        self.params = [params[n] for n in self.names]
        Tensor.realize(*self.params)
        dev = self.params[0].device
        zeros = [np.zeros(p.shape, dtype=np.float32) for p in self.params]
        self.m = [device_array(z, dev) for z in zeros]
        self.v = [device_array(z, dev) for z in zeros]
        self.grads = [device_array(z, dev) for z in zeros]
        self.decay = [p.ndim >= 2 and cfg.weight_decay > 0 for p in self.params]
        # host-controlled scalars live on the device so the JIT reads their current values
        self.lr_t = device_array(np.array([lr_at(0, cfg)], dtype=np.float32), dev)
        self.scale_t = device_array(np.array([cfg.loss_scale if cfg.precision == "fp16" else 1.0], dtype=np.float32), dev)
        self.adam_t = device_array(np.zeros(1, dtype=np.float32), dev)   # updates applied (bias correction)
        self.step_count = 0        # optimizer steps taken (including skipped ones)
        self.good_steps = 0        # consecutive non-overflow steps since the last scale change
        self.skipped_steps = 0
        self.frozen = dict(frozen or {})
        self.cache_key = None if cache_key is None else {
            "caller": cache_key, "loss": _fn_id(loss_fn),
            "engine": {k: v for k, v in asdict(cfg).items() if k not in _HOST_ONLY}}
        checkpointed = isinstance(loss_fn, SegmentedLoss)
        self._micro = self._jit(self._micro_step_checkpointed if checkpointed else self._micro_step, "train.micro")
        self._opt = self._jit(self._opt_step, "train.opt")
        self._evals: dict[int, Callable] = {}

    def _jit(self, fn: Callable, name: str, **extra) -> Callable:
        if not self.cfg.jit:
            return fn
        if self.cache_key is None:
            return TinyJit(fn)
        return PersistentJit(fn, name=name, key={**self.cache_key, **extra}, bindings=self.bound_tensors)

    def jit_steps(self) -> dict[str, dict]:
        """What each of this trainer's stored steps did so far (engine/jitcache.py): loaded or compiled, by name."""
        jits = [self._micro, self._opt, *self._evals.values()]
        return {j.name: dict(j.info) for j in jits
                if isinstance(j, PersistentJit) and j.info.get("source") in ("cache", "compiled")}

    def bound_tensors(self) -> dict[str, Tensor]:
        """Every tensor the jitted steps read or update, by a name that is the same in every process."""
        out = {f"frozen.{k}": t for k, t in self.frozen.items()}
        for n, p, m, v, g in zip(self.names, self.params, self.m, self.v, self.grads):
            out.update({f"param.{n}": p, f"adam_m.{n}": m, f"adam_v.{n}": v, f"grad.{n}": g})
        out.update({"engine.lr": self.lr_t, "engine.loss_scale": self.scale_t, "engine.adam_t": self.adam_t})
        return out

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

    def _micro_step_checkpointed(self, *batch: Tensor) -> Tensor:
        """The same accumulation as `_micro_step`, stage by stage (see the module docstring)."""
        stages = self.loss_fn.stages
        last = len(stages) - 1
        with Context(TRAINING=1):
            inputs: list[Tensor | None] = [None]
            for f in stages[:-1]:                      # forward: keep only each stage's input
                inputs.append(f(inputs[-1], *batch).contiguous().realize())
            upstream, loss = None, None
            for i in range(last, -1, -1):              # backward: recompute stage i, differentiate, drop it
                out = stages[i](inputs[i], *batch)
                if i == last:
                    loss = out.float()
                    out = loss * self.scale_t.reshape(()) * (1.0 / self.cfg.grad_accum)
                graph = out.uop.toposort()
                touched = [j for j, p in enumerate(self.params) if p.uop in graph]
                wrt = ([inputs[i]] if inputs[i] is not None else []) + [self.params[j] for j in touched]
                if not wrt:
                    continue
                grads = out.gradient(*wrt, gradient=upstream)
                if inputs[i] is not None:
                    upstream, grads = grads[0].contiguous(), grads[1:]
                for j, g in zip(touched, grads):
                    self.grads[j].assign(self.grads[j] + g.float())
                Tensor.realize(*([loss] if i == last else []), *([upstream] if inputs[i] is not None else []),
                               *[self.grads[j] for j in touched])
        return loss

    def _opt_step(self) -> Tensor:
        cfg = self.cfg
        b1, b2 = cfg.betas
        inv = 1.0 / self.scale_t
        gs = [g * inv for g in self.grads]
        norm = Tensor.stack(*[(g * g).sum() for g in gs]).sum().sqrt().reshape(1)
        ok = norm.isfinite()
        coef = (cfg.grad_clip / (norm + 1e-6)).minimum(1.0) if cfg.grad_clip > 0 else Tensor.ones(1)
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
            p.assign(ok.where(p - lr * upd, p))
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
        write_array(self.lr_t, [lr])
        losses = []
        with precision_context(self.cfg.precision):
            for mb in micro_batches:
                loss = self._micro(*[fresh(x) for x in mb])
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
                write_array(self.scale_t, [scale])
            else:
                raise ZeropointError(f"non-finite gradient norm at step {self.step_count} in {self.cfg.precision}: "
                                     "the loss diverged; lower train.lr or enable grad_clip")
        else:
            self.good_steps += 1
            if self.cfg.precision == "fp16" and self.good_steps % self.cfg.growth_interval == 0:
                scale *= 2.0
                write_array(self.scale_t, [scale])
        return StepStats(step=self.step_count, loss=float(np.mean(losses)), lr=lr, grad_norm=norm, skipped=skipped,
                         loss_scale=scale, step_s=time.perf_counter() - t0, micro_losses=losses)

    def eval_loss(self, loss_fn: Callable[..., Tensor], batches: Iterable[Sequence]) -> float:
        """Mean of `loss_fn` over batches, no gradients. Batches of one shape share one jitted graph."""
        key = id(loss_fn)
        if key not in self._evals:
            def f(*b):
                return loss_fn(*b).float().realize()
            self._evals = {key: self._jit(f, "train.eval", eval_loss=_fn_id(loss_fn))}   # one live eval graph at a time
        fn = self._evals[key]
        vals = []
        with precision_context(self.cfg.precision):
            for b in batches:
                vals.append(float(fn(*[fresh(x) for x in b]).item()))
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
                write_array(t, arrays[key].astype(np.float32))   # in place: a captured step keeps its buffers
        self.step_count = int(scalars["step_count"])
        self.good_steps = int(scalars["good_steps"])
        self.skipped_steps = int(scalars.get("skipped_steps", 0))
        write_array(self.adam_t, [float(scalars["adam_t"])])
        write_array(self.scale_t, [float(scalars["loss_scale"])])

    def param_arrays(self) -> dict[str, np.ndarray]:
        return {n: p.numpy() for n, p in zip(self.names, self.params)}
