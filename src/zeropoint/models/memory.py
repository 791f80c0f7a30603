"""The training-memory plan every model family's sizing returns (`llm_memory_plan`, `vit_memory_plan`,
`clip_memory_plan`), from shapes alone: one layout, so `zpctl model info` reads the same for every recipe.

    plan = training_memory(master_params=n, cast_params=n, trainable=n, precision="fp32", activations=act)
    plan["memory"]      # {"weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "total_bytes"}
    plan["memory_gib"]  # the same in GiB
    adamw_step_bytes(trainable=n, largest=k)   # the optimizer step's own buffers (an `optimizer_step_bytes` row)
"""
from __future__ import annotations

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def adamw_step_bytes(*, trainable: int, largest: int) -> dict:
    """What the engine's jitted AdamW step (engine/trainer.py `_opt_step`) holds in its own buffers, measured on
    tinygrad 0.14's captured step (docs/memory.md): the new m and v of every trainable tensor are computed before
    any is written back (2 x 4 B a parameter), every gradient buffer is zeroed from a materialised zero tensor (4 B
    a parameter), and the new weights are written back last, so at the peak one of them is held too (4 B x the
    `largest` trainable tensor's elements). A captured TinyJit keeps these buffers (its memory planner's arena)
    for its whole life, beside the micro-step's activations: they add to the peak, they do not overlap it."""
    detail = {"new_moments_bytes": 8 * trainable, "zeroed_grads_bytes": 4 * trainable, "new_weight_bytes": 4 * largest}
    return {"bytes": sum(detail.values()), "detail": detail}


def training_memory(*, master_params: int, cast_params: int, trainable: int, precision: str, activations: int,
                    frozen_bytes: int = 0, other: int | None = None, optimizer_step: int | None = None) -> dict:
    """What the engine holds during a step. weights: the fp32 master copy of `master_params` parameters plus,
    for fp16/bf16, a compute-dtype copy of the `cast_params` the matmuls read, plus `frozen_bytes` of weights
    kept without a master (a frozen LoRA base in the compute dtype or quantised). grads: fp32 accumulation
    buffers of the trainable parameters. optimizer: AdamW m and v, fp32. activations: what backward keeps for
    one micro-batch (the caller's estimate from its own shapes). optimizer_step: the AdamW step's own buffers
    (`adamw_step_bytes`; an `optimizer_step_bytes` row only when given). other: what else the caller counts (an
    `other_bytes` row only when given)."""
    c = PRECISION_BYTES[precision]
    mem = {"weights_bytes": 4 * master_params + (c * cast_params if c != 4 else 0) + frozen_bytes,
           "grads_bytes": 4 * trainable, "optimizer_bytes": 8 * trainable, "activations_bytes": activations}
    if optimizer_step is not None:
        mem["optimizer_step_bytes"] = optimizer_step
    if other is not None:
        mem["other_bytes"] = other
    mem["total_bytes"] = sum(mem.values())
    return {"memory": mem, "memory_gib": {k.replace("_bytes", ""): round(v / 2 ** 30, 3) for k, v in mem.items()}}
