"""An eval split over Ray workers, with results identical to one process (`zpctl eval ... --ray-workers N`).

The driver does everything a one-process eval does (tasks, requests, the batch plan, metrics, results.json)
except the forward passes. `LMScorer._score` plans which inputs share a batch and at which padded shape; a
request's log-likelihood depends on that plan (the padded shape picks the kernels), so the plan is made once,
here, and whole batches go to the workers round-robin. Each worker is a Ray actor that opens the same model with
the same scorer settings and runs `LMScorer._forward_batch` on the batches it is given; the driver puts the
outputs back in plan order and computes every metric once. Generation tasks go out one document at a time.
The same bits come back as from a one-process run, so results.json has the same figures and the per-sample
files are the same (tests/orchestrator/test_ray.py checks both against a one-process run).

Workers read the model from the path the driver sees and the compile cache from $ZP_CACHE: the same
shared-filesystem assumption as the Ray executor (docs/scale-out.md). Ray is imported lazily (an optional extra).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tinygrad.helpers import NUM_CPU_THREADS

from ..engine import jitcache
from ..errors import ZeropointError
from ..evals.harness import VISION_TASKS, run_eval
from ..evals.scoring import LMScorer
from ..models.llm import open_lm

# tinygrad settings that change which kernels are built (and so the bits), and the project's own
ENV_PREFIXES = ("ZP_",)
ENV_KEYS = ("DEV", "PYTHONPATH", "NOOPT", "BEAM", "PARALLEL", "JIT", "EMULATED_DTYPES", "NUM_CPU_THREADS")
READY_TIMEOUT_S = 600.0


class RayEvalError(ZeropointError):
    pass


class ScoringWorker:
    """One Ray actor: the model opened once, scoring whole batches of the driver's plan."""

    def __init__(self, model_ref: str, max_length: int, batch_size: int):
        t0 = time.perf_counter()
        lm = open_lm(model_ref)
        self.scorer = LMScorer(lm.model, lm.tokenizer, max_length=max_length, batch_size=batch_size)
        self.tokenizer = lm.tokenizer
        self.load_s = round(time.perf_counter() - t0, 3)

    def info(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "load_s": self.load_s}

    def get_tokenizer(self):
        return self.tokenizer

    def forward(self, rows: list[list[int]], W: int, finals: list[list[int]]):
        before = dict(self.scorer.stats)
        tok_lp, am, cand_lp, W = self.scorer._forward_batch(rows, W, finals)
        delta = {k: self.scorer.stats[k] - before[k] for k in ("batches", "forward_passes", "tokens_forwarded",
                                                               "tokens_padded")}
        return tok_lp, am, cand_lp, W, delta

    def generate(self, context: str, until: list[str], max_gen_toks: int) -> str:
        return self.scorer.generate_until(context, until, max_gen_toks)

    def summary(self) -> dict:
        s = self.scorer.stats
        return {**self.info(), "batches": s["batches"], "forward_passes": s["forward_passes"],
                "generations": s.get("generations", 0), "first_batch_s": s["first_batch_s"],
                "warm_start": jitcache.summary()}


class RayScorer(LMScorer):
    """`LMScorer` whose forward passes run on Ray actors; planning and bookkeeping stay in the driver."""

    def __init__(self, actors: list, tokenizer, *, address: str | None, max_length: int, batch_size: int):
        super().__init__(None, tokenizer, max_length=max_length, batch_size=batch_size)
        self.actors = actors
        self.address = address

    def forward_batches(self, batches, counts, progress=None):
        import ray
        refs = [self.actors[i % len(self.actors)].forward.remote(rows, W, fin)
                for i, (rows, W, fin) in enumerate(batches)]   # all submitted now; each actor runs its own in order
        for i, (ref, n) in enumerate(zip(refs, counts)):
            tok_lp, am, cand_lp, W, delta = ray.get(ref)
            for k, v in delta.items():
                self.stats[k] += v
            if progress:
                progress(n)
            yield tok_lp, am, cand_lp, W

    def generate_many(self, requests, progress=None):
        import ray
        refs = [self.actors[i % len(self.actors)].generate.remote(*r) for i, r in enumerate(requests)]
        out = []
        for ref in refs:
            out.append(ray.get(ref))
            if progress:
                progress(1)
        self.stats["generations"] = self.stats.get("generations", 0) + len(out)
        return out

    def fanout(self) -> dict:
        import ray
        return {"executor": "ray", "address": self.address, "workers": ray.get([a.summary.remote() for a in self.actors]),
                "split": "the driver's batch plan, whole batches round-robin (generation: one document each)"}


