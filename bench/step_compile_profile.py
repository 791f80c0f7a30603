"""Where a training step's first-call time goes in tinygrad: graph building, scheduling, lowering, compiling.

    PYTHONPATH=src python bench/step_compile_profile.py configs/llm/smollm2-135m_full.yaml \
        --set train.precision=bf16 --set train.micro_batch_size=8 --set data.seq_len=256

The first optimizer step of the recipe's engine (two TinyJits: micro-step and optimizer step, each called
eagerly once) is timed phase by phase by wrapping tinygrad 0.14's own entry points in this process:
- schedule: `Tensor.linear_with_vars` (graph rewriting into kernels, the "scheduler"),
- lower: `realize.to_program` minus the compiler call (kernel optimisation, linearising, rendering source),
- compile: `Compiler.compile_cached` (clang, nvrtc, ...; hits tinygrad's disk cache when the source was seen),
- graph building is what is left of the step (Python building the forward and backward UOp graphs),
and the kernels are counted (kernels scheduled, unique programs lowered, bytes of source rendered).

The device comes from DEV. To see what a GPU's compiler would do without the GPU, point DEV at tinygrad's NULL
device with the GPU's renderer, e.g. `DEV=NULL:CUDA:sm_90` (H100/H200) with `NVRTC_PATH` set to a libnvrtc
(PyPI `nvidia-cuda-nvrtc`): every kernel is scheduled, lowered for that GPU and compiled by nvrtc exactly as on
the GPU; nothing executes (NULL), so losses are meaningless and only the host-side phases are real.
PARALLEL=0 is forced so lowering runs in this process (where it can be timed); tinygrad's default uses a
worker pool on machines with several cores, which divides the lower+compile wall time, not the schedule time.
Set CACHELEVEL=0 (or a fresh CACHEDB) for cold compiles.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ["PARALLEL"] = "0"
os.environ.setdefault("NULL_ALLOW_COPYOUT", "1")   # NULL device: .item() reads zeros instead of raising


class Phases:
    def __init__(self):
        self.t = Counter()     # wall seconds per phase
        self.c = Counter()     # this process's CPU seconds per phase (all threads; stable on a shared box)
        self.n = Counter()
        self.kernel_names: Counter = Counter()
        self.src_bytes = 0
        self.depth = 0

    def wrap(self, owner, attr: str, phase: str, hook=None):
        orig = getattr(owner, attr)
        ph = self

        def timed(*a, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                out = orig(*a, **kw)
            finally:
                ph.t[phase] += time.perf_counter() - t0
                ph.c[phase] += time.process_time() - c0
                ph.n[phase] += 1
            if hook:
                hook(a, out)
            return out
        setattr(owner, attr, timed)


def count_kernels(linear) -> int:
    from tinygrad.uop.ops import Ops
    return sum(1 for c in linear.src if c.op is Ops.CALL and c.src[0].op in (Ops.SINK, Ops.PROGRAM))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--layers", type=int, help="override model n_layers (scaling checks)")
    ap.add_argument("--top", type=int, default=8, help="most frequent kernel name prefixes to list")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import tinygrad.device as tdev
    import tinygrad.engine.realize as realize
    from tinygrad import Device, Tensor

    from zeropoint.engine import EngineConfig, Trainer
    from zeropoint.models.llm import build_llm, lm_loss, trainable_params
    from zeropoint.models.lora import LoRASpec
    from zeropoint.perf.bench import make_batches
    from zeropoint.recipes import load_config

    over = list(a.overrides) + ([f"model.overrides.n_layers={a.layers}"] if a.layers else [])
    cfg, _ = load_config(a.config, over)
    cfg.model.weights = None          # random weights of the exact shapes: compile time does not depend on values
    t = cfg.train
    ph = Phases()
    scheduled = []

    def on_schedule(args, out):
        scheduled.append(count_kernels(out[0]))

    def on_program(args, out):
        name = getattr(out.arg, "name", None) or "?"
        ph.kernel_names[name.split("_")[0]] += 1     # r = reduce (matmuls too), E = elementwise

    def on_compile(args, out):
        ph.src_bytes += len(args[1]) if len(args) > 1 else 0

    ph.wrap(Tensor, "linear_with_vars", "schedule", on_schedule)
    ph.wrap(realize, "to_program", "lower_and_compile", on_program)
    ph.wrap(tdev.Compiler, "compile_cached", "compile", on_compile)

    t0 = time.perf_counter()
    lm = build_llm(cfg.model, precision=t.precision, seed=t.seed)
    model, mc = lm.model, lm.config
    params = trainable_params(model, cfg.method, LoRASpec.from_section(cfg.lora.model_dump()), t.seed, precision=t.precision)
    build_s = time.perf_counter() - t0
    B, T = t.micro_batch_size, cfg.data.seq_len
    trainer = Trainer(params, lm_loss(model, t.activation_checkpointing, t.activation_checkpointing_k),
                      EngineConfig(lr=t.lr, total_steps=10, grad_clip=t.grad_clip, precision=t.precision,
                                   weight_decay=t.weight_decay))
    batches = make_batches(1, 1, B, T, mc.vocab_size)
    ph.t.clear(), ph.c.clear(), ph.n.clear(), ph.kernel_names.clear()
    scheduled.clear()
    ph.src_bytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    err = None
    try:
        trainer.step(batches[0])
    except Exception as e:   # NULL reads zeros: a non-finite check may trip; the phases are still measured
        err = f"{type(e).__name__}: {str(e)[:200]}"
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lower = ph.t["lower_and_compile"] - ph.t["compile"]
    rec = {
        "device": Device.DEFAULT, "config": cfg.model.config, "n_layers": mc.n_layers, "method": cfg.method,
        "precision": t.precision, "batch": B, "seq_len": T, "build_s": round(build_s, 2),
        "first_step_wall_s": round(wall, 2),
        "schedule_s": round(ph.t["schedule"], 2), "schedule_calls": ph.n["schedule"],
        "lower_s": round(lower, 2), "compile_s": round(ph.t["compile"], 2),
        "graph_build_and_other_s": round(wall - ph.t["schedule"] - ph.t["lower_and_compile"], 2),
        "cpu_s": {"first_step": round(cpu, 2), "schedule": round(ph.c["schedule"], 2),
                  "lower": round(ph.c["lower_and_compile"] - ph.c["compile"], 2), "compile": round(ph.c["compile"], 2),
                  "graph_build_and_other": round(cpu - ph.c["schedule"] - ph.c["lower_and_compile"], 2)},
        "load_average_1m": round(os.getloadavg()[0], 1),
        "kernels_scheduled": sum(scheduled), "kernels_per_schedule": scheduled,
        "programs_lowered": ph.n["lower_and_compile"], "programs_compiled": ph.n["compile"],
        "source_bytes_compiled": ph.src_bytes,
        "kernel_kinds": dict(ph.kernel_names.most_common(a.top)),
        "step_error": err, "executes": not Device.DEFAULT.startswith("NULL"),
        "env": {k: os.environ[k] for k in ("DEV", "CACHELEVEL", "BEAM", "PARALLEL", "EMULATED_DTYPES") if k in os.environ},
    }
    print(json.dumps(rec), flush=True)
    if a.out:
        a.out.write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
