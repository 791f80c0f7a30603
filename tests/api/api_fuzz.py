"""Seeded fuzzing of the HTTP API (run against a real `zpctl serve` by tests/api/test_hardening.py): 320 requests
built from valid bodies
and queries of every mutating route and the offset/limit/timeout queries of the read routes, mutated as JSON
trees (hostile values, deleted and added keys), as raw bytes (NaN, Infinity, 1e400, lone surrogates, deep
nesting, broken UTF-8) and as query strings. Every answer must be a 2xx or 4xx with a JSON error, never a 5xx
or a dropped connection; afterwards the server still answers health, lists its jobs and its audit chain
verifies. Job bodies keep `dry_run: true`, so nothing trains."""
from __future__ import annotations

import json
import random
from urllib.parse import quote

import yaml

from tests.fuzz.corpus import REPO, _mutate_tree, mutate_bytes

N = 320
SEED = 2500


def seeds() -> list[tuple[str, str, object]]:
    tiny = yaml.safe_load((REPO / "configs" / "llm" / "tiny_lora.yaml").read_text())
    job = lambda **kw: ("POST", "/v1/jobs", {"dry_run": True, **kw})  # noqa: E731
    return [
        job(kind="status", args={"what": "version"}, resources={"num_cpus": 1}),
        job(kind="train", config=tiny, args={"overrides": ["train.steps=2", "train.lr=1e-3"]}),
        job(kind="train", config_path="configs/none.yaml"),
        job(kind="eval", args={"model": "smollm2-135m", "tasks": ["mmlu_dev"], "limit": 2, "batch_size": 4}),
        job(kind="redteam", args={"model": "smollm2-135m", "generations": 1, "max_tokens": 4, "top_p": 0.9}),
        job(kind="export", args={"model": "smollm2-135m", "format": "gguf", "parity_seqs": 2}),
        job(kind="bench", config=tiny, args={"steps": 2, "repeats": 1}),
        job(kind="resume", args={"run": "llm_finetune-none"}),
        ("POST", "/v1/datasets", {"path": "corpus", "name": "corpus", "license": "CC0-1.0", "source_type": "public"}),
        ("POST", "/v1/datasets/corpus/approve", {"note": "ok", "accept_review": "fine"}),
        ("POST", "/v1/datasets/corpus/reject", {"reason": "unclear"}),
    ]


QUERIES = ["/v1/jobs?limit={}&offset={}", "/v1/audit?limit={}&offset={}", "/v1/jobs/{}/logs?offset={}",
           "/v1/runs/{}/metrics?offset={}", "/v1/jobs?state={}&limit={}", "/v1/runs/{}/checkpoints?verify={}"]
QUERY_VALUES = ["0", "1", "-1", "1e400", "nan", "inf", "99999999999999999999", str(2**63), "%00", "..%2F..", "%ED%A0%80",
                "abc", "", "true", "1000000", "\u00e9", "%FF"]
RAW_BODIES = [b'{"kind":"status","dry_run":true,"resources":{"num_cpus":NaN}}', b'{"kind":"status","dry_run":true,"x":1e400}',
              b'{"kind":"\\ud800","dry_run":true}', b'{"kind":"status","dry_run":true,"args":{"\\udfff":1}}',
              b"[" * 5000 + b"]" * 5000, b'{"kind":"status","dry_run":Infinity}', b"\xff\xfe{}", b"", b"null", b"[]",
              b'{"kind":"status","dry_run":true,"resources":{"num_cpus":-Infinity}}', b'"just a string"',
              b'{"kind":"status","dry_run":true,"dry_run_hold_s":' + b"9" * 5000 + b"}"]


def requests_for(rng: random.Random, toks: dict) -> list[tuple[str, str, bytes | None, str]]:
    out = []
    base = seeds()
    for i in range(N):
        r = rng.random()
        token = toks[rng.choice(["submitter", "approver", "admin", "submitter"])]
        if r < 0.45:
            method, path, body = rng.choice(base)
            body = _mutate_tree(rng, body)
            if isinstance(body, dict) and path == "/v1/jobs":
                body["dry_run"] = True
            out.append((method, path, json.dumps(body).encode(), token))
        elif r < 0.65:
            method, path, body = base[0]       # status: the cheapest job, should a mutation drop dry_run
            out.append((method, path, mutate_bytes(rng, json.dumps(body).encode(), 200), token))
        elif r < 0.75:
            out.append(("POST", "/v1/jobs", rng.choice(RAW_BODIES), token))
        elif r < 0.95:
            q = rng.choice(QUERIES).format(*(quote(rng.choice(QUERY_VALUES), safe="%") for _ in range(2)))
            out.append(("GET", q, None, toks["approver"]))
        else:
            jid = quote(rng.choice(["job-x", "..", "a" * 300, "%00", "\u00e9"]), safe="%")
            out.append(("POST", f"/v1/jobs/{jid}/{rng.choice(['cancel', 'resume'])}", b"{}", token))
    return out
