"""Turning a job request (kind, config, args) into a validated, stored job whose command is a `zpctl` call.

Validation happens here, once, for every front end (API, `zpctl jobs submit`): recipe configs go through the
same typed classes as `zpctl train` (`config.validate`), names and paths are confined to the data root, and the
config the job will run is written into the job's directory so what ran is what was hashed.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field

from ..config import (
    BatchSize,
    Seed,
    StrictModel,
    apply_overrides,
    check_values,
    config_dict,
    config_hash,
    read_yaml,
    validate,
)
from ..errors import ConfigError, ZeropointError
from ..evidence import effective_status, load_run
from ..export.formats import LLM_FORMATS
from ..governance.manifest import get_dataset
from ..hashing import sha256_json
from ..workspace import atomic_write_text, workspace
from .store import Job, JobStore, new_job_id

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DRY_RUN_HOLD_S = 30.0


class PathRejected(ZeropointError):
    """A name or path in a request points outside the data root (`..`, absolute, odd characters)."""


def safe_name(value: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise PathRejected(f"{what} {value!r} is not allowed: use letters, digits, '.', '_' or '-' "
                           "(no '/', no '..', at most 128 characters)")
    return value


# the appliance's own state under $ZP_HOME: signing key, job store and tokens, manifest and audit log. Never data,
# whatever the data root is (by default it is $ZP_HOME itself).
PRIVATE_DIRS = ("keys", "jobs", "datasets")


def data_root() -> Path:
    """Where request paths may point: $ZP_DATA_ROOT (`zpctl serve --data-root`), else the workspace root."""
    return Path(os.environ.get("ZP_DATA_ROOT") or workspace().root).resolve()


def private_dirs() -> list[Path]:
    root = workspace().root.resolve()
    return [root / d for d in PRIVATE_DIRS]


def _private(full: Path) -> Path | None:
    return next((d for d in private_dirs() if full == d or d in full.parents), None)


def confine(path: str, what: str = "path") -> Path:
    """Resolve a request path under the data root; refuse `..`, absolute paths outside it, symlink escapes and the
    appliance's private directories."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise PathRejected(f"{what} must be a non-empty path relative to the data root {data_root()}")
    root = data_root()
    p = Path(path)
    if ".." in p.parts:
        raise PathRejected(f"{what} {path!r} contains '..'; give a path inside the data root {root}")
    full = (p if p.is_absolute() else root / p).resolve()
    if full != root and root not in full.parents:
        raise PathRejected(f"{what} {path!r} is outside the data root {root}; give a path inside it")
    if (d := _private(full)) is not None:
        raise PathRejected(f"{what} {path!r} is inside the appliance's private directory {d} (keys, job store, "
                           "audit log); put data in another directory under the data root")
    return full


def confine_file(file: Path, registered: str) -> None:
    """Refuse a file found inside a registered folder that resolves out of the data root (a symlink) or into the
    appliance's private directories, naming the file and where it leads."""
    root = data_root()
    full = Path(file).resolve()
    if full != root and root not in full.parents:
        raise PathRejected(f"file {file} in {registered!r} resolves to {full}, outside the data root {root}; remove the "
                           "link or copy the data into the data root")
    if (d := _private(full)) is not None:
        raise PathRejected(f"file {file} in {registered!r} is inside the appliance's private directory {d} (keys, "
                           "job store, audit log); register a directory that holds only data")


def jobs_root() -> Path:
    return workspace().root / "jobs"


def zpctl_argv(args: list[str]) -> list[str]:
    """The command line a job runs: this interpreter running the CLI module, so no PATH lookup is needed."""
    return [sys.executable, "-m", "zeropoint.cli.main", *args]


def dry_run_argv(job: Job) -> list[str]:
    return [sys.executable, "-m", "zeropoint.orchestrator.dryrun", job.run_dir]


# ---- kinds --------------------------------------------------------------------------------------------------
# kind -> builder(job_dir, config, args) -> (zpctl args, typed config dict or None). Kinds whose CLI has not
# landed in this build are absent, and submitting one is refused with the list of kinds that exist.

