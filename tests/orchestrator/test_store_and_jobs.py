"""Job store (SQLite WAL), tokens, and job validation - no server, no subprocesses."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from zeropoint.errors import ConfigError, ZeropointError
from zeropoint.orchestrator.jobs import PathRejected, confine, safe_name, submit
from zeropoint.orchestrator.store import Job, SqliteStore, new_job_id


@pytest.fixture
def store(zp_home):
    return SqliteStore()


def test_store_is_wal_and_roundtrips_a_job(store):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    job = Job(id=new_job_id(), kind="status", argv=["version", "--json"], submitter="me", args={"what": "version"},
              config={"a": [1, 2]}, resources={"num_gpus": 1})
    got, created = store.create(job)
    assert created
    back = store.get(job.id)
    assert back == job
    assert store.counts()["queued"] == 1 and store.queue_length() == 1


def test_idempotency_key_returns_the_first_job(store):
    a, created_a = store.create(Job(id=new_job_id(), kind="status", argv=[], submitter="x", idempotency_key="k1"))
    b, created_b = store.create(Job(id=new_job_id(), kind="status", argv=[], submitter="x", idempotency_key="k1"))
    assert created_a and not created_b and b.id == a.id
    assert len(store.list()) == 1


def test_transition_is_compare_and_set_under_contention(store):
    job, _ = store.create(Job(id=new_job_id(), kind="status", argv=[], submitter="x"))
    wins = []

    def claim():
        s = SqliteStore(store.path)     # separate connections, like separate processes
        wins.append(s.transition(job.id, ["queued"], "running"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(wins) == 1, "exactly one claimant may start a job"
    assert store.get(job.id).state == "running"
    assert not store.transition(job.id, ["queued"], "cancelled")
    with pytest.raises(ValueError):
        store.transition(job.id, ["running"], "bogus")


def test_tokens_are_stored_hashed_and_revocable(store):
    tok, secret = store.create_token("ci", "submitter", created_by="test")
    raw = store.path.read_bytes() + (store.path.with_name(store.path.name + "-wal").read_bytes()
                                     if store.path.with_name(store.path.name + "-wal").exists() else b"")
    assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw
    assert store.authenticate(secret).role == "submitter"
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("zp_" + tok.id + "_guess") is None
    assert store.authenticate("") is None
    assert store.revoke_token(tok.id) and not store.revoke_token(tok.id)
    assert store.authenticate(secret) is None
    with pytest.raises(ZeropointError, match="unknown role"):
        store.create_token("x", "root", created_by="t")


def test_safe_name_and_confine_refuse_escapes(zp_home):
    assert safe_name("sotu-2024.v1") == "sotu-2024.v1"
    for bad in ("../etc", "a/b", "..", "", "/abs", "a\x00b", "x" * 200):
        with pytest.raises(PathRejected):
            safe_name(bad)
    (zp_home / "cfg").mkdir()
    assert confine("cfg/a.yaml") == (zp_home / "cfg" / "a.yaml").resolve()
    for bad in ("../outside.yaml", "/etc/passwd", "cfg/../../x", ""):
        with pytest.raises(PathRejected):
            confine(bad)
    (zp_home / "link").symlink_to("/etc")
    with pytest.raises(PathRejected, match="outside the data root"):
        confine("link/passwd")


def test_submit_validates_kind_args_and_resources(store, zp_home):
    with pytest.raises(ZeropointError, match="unknown job kind 'nope'"):
        submit(store, "nope", submitter="t")
    with pytest.raises(ConfigError, match="'what' must be"):
        submit(store, "status", submitter="t", args={"what": "rm -rf"})
    with pytest.raises(ConfigError, match="resources"):
        submit(store, "status", submitter="t", resources={"num_gpus": -1})
    with pytest.raises(PathRejected):
        submit(store, "resume", submitter="t", args={"run": "../../etc"})
    with pytest.raises(ZeropointError, match="no run"):
        submit(store, "resume", submitter="t", args={"run": "train-missing"})
    with pytest.raises(PathRejected):
        submit(store, "train", submitter="t", config_path="../x.yaml")
    with pytest.raises(ConfigError, match="no 'recipe' key"):
        submit(store, "train", submitter="t", config={"model": "x"})
    with pytest.raises(ConfigError, match="unknown recipe"):
        submit(store, "train", submitter="t", config={"recipe": "no_such_recipe"})
    assert store.list() == [], "a refused submission must leave no job behind"
    assert not list((zp_home / "jobs").glob("job-*")), "nor a job directory"
    job, created = submit(store, "status", submitter="t", args={"what": "version"}, idempotency_key="abc")
    assert created and job.argv == ["version", "--json"] and len(job.inputs_sha256) == 64
    again, created2 = submit(store, "status", submitter="t", args={"what": "version"}, idempotency_key="abc")
    assert not created2 and again.id == job.id


def test_interrupted_train_job_resubmits_as_resume_of_its_run(store, zp_home):
    from zeropoint.evidence import start_run
    from zeropoint.orchestrator.jobs import resubmit_resume
    from zeropoint.evidence import RunInterrupted
    with pytest.raises(RunInterrupted):
        with start_run("zpctl train x.yaml", {"recipe": "llm_finetune"}, kind="llm_finetune") as run:
            raise RunInterrupted("signal 15")     # what SIGTERM does inside a recipe
    job = Job(id=new_job_id(), kind="train", argv=["train", "x.yaml"], submitter="t", state="interrupted",
              run_ids=[run.id], run_dir=str(zp_home / "jobs" / "j"))
    store.create(job)
    new, created = resubmit_resume(store, job.id, submitter="t2")
    assert created and new.kind == "resume" and new.argv == ["resume", run.id] and new.args["resumes_job"] == job.id
    with start_run("zpctl train y.yaml", {"recipe": "llm_finetune"}, kind="llm_finetune") as done:
        pass
    finished = Job(id=new_job_id(), kind="train", argv=["train", "y.yaml"], submitter="t", state="interrupted",
                   run_ids=[done.id])
    store.create(finished)
    with pytest.raises(ZeropointError, match="already finished"):
        resubmit_resume(store, finished.id, submitter="t2")
    store.update(job.id, state="succeeded")
    with pytest.raises(ZeropointError, match="only interrupted, cancelled or failed"):
        resubmit_resume(store, job.id, submitter="t2")
    no_run = Job(id=new_job_id(), kind="train", argv=["train", "x.yaml"], submitter="t", state="interrupted")
    store.create(no_run)
    with pytest.raises(ZeropointError, match="recorded no run"):
        resubmit_resume(store, no_run.id, submitter="t2")


def test_eval_and_redteam_args_are_typed_and_confined(store, zp_home):
    job, _ = submit(store, "eval", submitter="t", args={"model": "smollm2-135m", "tasks": ["mmlu_dev"], "limit": 20})
    assert job.argv[:4] == ["eval", "smollm2-135m", "--task", "mmlu_dev"] and job.argv[-2:] == ["--limit", "20.0"]
    (zp_home / "ckpt").mkdir()
    job, _ = submit(store, "eval", submitter="t", args={"model": "ckpt", "tasks": ["sotu_heldout"]})
    assert job.argv[1] == "ckpt"        # a bare name stays a name; paths need a '/'
    job, _ = submit(store, "eval", submitter="t", args={"model": "./ckpt", "tasks": ["sotu_heldout"]})
    assert job.argv[1] == str((zp_home / "ckpt").resolve())
    with pytest.raises(PathRejected):
        submit(store, "eval", submitter="t", args={"model": "../../x", "tasks": ["mmlu_dev"]})
    with pytest.raises(PathRejected):
        submit(store, "eval", submitter="t", args={"model": "smollm2-135m", "tasks": ["/etc/passwd"]})
    with pytest.raises(ConfigError, match="batch_size"):
        submit(store, "eval", submitter="t", args={"model": "m", "tasks": ["t"], "batch_size": 0})
    with pytest.raises(ConfigError, match="unknown key 'shell'"):
        submit(store, "redteam", submitter="t", args={"model": "m", "shell": "rm -rf /"})
    job, _ = submit(store, "redteam", submitter="t", args={"model": "smollm2-135m", "generations": 1, "gate": True})
    assert job.argv[:2] == ["redteam", "smollm2-135m"] and "--gate" in job.argv


def test_export_and_parity_args(store, zp_home):
    job, _ = submit(store, "export", submitter="t", args={"model": "smollm2-135m", "format": "gguf-q8_0"})
    assert job.argv[:4] == ["export", "smollm2-135m", "--format", "gguf-q8_0"] and "--out" not in job.argv
    with pytest.raises(ConfigError, match="format"):
        submit(store, "export", submitter="t", args={"model": "m", "format": "pickle"})
    (zp_home / "exports" / "e1").mkdir(parents=True)
    job, _ = submit(store, "parity", submitter="t", args={"original": "smollm2-135m", "exported": "exports/e1"})
    assert job.argv[:3] == ["parity", "smollm2-135m", str((zp_home / "exports" / "e1").resolve())]
    with pytest.raises(PathRejected):
        submit(store, "parity", submitter="t", args={"original": "m", "exported": "/tmp/evil.onnx"})


def test_export_jobs_accept_every_format_the_pipeline_writes(store, zp_home):
    """One table (export/formats.py) for the pipeline, the CLI and the job API: a format the pipeline can
    write (onnx-int8-wo and int8 included) is a format a job may ask for."""
    from zeropoint.export.pipeline import LLM_FORMATS
    assert {"onnx-int8-wo", "int8"} <= set(LLM_FORMATS)
    for fmt in LLM_FORMATS:
        job, created = submit(store, "export", submitter="t", args={"model": "smollm2-135m", "format": fmt})
        assert created and job.argv[job.argv.index("--format") + 1] == fmt
        parity, _ = submit(store, "parity", submitter="t", args={"original": "smollm2-135m", "exported": "x.onnx",
                                                                 "format": fmt})
        assert parity.argv[parity.argv.index("--format") + 1] == fmt
    with pytest.raises(ConfigError, match="format"):
        submit(store, "export", submitter="t", args={"model": "smollm2-135m", "format": "tflite"})
