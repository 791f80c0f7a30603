"""The evidence bundle: a directory (and a `.tar` of it) whose `bundle.json` lists the SHA-256 of every file and is
signed with the appliance's Ed25519 key (`bundle.sig`, the raw 64-byte signature over bundle.json's bytes).

Layout (paths inside the bundle):
    bundle.json  bundle.sig  appliance.pub  release.json  hardware.json  model_card.json  MODEL_CARD.md
    configs/     release policy as given, the recipe config
    run/         run.json, config.json, metrics.jsonl, loss_curve.csv, perf.json of the training run
    checkpoint/  the checkpoint's manifest (hashes of the weights) and its JSON files
    governance/  the trained datasets' manifest entries, approvals and re-hash results
    eval/ drift/ export/<fmt>/ redteam/ perf/   each gate's reports
    audit/       segment.jsonl (a contiguous run of the audit chain: approval .. training .. release) + head.json

Checked by `release/verify.py`, which needs only this directory (or the tar) and the public key.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path, PurePosixPath

from ..errors import ZeropointError
from ..governance.audit import _head_path, log_path, read_events, verify_chain
from ..hashing import sha256_bytes, sha256_file
from ..workspace import atomic_dir, atomic_write_bytes
from .keys import fingerprint, load_private_key, public_pem
from .verify import EMBEDDED_KEY, FORMAT, MANIFEST, SIGNATURE, safe_relpath


def audit_segment(first_seq: int, last_seq: int) -> tuple[bytes, dict]:
    """Events first_seq..last_seq exactly as stored (bytes), and the head record the verifier checks them against."""
    p = log_path()
    chain = verify_chain(p)
    lines = []
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n > last_seq:
                break
            if n >= first_seq:
                lines.append(raw)
    if not lines:
        raise ZeropointError(f"audit log {p} has no events {first_seq}..{last_seq}")
    first = json.loads(lines[0])
    last = json.loads(lines[-1])
    head_file = _head_path(p)
    chain_head = json.loads(head_file.read_text(encoding="utf-8")) if head_file.is_file() else None
    head = {"first_seq": first["seq"], "last_seq": last["seq"], "last_hash": last["hash"],
            "anchor_prev_hash": first["prev_hash"], "chain_head": chain_head,
            "log_verified": {"ok": chain.ok, "events": chain.events, "reason": chain.reason,
                             "problems": chain.problems}}
    return b"".join(lines), head


def relevant_first_seq(datasets: list[dict], run_id: str, fallback: int) -> int:
    """The earliest event that vouches for the training data: the approval of the exact contents trained on, or
    the training run's use of them; the segment from there to the release shows the order of events."""
    names = {d.get("name"): d.get("sha256") for d in datasets}
    best = fallback
    for ev in read_events():
        res = str(ev.get("resource", ""))
        det = ev.get("details") or {}
        name = res.split(":", 1)[1] if res.startswith("dataset:") else None
        if name in names and ((ev.get("action") == "dataset_approve" and ev.get("outcome") == "ok"
                               and det.get("sha256") == names[name])
                              or (ev.get("action") == "training_use" and det.get("run_id") == run_id)):
            best = min(best, int(ev["seq"]))
    return best


def write_bundle(out: Path, files: dict[str, Path | bytes], meta: dict) -> dict:
    """Write the bundle directory atomically, sign it, tar it. `files`: bundle path -> source file or bytes."""
    key = load_private_key()
    pub_pem, fp = public_pem(key.public_key()), fingerprint(key.public_key())
    out = Path(out)
    if out.exists():
        raise ZeropointError(f"{out} already exists; pass a new --out (nothing was overwritten)")
    with atomic_dir(out) as tmp:
        for rel, src in sorted(files.items()):
            r = safe_relpath(rel)
            if str(r) in (MANIFEST, SIGNATURE):
                raise ZeropointError(f"bundle path {rel} is reserved")
            dest = tmp.joinpath(*r.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            dest.write_bytes(data)
        listing = []
        for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
            rel = p.relative_to(tmp).as_posix()
            listing.append({"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)})
        # the signature is computed over these exact bytes; the verifier never re-serialises them
        (tmp / EMBEDDED_KEY).write_bytes(pub_pem)
        listing.append({"path": EMBEDDED_KEY, "size": len(pub_pem), "sha256": sha256_bytes(pub_pem)})
        listing.sort(key=lambda e: e["path"])
        manifest = {"format": FORMAT, **meta, "public_key_sha256": fp, "signature": {"algorithm": "Ed25519",
                    "file": SIGNATURE, "over": MANIFEST}, "files": listing}
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode() + b"\n"
        (tmp / MANIFEST).write_bytes(body)
        sig = key.sign(body)
        (tmp / SIGNATURE).write_bytes(sig)
        for p in tmp.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
    tar = make_tar(out)
    return {"dir": str(out), "tar": str(tar), "tar_sha256": sha256_file(tar), "files": len(listing) + 2,
            "bundle_sha256": sha256_bytes(body), "public_key_sha256": fp}


def make_tar(d: Path) -> Path:
    """`<dir>.tar` of regular files only, sorted, under one top directory named like the bundle."""
    d = Path(d)
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(q for q in d.rglob("*") if q.is_file()):
            rel = PurePosixPath(d.name) / p.relative_to(d).as_posix()
            info = tarfile.TarInfo(str(rel))
            data = p.read_bytes()
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, now, 0, 0
            tf.addfile(info, io.BytesIO(data))
    tar = d.with_name(d.name + ".tar")
    atomic_write_bytes(tar, buf.getvalue())
    return tar