def _recipe_config(raw: dict | None, overrides: list[str] | None, source: str):
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: this job needs a recipe config (a mapping with 'recipe: <name>')")
    raw = apply_overrides(copy.deepcopy(raw), overrides)   # never edit the caller's dict
    name = raw.get("recipe")
    if not name:
        raise ConfigError(f"{source} has no 'recipe' key; add e.g. 'recipe: llm_finetune'")
    # the recipe table imports every recipe (tinygrad, the models, matplotlib): the API server and the job
    # executor import this module at start, so the table is read only when a recipe job is validated
    from ..recipes import recipe_entry
    cls, _ = recipe_entry(name, source)
    return validate(cls, raw, source)


def _build_train(job_dir: Path, raw: dict | None, args: dict):
    cfg = _recipe_config(raw, args.get("overrides"), "job config")
    cfg_path = job_dir / "config.yaml"
    atomic_write_text(cfg_path, yaml.safe_dump(config_dict(cfg), sort_keys=False))
    return ["train", str(cfg_path)], config_dict(cfg), config_hash(cfg)


def _build_resume(job_dir: Path, raw: dict | None, args: dict):
    run = safe_name(args.get("run", ""), "run id")
    if not (workspace().runs / run / "run.json").is_file():
        raise ZeropointError(f"no run {run!r} to resume; list runs with GET /v1/runs or `zpctl runs ls`")
    return ["resume", run], None, None


def _build_status(job_dir: Path, raw: dict | None, args: dict):
    what = args.get("what", "version")
    if what not in ("version", "health", "diag"):
        raise ConfigError(f"status job: 'what' must be version, health or diag (got {what!r})")
    return [what, "--json"], None, None


def _model_ref(value: str, what: str = "model") -> str:
    """A named model (`smollm2-135m`) or a checkpoint directory, which must sit under the data root."""
    if isinstance(value, str) and ("/" in value or value.startswith(".")):
        return str(confine(value, what))
    return safe_name(value, what)


class RedteamArgs(StrictModel):
    model: str
    suite: str = "quick"
    generations: Optional[int] = Field(None, ge=1, le=64)
    max_tokens: Optional[int] = Field(None, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0, le=100)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: Seed = 0
    gate: bool = False
    threshold: list[str] = Field(default_factory=list)


def _build_redteam(job_dir: Path, raw: dict | None, args: dict):
    a = validate(RedteamArgs, args, "redteam job args")
    argv = ["redteam", _model_ref(a.model), "--suite", safe_name(a.suite, "suite"), "--temperature", str(a.temperature),
            "--top-p", str(a.top_p), "--seed", str(a.seed), "--json"]
    if a.generations is not None:
        argv += ["--generations", str(a.generations)]
    if a.max_tokens is not None:
        argv += ["--max-tokens", str(a.max_tokens)]
    if a.gate:
        argv.append("--gate")
    for t in a.threshold:
        if not re.match(r"^[a-z_]+=[0-9.]+$", t):
            raise ConfigError(f"redteam threshold {t!r}: expected FAMILY=MAX_ASR, e.g. jailbreak=0.2")
        argv += ["--threshold", t]
    return argv, None, None


def _build_data_scan(job_dir: Path, raw: dict | None, args: dict):
    name = safe_name(args.get("name", ""), "dataset name")
    get_dataset(name)    # unknown dataset: refuse now, with the fix, not as a failed job later
    return ["data", "scan", name, "--json"], None, None


class EvalArgs(StrictModel):
    model: str
    tasks: list[str] = Field(min_length=1)
    limit: Optional[float] = Field(None, gt=0, le=1e9)
    batch_size: BatchSize = 8
    max_length: int = Field(2048, ge=16, le=131072)
    num_fewshot: Optional[int] = Field(None, ge=0, le=64)
    bootstrap_iters: int = Field(100000, ge=0, le=1_000_000)
    save_baseline: Optional[str] = None


def _build_eval(job_dir: Path, raw: dict | None, args: dict):
    a = validate(EvalArgs, args, "eval job args")
    argv = ["eval", _model_ref(a.model)]
    for t in a.tasks:   # a shipped task name, or a task YAML under the data root
        argv += ["--task", _model_ref(t, "task")]
    argv += ["--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
             "--bootstrap-iters", str(a.bootstrap_iters), "--json"]
    if a.limit is not None:
        argv += ["--limit", str(a.limit)]
    if a.num_fewshot is not None:
        argv += ["--num-fewshot", str(a.num_fewshot)]
    if a.save_baseline:
        argv += ["--save-baseline", safe_name(a.save_baseline, "baseline name")]
    return argv, None, None


