"""`python counted_zpctl.py <zpctl args>`: zpctl with tinygrad's own kernel compiler and scheduler wrapped.

Counts calls into tinygrad's lowering (`tinygrad.codegen.do_to_program`: AST -> optimized, rendered program),
its compiler (`Compiler.compile_cached`: source -> machine code, disk cache included) and its scheduler
(`tinygrad.schedule.create_linear_with_vars`, as Tensor.realize calls it) from process start to the end of the
first optimizer step, and writes them, with that step's loss, as JSON to $COUNTS_OUT. Nothing of Zeropoint's own
bookkeeping is consulted."""
import json
import os
import sys
import time

import tinygrad.codegen as codegen
import tinygrad.device as device
import tinygrad.schedule as schedule
import tinygrad.tensor as tensor

T0 = time.perf_counter()
# Device bring-up first: the CPU device lowers and compiles its 4 command-queue helpers (signal, wait, timestamp,
# worker) in CPUDevice.__init__, in every process, before any model code runs. Everything after it is counted.
device.Device[device.Device.DEFAULT]
counts = {"lower": 0, "compile": 0, "schedule": 0, "lower_s": 0.0, "schedule_s": 0.0}


def _counted(fn, name):
    def wrapper(*a, **k):
        counts[name] += 1
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            if f"{name}_s" in counts:
                counts[f"{name}_s"] += time.process_time() - t
    return wrapper


codegen.do_to_program = _counted(codegen.do_to_program, "lower")
device.Compiler.compile_cached = _counted(device.Compiler.compile_cached, "compile")
tensor.create_linear_with_vars = _counted(schedule.create_linear_with_vars, "schedule")   # the name Tensor.realize calls
schedule.create_linear_with_vars = tensor.create_linear_with_vars

from zeropoint.engine import trainer  # noqa: E402

_step, _done = trainer.Trainer.step, []


def step(self, micro_batches):
    st = _step(self, micro_batches)
    if not _done:
        _done.append(1)
        with open(os.environ["COUNTS_OUT"], "w") as f:
            json.dump({**counts, "loss": repr(st.loss), "first_step_s": st.step_s,
                       "to_first_step_s": time.perf_counter() - T0}, f)
    return st


trainer.Trainer.step = step

from zeropoint.cli.main import main  # noqa: E402

sys.argv = ["zpctl", *sys.argv[1:]]
main()