def _worker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k in ENV_KEYS or k.startswith(ENV_PREFIXES)}
    src = str(Path(__file__).resolve().parents[2])   # the zeropoint the driver runs, first on the workers' path
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["NUM_CPU_THREADS"] = str(NUM_CPU_THREADS.value)
    return env   # NUM_CPU_THREADS: kernels are split per thread count; the driver's, everywhere


def run_eval_on_ray(model_ref: str, task_refs: list[str], *, workers: int, address: str | None = None,
                    max_length: int = 2048, batch_size: int = 8, **kw) -> dict:
    """`evals.harness.run_eval` with the scoring split over `workers` Ray actors (1 CPU each) on the cluster at
    `address` (a GCS address host:port, "auto", or None: $RAY_ADDRESS, else a new local Ray)."""
    if workers < 1:
        raise RayEvalError(f"--ray-workers must be at least 1, got {workers}")
    if address and address.startswith(("http://", "https://")):
        raise RayEvalError(f"{address} is a Ray dashboard (Jobs API) address; the eval fan-out connects to the "
                           "cluster itself: pass its GCS address, host:port (the --port of `ray start --head`)")
    vision = [t for t in task_refs if t in VISION_TASKS]
    if vision:
        raise RayEvalError(f"{vision} are not split over Ray (only language-model tasks are); run them without "
                           "--ray-workers")
    try:
        import ray
    except ImportError:
        raise RayEvalError("--ray-workers needs Ray: pip install 'ray[default]==2.60.0'") from None
    if kw.get("model") is not None or kw.get("scorer") is not None:
        raise RayEvalError("a Ray eval opens the model on its workers from model_ref; pass no model or scorer")
    ref = str(Path(model_ref).resolve()) if Path(model_ref).exists() else model_ref   # workers' cwd differs
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address, runtime_env={"env_vars": _worker_env()}, log_to_driver=False,
                 include_dashboard=False if address is None else None, configure_logging=False)
    actors = []
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers > cpus:
            raise RayEvalError(f"{workers} Ray workers need {workers} CPUs; the cluster at {address or 'local'} "
                               f"has {cpus:g}. Use --ray-workers {int(cpus)} or add nodes")
        actor_cls = ray.remote(num_cpus=1)(ScoringWorker)
        actors = [actor_cls.remote(ref, max_length, batch_size) for _ in range(workers)]
        ready, pending = ray.wait([a.info.remote() for a in actors], num_returns=workers, timeout=READY_TIMEOUT_S)
        if pending:
            raise RayEvalError(f"{len(pending)} of {workers} Ray workers did not start within {READY_TIMEOUT_S:g} s "
                               "(busy cluster?); check `ray status`")
        ray.get(ready)   # a worker that failed to open the model raises its error here
        tok = ray.get(actors[0].get_tokenizer.remote())
        scorer = RayScorer(actors, tok, address=address, max_length=max_length, batch_size=batch_size)
        return run_eval(model_ref, task_refs, max_length=max_length, batch_size=batch_size, scorer=scorer, **kw)
    finally:
        for a in actors:
            ray.kill(a)
        if connected_here:
            ray.shutdown()