class BenchArgs(StrictModel):
    steps: int = Field(5, ge=1, le=1000)
    repeats: int = Field(3, ge=1, le=100)
    warmup: int = Field(2, ge=1, le=100)
    compare: Optional[Literal["torch"]] = None
    beam: Optional[int] = Field(None, ge=1, le=64)
    overrides: list[str] = Field(default_factory=list)


def _build_bench(job_dir: Path, raw: dict | None, args: dict):
    a = validate(BenchArgs, args, "bench job args")
    cfg = _recipe_config(raw, a.overrides, "bench config")
    cfg_path = job_dir / "config.yaml"
    atomic_write_text(cfg_path, yaml.safe_dump(config_dict(cfg), sort_keys=False))
    argv = ["bench", str(cfg_path), "--steps", str(a.steps), "--repeats", str(a.repeats), "--warmup", str(a.warmup),
            "--json"]
    if a.compare:
        argv += ["--compare", a.compare]
    if a.beam is not None:
        argv += ["--beam", str(a.beam)]
    return argv, config_dict(cfg), config_hash(cfg)


# the formats `zpctl export` accepts: the export format table
ExportFormat = Literal[LLM_FORMATS]


class ExportArgs(StrictModel):
    model: str
    format: ExportFormat = "onnx"
    seq_len: Optional[int] = Field(None, ge=1, le=131072)
    parity_seqs: int = Field(4, ge=1, le=256)
    parity_len: int = Field(32, ge=2, le=4096)
    tinygrad_runner: Optional[bool] = None


class ParityArgs(StrictModel):
    original: str
    exported: str = Field(description="artifact path under the data root (e.g. exports/<id>)")
    format: Optional[ExportFormat] = None
    parity_seqs: int = Field(4, ge=1, le=256)
    parity_len: int = Field(32, ge=2, le=4096)
    tinygrad_runner: bool = False


def _build_export(job_dir: Path, raw: dict | None, args: dict):
    a = validate(ExportArgs, args, "export job args")
    argv = ["export", _model_ref(a.model), "--format", a.format, "--parity-seqs", str(a.parity_seqs),
            "--parity-len", str(a.parity_len), "--json"]
    if a.seq_len is not None:
        argv += ["--seq-len", str(a.seq_len)]
    if a.tinygrad_runner is not None:
        argv.append("--tinygrad-runner" if a.tinygrad_runner else "--no-tinygrad-runner")
    return argv, None, None


def _build_parity(job_dir: Path, raw: dict | None, args: dict):
    a = validate(ParityArgs, args, "parity job args")
    argv = ["parity", _model_ref(a.original, "original"), str(confine(a.exported, "exported")),
            "--parity-seqs", str(a.parity_seqs), "--parity-len", str(a.parity_len), "--json"]
    if a.format:
        argv += ["--format", a.format]
    if a.tinygrad_runner:
        argv.append("--tinygrad-runner")
    return argv, None, None


KINDS = {"train": _build_train, "eval": _build_eval, "export": _build_export, "parity": _build_parity,
         "bench": _build_bench, "resume": _build_resume, "status": _build_status, "redteam": _build_redteam,
         "data-scan": _build_data_scan}
ALL_KINDS = ("train", "resume", "status", "eval", "export", "parity", "bench", "redteam", "data-scan")


class Resources(StrictModel):
    """What a job asks of the executor (Ray places it by these; the local executor runs one job per slot)."""
    num_cpus: float = Field(0, ge=0, le=4096)
    num_gpus: float = Field(0, ge=0, le=1024)
    memory: float = Field(0, ge=0, le=2.0**50, description="bytes")


