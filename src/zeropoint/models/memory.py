"""The training-memory plan every model family's sizing returns (`llm_memory_plan`, `vit_memory_plan`,
`clip_memory_plan`), from shapes alone: one layout, so `zpctl model info` reads the same for every recipe.

    plan = training_memory(master_params=n, cast_params=n, trainable=n, precision="fp32", activations=act)
    plan["memory"]      # {"weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "total_bytes"}
    plan["memory_gib"]  # the same in GiB
"""
from __future__ import annotations

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def training_memory(*, master_params: int, cast_params: int, trainable: int, precision: str, activations: int,
                    frozen_bytes: int = 0, other: int | None = None) -> dict:
    """What the engine holds during a step. weights: the fp32 master copy of `master_params` parameters plus,
    for fp16/bf16, a compute-dtype copy of the `cast_params` the matmuls read, plus `frozen_bytes` of weights
    kept without a master (a frozen LoRA base in the compute dtype or quantised). grads: fp32 accumulation
    buffers of the trainable parameters. optimizer: AdamW m and v, fp32. activations: what backward keeps for
    one micro-batch (the caller's estimate from its own shapes). other: what else the caller counts (an
    `other_bytes` row only when given)."""
    c = PRECISION_BYTES[precision]
    mem = {"weights_bytes": 4 * master_params + (c * cast_params if c != 4 else 0) + frozen_bytes,
           "grads_bytes": 4 * trainable, "optimizer_bytes": 8 * trainable, "activations_bytes": activations}
    if other is not None:
        mem["other_bytes"] = other
    mem["total_bytes"] = sum(mem.values())
    return {"memory": mem, "memory_gib": {k.replace("_bytes", ""): round(v / 2 ** 30, 3) for k, v in mem.items()}}
