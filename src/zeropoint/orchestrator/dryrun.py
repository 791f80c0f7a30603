"""The process a `--dry-run` job runs: real job machinery, no compute.

It re-reads the job's stored record and config from disk, checks the config still hashes to what was
recorded at submission, prints the command the job would have run, optionally holds for a few seconds (so
load tests can catch jobs mid-run), and exits 0 - or 1 if the stored config does not match its hash.
Only stdlib, yaml and hashing are imported so hundreds of these start quickly.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from ..hashing import sha256_json


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m zeropoint.orchestrator.dryrun JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    job = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    print(f"dry-run job {job['id']} kind={job['kind']}")
    print("would run: zpctl " + " ".join(job["argv"]))
    if job.get("config_sha256"):
        cfg = yaml.safe_load((job_dir / "config.yaml").read_text(encoding="utf-8"))
        got = sha256_json(cfg)
        if got != job["config_sha256"]:
            print(f"config.yaml hashes to {got}, job recorded {job['config_sha256']}: refusing", file=sys.stderr)
            return 1
        print(f"config sha256 {got} verified")
    hold = float((job.get("args") or {}).get("dry_run_hold_s") or 0)
    if hold > 0:
        print(f"holding {hold:.2f}s", flush=True)
        time.sleep(hold)
    print("dry-run ok", flush=True)
    return 0


if __name__ == "__main__":
    from .lifeline import die_with_supervisor
    die_with_supervisor()
    sys.exit(main(sys.argv[1:]))
