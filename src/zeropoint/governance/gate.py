"""The training gate: every recipe calls `require_approved` before it reads a byte of data.

It trusts nothing it did not just check: the dataset must be approved, the approval must be for exactly the
file list now in the manifest, every file is re-hashed (a fast path on size/mtime would trust a clock anyone can
set, so the gate pays for the full SHA-256), and if the policy changed since approval the license and source
rules are evaluated again. The use is appended to the audit log.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from .audit import append_event
from .manifest import (
    DatasetChanged,
    GovernanceError,
    NotApproved,
    _check_files,
    changed_message,
    evaluate,
    files_digest,
    get_dataset,
)
from .policy import load_policy, note_policy


class PolicyChanged(GovernanceError):
    pass


def require_approved(names: list[str], *, actor: str, purpose: str, run_id: str | None = None,
                     progress: Callable[[int], None] | None = None, manifest: Path | str | None = None) -> list[dict]:
    """Check every dataset in `names`; return the records a run stores in `run.json` and reads data from.

    Raises NotApproved / DatasetChanged / PolicyChanged (ZeropointError subclasses) naming the dataset or file
    and the fix. Nothing is returned unless every dataset passes."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise GovernanceError("no datasets named; a training run must name the approved datasets it reads")
    pol = None
    records = []
    for name in names:
        ds = dict(get_dataset(name, manifest), name=name)
        appr = ds.get("approval") or {}

        def refuse(exc: GovernanceError, why: str):
            append_event(actor, "training_use", f"dataset:{name}",
                         {"purpose": purpose, "run_id": run_id, "refused": why}, "refused")
            raise exc

        if appr.get("status") != "approved":
            st = appr.get("status", "pending")
            refuse(NotApproved(f"dataset {name!r} is {st}, not approved; "
                               + (f"run `zpctl data scan {name}` then `zpctl data approve {name} --approver WHO`"
                                  if st != "rejected" else f"it was rejected ({appr.get('reason')}); fix the data, "
                                  f"re-register and approve it with `zpctl data approve {name} --approver WHO`")),
                   f"status {st}")
        if appr.get("dataset_sha256") != ds["sha256"] or files_digest(ds["files"]) != ds["sha256"]:
            refuse(NotApproved(f"dataset {name!r}: the approval is for different contents than the manifest lists "
                               f"(manifest edited or re-registered); run `zpctl data approve {name} --approver WHO`"),
                   "approval does not match manifest")
        problems = _check_files(name, ds["files"], progress)
        if problems:
            refuse(DatasetChanged(changed_message(name, problems)), f"{len(problems)} file(s) changed or missing")
        if pol is None:
            pol, src = load_policy()
            note_policy(pol, src, actor)
        if appr.get("policy_sha256") != pol.sha256():
            # the policy changed after approval: license and source rules must still hold (PII keeps its review)
            bad = [c for c in evaluate(ds, pol) if c["outcome"] == "deny" and not c["rule"].startswith("pii")]
            if bad:
                refuse(PolicyChanged(f"dataset {name!r} was approved under policy {appr.get('policy_version')} but the "
                                     f"current policy {pol.version} denies it: " + "; ".join(
                                         f"{c['rule']}: {c['detail']}" for c in bad)
                                     + f"; change the policy back or re-approve with `zpctl data approve {name}`"),
                       "current policy denies it")
        records.append({
            "name": name, "version": ds["version"], "license": ds["license"]["expression"], "sha256": ds["sha256"],
            "files": [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in ds["files"]],
            "sample_count": ds["sample_count"], "approved_by": appr.get("approver"),
            "approved_at": appr.get("time"), "policy_version": appr.get("policy_version"),
        })
    for r in records:
        append_event(actor, "training_use", f"dataset:{r['name']}",
                     {"purpose": purpose, "run_id": run_id, "sha256": r["sha256"], "files": len(r["files"]),
                      "version": r["version"]})
    return records


def read_verified(file_record: dict) -> bytes:
    """Read one gated file and check its SHA-256 on the bytes actually read, closing the gap between the gate's
    check and the recipe's read (a file swapped in between is refused, not trained on)."""
    p = Path(file_record["path"])
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DatasetChanged(f"file {p} cannot be read since approval ({e}); restore it and run `zpctl data verify`") from None
    if hashlib.sha256(data).hexdigest() != file_record["sha256"]:
        raise DatasetChanged(f"file {p} changed between the training gate's check and this read; restore it, or "
                             "re-register, scan and approve the dataset again")
    return data
