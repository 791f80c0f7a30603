"""Ray executor against a real local Ray head (`ray start --head` on 127.0.0.1), driven through the real API.

Slow: a Ray head takes ~10-50 s to start on a loaded 2-core box and ~2 GB of memory.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from zp_server import Server, free_port, governed_sotu, make_token  # noqa: E402  (the API test helpers)

from raytools import head_pids, start_head, stop_head  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "llm" / "tiny_full.yaml"

pytestmark = pytest.mark.slow
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")


@pytest.fixture(scope="module")
def ray_cluster():
    """One Ray head for the module (starting one costs 30-180 s on a loaded 2-core box): (temp dir, dashboard
    address for the Jobs API, GCS address for drivers)."""
    pytest.importorskip("ray", reason="ray[default] is not installed in this environment")
    # a short path: Ray's unix socket paths must stay under 107 bytes
    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="zpray", dir="/tmp"))
    try:
        address = start_head(tmp)
        yield tmp, address, f"127.0.0.1:{(tmp / 'zp_gcs_port').read_text().strip()}"
    finally:
        stop_head(tmp)
        assert not head_pids(tmp), "every process of the test's Ray head must be gone"
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(ray_cluster):
    return ray_cluster[1]


def test_tiny_train_job_on_ray_succeeds_with_logs_through_the_api(ray_head, zp_home):
    import yaml
    s = Server(zp_home, free_port(), extra_env={"ZP_EXECUTOR": "ray", "ZP_RAY_ADDRESS": ray_head}).start()
    try:
        tok, viewer = make_token("submitter", home=zp_home), make_token("viewer", home=zp_home)
        governed_sotu(s, tok, make_token("approver", home=zp_home))
        cfg = yaml.safe_load(TINY.read_text())
        st, job, _ = s.request("POST", "/v1/jobs", {"kind": "train", "config": cfg, "resources": {"num_cpus": 1}},
                               token=tok)
        assert st == 201, job
        deadline = time.monotonic() + 420
        while True:
            st, job, _ = s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)
            if job["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(1)
        st, log, _ = s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)
        assert job["state"] == "succeeded", f"{job}\n{log[-3000:]}"
        assert job["executor"] == "ray" and job["external_id"] == job["id"] and job["exit_code"] == 0
        assert "Running entrypoint for job " + job["id"] in log, "the log must come from Ray's job manager"
        assert "zeropoint.cli.main train" in log
        # the run the Ray-launched process recorded is linked to the job and visible through /v1/runs
        assert job["runs"] and job["runs"][0]["status"] == "succeeded"
        st, runs, _ = s.request("GET", "/v1/runs", token=viewer)
        assert job["runs"][0]["id"] in {r["id"] for r in runs["runs"]}
        st, run, _ = s.request("GET", f"/v1/runs/{job['runs'][0]['id']}", token=viewer)
        assert run["run"]["job_id"] == job["id"] and len(run["loss_curve"]) == cfg["train"]["steps"]
    finally:
        s.stop()


def test_cancel_on_ray_maps_stop_back_to_cancelled(ray_head, zp_home):
    s = Server(zp_home, free_port(), extra_env={"ZP_EXECUTOR": "ray", "ZP_RAY_ADDRESS": ray_head}).start()
    try:
        tok, viewer = make_token("submitter", home=zp_home), make_token("viewer", home=zp_home)
        st, job, _ = s.request("POST", "/v1/jobs", {"kind": "status", "dry_run": True, "dry_run_hold_s": 30}, token=tok)
        assert st == 201
        deadline = time.monotonic() + 120
        # an empty body (the Ray job has written no log yet: seen at load 6-8) reads as "" here
        while "holding" not in (s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)[1] or ""):
            assert time.monotonic() < deadline, s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1]
            time.sleep(0.5)
        assert s.request("POST", f"/v1/jobs/{job['id']}/cancel", token=tok)[0] == 200
        while (j := s.request("GET", f"/v1/jobs/{job['id']}", token=viewer)[1])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert j["state"] == "cancelled" and "STOPPED" in j["error"]
        log = s.request("GET", f"/v1/jobs/{job['id']}/logs", token=viewer)[1]
        assert "would run: zpctl version --json" in log and "ended STOPPED" in log
    finally:
        s.stop()


def test_eval_split_over_two_ray_workers_matches_one_process(ray_cluster, zp_home, tmp_path):
    """Issue 23: the same eval in one process and over 2 Ray workers on 127.0.0.1 writes the same figures and the
    same per-sample files. Both workers score part of the batch plan; a batch lost, duplicated or put back in the
    wrong place changes a figure or a sample line."""
    import json

    from tests.models.tiny import random_llama
    from zeropoint.evals.harness import eval_dir, run_eval
    from zeropoint.models.hf import save_hf_dir
    from zeropoint.models.llama import get_config
    from zeropoint.models.tokenizer import ByteTokenizer
    from zeropoint.orchestrator.ray_eval import run_eval_on_ray

    cfg = get_config("tiny", vocab_size=257)
    model_dir = save_hf_dir(random_llama(cfg, seed=5), cfg, ByteTokenizer(), tmp_path / "tiny-hf")
    # 8 questions x 3 choices: 24 inputs in six batches of 4 at one padded shape (T=32); 4 texts: one batch at
    # T=64. Seven batches, two shapes, two compiles in the one-process run (the workers load them from $ZP_CACHE).
    words = ["red", "green", "blue", "a long yellow", "violet and grey", "black"]
    docs = [{"q": "q" * (3 + i) + "?", "choices": [words[i % 6], words[(i + 1) % 6], words[(i + 3) % 6]],
             "answer": i % 3} for i in range(8)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "text.jsonl").write_text("".join(
        json.dumps({"text": f"text {i}: " + "the quick brown fox " * 2 + "jumps" * i}) + "\n" for i in range(4)))
    (tmp_path / "mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {tmp_path / "mc.jsonl"}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{ q }}}}\\nA:"
doc_to_choice: "{{{{ choices }}}}"
doc_to_target: answer
metric_list: [{{metric: acc}}, {{metric: acc_norm}}]
""")
    (tmp_path / "ppl.yaml").write_text(f"""task: tiny_ppl
dataset_path: json
dataset_kwargs: {{data_files: {{test: {tmp_path / "text.jsonl"}}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{ text }}}}"
metric_list: [{{metric: word_perplexity}}, {{metric: byte_perplexity}}, {{metric: bits_per_byte}}]
""")
    tasks = [str(tmp_path / "mc.yaml"), str(tmp_path / "ppl.yaml")]
    kw = dict(max_length=64, batch_size=4, bootstrap_iters=200)
    one = run_eval(str(model_dir), tasks, **kw)
    two = run_eval_on_ray(str(model_dir), tasks, workers=2, address=ray_cluster[2], **kw)

    assert {t: r["metrics"] for t, r in two["tasks"].items()} == {t: r["metrics"] for t, r in one["tasks"].items()}
    assert two["tasks"]["tiny_mc"]["n_docs"] == 8 and two["tasks"]["tiny_ppl"]["n_docs"] == 4
    for name in ("tiny_mc", "tiny_ppl"):
        assert (eval_dir(two["eval_id"]) / f"samples_{name}.jsonl").read_bytes() == \
            (eval_dir(one["eval_id"]) / f"samples_{name}.jsonl").read_bytes()
    on_disk = json.loads((eval_dir(two["eval_id"]) / "results.json").read_text())
    assert on_disk["tasks"]["tiny_mc"]["metrics"] == one["tasks"]["tiny_mc"]["metrics"]
    counts = ("requests", "unique_inputs", "batches", "forward_passes", "tokens_forwarded", "tokens_padded")
    assert {k: two["scoring_stats"][k] for k in counts} == {k: one["scoring_stats"][k] for k in counts}
    # really two other processes, each scoring part of the plan
    workers = two["fanout"]["workers"]
    assert len({w["pid"] for w in workers}) == 2 and os.getpid() not in {w["pid"] for w in workers}
    assert all(w["batches"] > 0 for w in workers) and sum(w["batches"] for w in workers) == one["scoring_stats"]["batches"]
    assert "fanout" not in one


@pytest.mark.parametrize("kw, msg", [
    (dict(workers=0), "at least 1"),
    (dict(workers=2, address="http://127.0.0.1:8265"), "GCS address"),
    (dict(workers=2, tasks=["fashion_mnist"]), "not split over Ray"),
])
def test_ray_eval_refuses_bad_settings_before_touching_ray(kw, msg):
    from zeropoint.orchestrator.ray_eval import RayEvalError, run_eval_on_ray
    with pytest.raises(RayEvalError, match=msg):
        run_eval_on_ray("tiny", kw.pop("tasks", ["mmlu_dev"]), **kw)