def submit(store: JobStore, kind: str, *, submitter: str, config: dict | None = None, config_path: str | None = None,
           args: dict | None = None, dry_run: bool = False, dry_run_hold_s: float = 0.0,
           resources: dict | None = None, idempotency_key: str | None = None, executor: str = "local") -> tuple[Job, bool]:
    """Validate and enqueue a job. Returns (job, created); an idempotency key seen before returns that job."""
    if idempotency_key is not None:
        if not re.match(r"^[A-Za-z0-9._:-]{1,128}$", idempotency_key):
            raise ZeropointError("idempotency key must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        prior = store.get_by_key(idempotency_key) if hasattr(store, "get_by_key") else None
        if prior is not None:
            return prior, False
    if kind not in KINDS:
        missing = f" ({kind!r} is not available in this build)" if kind in ALL_KINDS else ""
        raise ZeropointError(f"unknown job kind {kind!r}{missing}; available kinds: {', '.join(sorted(KINDS))}")
    if args is not None and not isinstance(args, dict):
        raise ConfigError(f"args must be a mapping of kind arguments, not {type(args).__name__}")
    args = dict(args or {})
    if config is not None and config_path is not None:
        raise ConfigError("give either 'config' (inline) or 'config_path', not both")
    if config_path is not None:
        config = read_yaml(confine(config_path, "config_path"))
    # nothing that cannot be stored and served back as JSON (NaN, inf, lone surrogates) gets past here
    check_values({"args": args, "config": config, "resources": resources}, "job request")
    resources = validate(Resources, dict(resources or {}), "resources").model_dump(exclude_unset=True)
    if not (isinstance(dry_run_hold_s, (int, float)) and 0 <= float(dry_run_hold_s) <= MAX_DRY_RUN_HOLD_S):
        raise ConfigError(f"dry_run_hold_s must be a number between 0 and {MAX_DRY_RUN_HOLD_S}")

    job_id = new_job_id()
    job_dir = jobs_root() / job_id
    job_dir.mkdir(parents=True, exist_ok=False)
    try:
        zp_args, cfg, cfg_sha = KINDS[kind](job_dir, config, args)
        inputs = {"kind": kind, "args": args, "config": cfg, "dry_run": bool(dry_run), "resources": resources}
        job = Job(id=job_id, kind=kind, argv=zp_args, submitter=submitter, config=cfg, config_sha256=cfg_sha,
                  inputs_sha256=sha256_json(inputs),
                  args=dict(args, dry_run_hold_s=float(dry_run_hold_s)) if dry_run else args,
                  dry_run=bool(dry_run), resources=resources, executor=executor, idempotency_key=idempotency_key,
                  run_dir=str(job_dir))
        atomic_write_text(job_dir / "job.json", json.dumps(job.to_dict(), indent=2, default=str) + "\n")
        stored, created = store.create(job)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)     # a refused job leaves nothing behind
        raise
    if not created:   # lost a race on the idempotency key: drop our directory, keep the first job
        shutil.rmtree(job_dir, ignore_errors=True)
    return stored, created


def resubmit_resume(store: JobStore, job_id: str, *, submitter: str, idempotency_key: str | None = None,
                    executor: str = "local") -> tuple[Job, bool]:
    """Queue `zpctl resume RUN` for an interrupted, cancelled or failed train job: it continues from its last checkpoint."""
    job = store.get(safe_name(job_id, "job id"))
    if job is None:
        raise ZeropointError(f"no job {job_id!r}; list jobs with `zpctl jobs ls`")
    if job.kind not in ("train", "resume") or job.state not in ("interrupted", "failed", "cancelled") or job.dry_run:
        raise ZeropointError(f"job {job.id} is a {'dry-run ' if job.dry_run else ''}{job.kind} job in state {job.state}; "
                             "only interrupted, cancelled or failed train jobs can be resumed")
    run = (job.run_ids or [None])[-1] if job.kind == "train" else job.args.get("run")
    if not run:
        raise ZeropointError(f"job {job.id} recorded no run to resume (it stopped before its recipe started); "
                             "submit the train job again instead")
    status = effective_status(load_run(run).record)
    if status == "succeeded":
        raise ZeropointError(f"run {run} of job {job.id} already finished (succeeded); nothing to resume - its "
                             "checkpoints are under runs/" + run)
    return submit(store, "resume", submitter=submitter, args={"run": run, "resumes_job": job.id},
                  idempotency_key=idempotency_key, executor=executor)
