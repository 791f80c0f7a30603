"""Shared training engine (model-agnostic): `Trainer` + `EngineConfig` for steps, `fit` for the loop.

See `engine/trainer.py` for the contract: a dict of trainable fp32 tensors, a loss function over one
micro-batch, and batches. LLM and vision recipes use the same API.
"""
from . import cpu_threads, jitcache
from .jitcache import PersistentJit
from .loop import NO_HOOKS, RunHooks, fit, make_progress
from .trainer import (
                      PRECISIONS,
                      EngineConfig,
                      SegmentedLoss,
                      StepStats,
                      Trainer,
                      compute_dtype,
                      device_array,
                      fresh,
                      lr_at,
                      precision_context,
                      write_array,
)

__all__ = ["EngineConfig", "SegmentedLoss", "Trainer", "StepStats", "fit", "make_progress", "RunHooks", "NO_HOOKS",
           "lr_at", "fresh", "compute_dtype", "precision_context", "PRECISIONS", "PersistentJit", "jitcache",
           "cpu_threads", "device_array", "write_array"]
