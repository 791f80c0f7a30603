"""Verify a Zeropoint release bundle with nothing but the bundle and the appliance's public key.

Standalone on purpose: this file imports only the standard library and `cryptography`, never `zeropoint`, so
an auditor can copy it next to a bundle and run it in a fresh virtualenv on another machine:

    python -m venv v && v/bin/pip install cryptography==50.0.2
    v/bin/python verify.py BUNDLE_DIR_OR_TAR --pubkey appliance.pub [--json]

Checks, each named in the report: the Ed25519 signature over `bundle.json`; the size and SHA-256 of every file
it lists (a missing, changed or unlisted file fails, naming it); the audit-log segment's hash chain (every
event's own hash, consecutive seq, prev_hash links, its recorded head); that every recorded gate passed; and the
harms checklist (as signed, every assessed item's evidence in the bundle, every `not assessed` item with a reason,
none failed).
A `.tar` is read member by member and refused if any member is a link, device, absolute path or climbs out
with `..`; nothing is extracted outside a fresh temporary directory.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "zeropoint-release-bundle/1"
MANIFEST, SIGNATURE, EMBEDDED_KEY = "bundle.json", "bundle.sig", "appliance.pub"
UNSIGNED = {MANIFEST, SIGNATURE}           # the signature covers bundle.json; bundle.json lists the rest
AUDIT_SEGMENT, AUDIT_HEAD = "audit/segment.jsonl", "audit/head.json"
AUDIT_FIELDS = ("seq", "ts", "actor", "action", "resource", "details", "outcome", "prev_hash")
MAX_TAR_BYTES = 2 << 30


class BundleError(Exception):
    """The bundle cannot be read at all (not a bundle, unsafe tar)."""


def canonical_json(obj) -> bytes:
    # must stay byte-identical to zeropoint.hashing.canonical_json (a test checks it on real audit events)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def safe_relpath(name: str) -> PurePosixPath:
    """A relative POSIX path that stays inside the bundle, or BundleError naming it."""
    p = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise BundleError(f"unsafe path {name!r} in the bundle (absolute, '..' or drive); refusing it")
    return p


def extract_tar(tar_path: Path, dest: Path) -> Path:
    """Copy regular files out of a bundle tar into dest, refusing links, devices and escaping names."""
    try:
        tf = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{tar_path} is not a readable tar ({_tar_problem(tar_path, e)})") from None
    try:
        with tf:
            root = _extract_members(tf, tar_path, dest)
            end = tf.offset
    except (tarfile.TarError, EOFError) as e:   # e.g. cut short by a failed copy: "unexpected end of data"
        raise BundleError(f"{tar_path} is not a readable tar ({_tar_problem(tar_path, e)})") from None
    with open(tar_path, "rb") as f:   # an uncompressed tar cut at a member boundary reads as a shorter archive
        magic = f.read(6)
        f.seek(end)
        tail = f.read(1024)
    compressed = magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"
    if not compressed and tail != bytes(1024):
        raise BundleError(f"{tar_path} is not a readable tar (it is truncated: the end-of-archive marker after the "
                          f"last member, at byte {end}, is missing; copy the whole bundle again)")
    return root


def _tar_problem(tar_path: Path, e: Exception) -> str:
    msg = str(e) or type(e).__name__
    if "end of data" in msg or "truncated" in msg or isinstance(e, EOFError) or \
            (tar_path.is_file() and tar_path.stat().st_size % 512):
        return f"it is truncated: {msg}; copy the whole bundle again"
    return msg


def _extract_members(tf: tarfile.TarFile, tar_path: Path, dest: Path) -> Path:
    total = 0
    seen = set()
    for m in tf.getmembers():
        rel = safe_relpath(m.name.rstrip("/") if m.isdir() else m.name)
        if m.issym() or m.islnk():
            raise BundleError(f"tar member {m.name!r} is a link; bundles hold regular files only")
        if m.isdir():
            continue
        if not m.isreg():
            raise BundleError(f"tar member {m.name!r} is not a regular file (device, fifo...); refusing it")
        if str(rel) in seen:
            raise BundleError(f"tar member {m.name!r} appears twice; refusing an ambiguous bundle")
        seen.add(str(rel))
        total += m.size
        if total > MAX_TAR_BYTES:
            raise BundleError(f"{tar_path} unpacks to more than {MAX_TAR_BYTES >> 30} GiB; refusing it")
        out = dest.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        src = tf.extractfile(m)
        with open(out, "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
    tops = {n.split("/", 1)[0] for n in seen}
    # a bundle tar holds one directory (NAME/bundle.json ...); accept files at the top level too
    if len(tops) == 1 and not (dest / MANIFEST).exists() and (dest / next(iter(tops)) / MANIFEST).exists():
        return dest / next(iter(tops))
    return dest


def _load_public_key(pem: bytes, source: str):
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise BundleError(f"{source} is not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{source} is not an Ed25519 public key")
    return key


def public_key_fingerprint(key) -> str:
    """SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def event_hash(event: dict) -> str:
    return hashlib.sha256(canonical_json({k: event.get(k) for k in AUDIT_FIELDS})).hexdigest()


def check_audit_segment(seg_path: Path, head_path: Path) -> tuple[bool, str]:
    """Every event hashes to itself, seq is consecutive, prev_hash links, and the head agrees."""
    try:
        head = json.loads(head_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return False, f"{AUDIT_HEAD} unreadable ({e})"
    prev, seq, n = head.get("anchor_prev_hash"), None, 0
    last = None
    for n, raw in enumerate(seg_path.read_bytes().splitlines(keepends=True), 1):
        try:
            ev = json.loads(raw)
        except ValueError:
            return False, f"{AUDIT_SEGMENT} line {n}: not valid JSON (edited)"
        if not isinstance(ev, dict) or set(ev) != set(AUDIT_FIELDS) | {"hash"}:
            return False, f"{AUDIT_SEGMENT} line {n}: not an audit event"
        if event_hash(ev) != ev["hash"] or canonical_json(ev) + b"\n" != raw:
            return False, f"{AUDIT_SEGMENT} line {n} (seq {ev.get('seq')}): content does not match its hash (edited)"
        if seq is not None and ev["seq"] != seq + 1:
            return False, f"{AUDIT_SEGMENT} line {n}: seq {ev['seq']} follows {seq} (an event was removed or moved)"
        if ev["prev_hash"] != prev:
            return False, f"{AUDIT_SEGMENT} line {n} (seq {ev['seq']}): prev_hash does not link to the previous event"
        prev, seq, last = ev["hash"], ev["seq"], ev
    if last is None:
        return False, f"{AUDIT_SEGMENT} is empty"
    if head.get("first_seq") is not None and head.get("first_seq") != seq - n + 1:
        return False, f"{AUDIT_HEAD}: segment starts at seq {seq - n + 1}, head says {head.get('first_seq')}"
    if (head.get("last_seq"), head.get("last_hash")) != (last["seq"], last["hash"]):
        return False, f"{AUDIT_HEAD}: segment ends at seq {last['seq']} but the head records {head.get('last_seq')}"
    ch = head.get("chain_head") or {}
    if ch.get("seq") == last["seq"] and ch.get("hash") != last["hash"]:
        return False, f"{AUDIT_HEAD}: the chain head at seq {ch.get('seq')} has another hash than the segment's last event"
    if isinstance(ch.get("seq"), int) and ch["seq"] < last["seq"]:
        return False, f"{AUDIT_HEAD}: chain head seq {ch['seq']} is before the segment's end ({last['seq']})"
    return True, (f"{n} events, seq {seq - n + 1}..{seq}, chain links and hashes verified; log head at bundling: "
                  f"seq {ch.get('seq')}")


HARMS_STATUSES = ("pass", "fail", "not assessed")


def check_harms(checklist: dict, signed, listed: set, add) -> None:
    """The harms checklist: matches the one signed in bundle.json; every assessed item names evidence that is in
    the bundle; every `not assessed` item says why; no item failed."""
    items = checklist.get("items") or []
    problems = []
    if [{"id": i.get("id"), "status": i.get("status")} for i in items] != signed:
        problems.append(f"release.json's harms checklist differs from the one signed in {MANIFEST}")
    for i in items:
        iid, st = i.get("id"), i.get("status")
        if st not in HARMS_STATUSES:
            problems.append(f"{iid}: status {st!r} is not one of {', '.join(HARMS_STATUSES)}")
        elif st == "not assessed" and not i.get("reason"):
            problems.append(f"{iid}: not assessed, without a reason")
        elif st != "not assessed" and not i.get("evidence"):
            problems.append(f"{iid}: {st} without an evidence file")
        missing = [e for e in i.get("evidence") or [] if e not in listed]
        if missing:
            problems.append(f"{iid}: evidence {', '.join(missing)} is not in the bundle")
    failed = [i for i in items if i.get("status") == "fail"]
    if problems or not items:
        add("harms", False, "; ".join(problems) or "release.json has an empty harms checklist", "release.json")
    elif failed:
        add("harms", False, "harms checklist items failed: " + "; ".join(f"{i['id']}: {i.get('reason')}" for i in failed),
            "release.json")
    else:
        counts = {st: sum(i["status"] == st for i in items) for st in HARMS_STATUSES}
        add("harms", True, f"{len(items)} items ({counts['pass']} pass, {counts['not assessed']} not assessed, each "
            "with its reason); every assessed item's evidence files are in the bundle")


def verify_dir(root: Path, pubkey_pem: bytes | None = None, pubkey_source: str | None = None) -> dict:
    root = Path(root)
    checks: list[dict] = []

    def add(name: str, ok: bool, detail: str, file: str | None = None):
        checks.append({"check": name, "ok": bool(ok), "detail": detail, **({"file": file} if file else {})})

    man_path, sig_path = root / MANIFEST, root / SIGNATURE
    if not man_path.is_file():
        raise BundleError(f"{root} has no {MANIFEST}; not a release bundle")
    man_bytes = man_path.read_bytes()
    try:
        man = json.loads(man_bytes)
    except ValueError as e:
        man = None
        add("manifest", False, f"{MANIFEST} is not valid JSON ({e}): it was modified", MANIFEST)
    if man is not None and (not isinstance(man, dict) or man.get("format") != FORMAT or not isinstance(man.get("files"), list)):
        add("manifest", False, f"{MANIFEST} is not a {FORMAT} manifest: it was modified", MANIFEST)
        man = None

    # signature: over the exact bytes of bundle.json
    if pubkey_pem is None:
        if (root / EMBEDDED_KEY).is_file():
            pubkey_pem, pubkey_source = (root / EMBEDDED_KEY).read_bytes(), f"{EMBEDDED_KEY} inside the bundle"
            trusted = False
        else:
            raise BundleError(f"no --pubkey given and the bundle has no {EMBEDDED_KEY}")
    else:
        trusted = True
    key = _load_public_key(pubkey_pem, pubkey_source or "the public key")
    fp = public_key_fingerprint(key)
    sig = sig_path.read_bytes() if sig_path.is_file() else None
    if sig is None:
        add("signature", False, f"{SIGNATURE} is missing", SIGNATURE)
    elif len(sig) != 64:
        add("signature", False, f"{SIGNATURE} is {len(sig)} bytes, an Ed25519 signature is 64: it was modified", SIGNATURE)
    else:
        try:
            key.verify(sig, man_bytes)
            add("signature", True, f"Ed25519 signature over {MANIFEST} verifies with key {fp[:16]} ({pubkey_source})")
        except InvalidSignature:
            add("signature", False, f"the signature in {SIGNATURE} does not verify over {MANIFEST} with key {fp[:16]}: "
                f"{MANIFEST} or {SIGNATURE} was modified, or the bundle was signed by another key", f"{MANIFEST}, {SIGNATURE}")
    if man is not None and man.get("public_key_sha256") != fp:
        add("key", False, f"{MANIFEST} names signing key {str(man.get('public_key_sha256'))[:16]}, verifying with "
            f"{fp[:16]}", MANIFEST)
    if not trusted:
        add("key_origin", True, "no --pubkey given: checked against the key embedded in the bundle, which proves "
            "integrity but not who signed it; pass the appliance's exported public key to prove origin")

    # every listed file; nothing unlisted
    if man is not None:
        listed = {}
        for ent in man["files"]:
            try:
                rel = safe_relpath(str(ent.get("path", "")))
            except BundleError as e:
                add("files", False, str(e), str(ent.get("path")))
                continue
            listed[str(rel)] = ent
        bad = 0
        for rel, ent in sorted(listed.items()):
            p = root.joinpath(*PurePosixPath(rel).parts)
            if p.is_symlink() or (p.exists() and not p.is_file()):
                add("file", False, f"{rel} is not a regular file", rel)
                bad += 1
            elif not p.is_file():
                add("file", False, f"{rel} is listed in {MANIFEST} but missing", rel)
                bad += 1
            elif p.stat().st_size != ent.get("size"):
                add("file", False, f"{rel}: size {p.stat().st_size} != {ent.get('size')} recorded: the file was modified", rel)
                bad += 1
            elif sha256_file(p) != ent.get("sha256"):
                add("file", False, f"{rel}: SHA-256 does not match {MANIFEST}: the file was modified", rel)
                bad += 1
        present = set()
        for dp, dns, fns in os.walk(root):
            for dn in dns:
                if Path(dp, dn).is_symlink():
                    rel = Path(dp, dn).relative_to(root).as_posix()
                    add("file", False, f"{rel} is a symbolic link; bundles hold regular files only", rel)
                    bad += 1
            for fn in fns:
                present.add(Path(dp, fn).relative_to(root).as_posix())
        for rel in sorted(present - set(listed) - UNSIGNED):
            add("file", False, f"{rel} is in the bundle but not listed in {MANIFEST}: it was added", rel)
            bad += 1
        if not bad:
            add("files", True, f"all {len(listed)} listed files match their size and SHA-256; no unlisted files")

        # audit segment
        seg, head = root / AUDIT_SEGMENT, root / AUDIT_HEAD
        if AUDIT_SEGMENT in listed and seg.is_file() and head.is_file():
            ok, detail = check_audit_segment(seg, head)
            add("audit_chain", ok, detail, None if ok else AUDIT_SEGMENT)
        else:
            add("audit_chain", False, f"{AUDIT_SEGMENT} or {AUDIT_HEAD} is missing from the bundle", AUDIT_SEGMENT)

        # the recorded decision: every gate passed
        rel_path = root / "release.json"
        try:
            rel_doc = json.loads(rel_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            rel_doc = None
            add("gates", False, f"release.json unreadable ({e})", "release.json")
        if rel_doc is not None:
            gates = rel_doc.get("gates") or []
            failed = [g.get("name") for g in gates if g.get("passed") is not True]
            summary = [{"name": g.get("name"), "passed": g.get("passed")} for g in gates]
            if summary != man.get("gates"):
                add("gates", False, f"release.json gates differ from those signed in {MANIFEST}", "release.json")
            elif not gates:
                add("gates", False, "release.json records no gates", "release.json")
            elif failed or rel_doc.get("passed") is not True:
                reasons = "; ".join(f"{g.get('name')}: {g.get('reason') or g.get('rule')}" for g in gates
                                    if g.get("passed") is not True)
                add("gates", False, f"the release did not pass: {reasons}", "release.json")
            else:
                add("gates", True, f"all {len(gates)} recorded gates passed: " + ", ".join(g["name"] for g in gates))
            if "harms_checklist" in rel_doc or man.get("harms") is not None:
                check_harms(rel_doc.get("harms_checklist") or {}, man.get("harms"), set(listed), add)
    ok = all(c["ok"] for c in checks)
    return {"ok": ok, "bundle": str(root), "release_id": (man or {}).get("release_id"),
            "public_key_sha256": fp, "key_trusted": trusted, "checks": checks,
            "failed_files": sorted({c["file"] for c in checks if not c["ok"] and c.get("file")})}


def verify_bundle(bundle: str | Path, pubkey: str | Path | None = None) -> dict:
    """Verify a bundle directory or .tar. Raises BundleError when it cannot be read; otherwise returns the report."""
    bundle = Path(bundle)
    pem = Path(pubkey).read_bytes() if pubkey is not None else None
    src = str(pubkey) if pubkey is not None else None
    if bundle.is_dir():
        return verify_dir(bundle, pem, src)
    if bundle.is_file():
        with tempfile.TemporaryDirectory(prefix="zp-bundle-") as tmp:
            try:
                root = extract_tar(bundle, Path(tmp))
            except OSError as e:   # e.g. a member named like a directory another member needs
                raise BundleError(f"{bundle} cannot be unpacked safely ({e})") from None
            rep = verify_dir(root, pem, src)
            rep["bundle"] = str(bundle)
            return rep
    raise BundleError(f"{bundle} does not exist; pass a bundle directory or its .tar")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Verify a Zeropoint release bundle (directory or .tar).")
    ap.add_argument("bundle")
    ap.add_argument("--pubkey", help="the appliance's public key (PEM, from `zpctl keys export-public`)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    try:
        rep = verify_bundle(a.bundle, a.pubkey)
    except (BundleError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(rep, indent=2))
    else:
        for c in rep["checks"]:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
        print("VERIFIED" if rep["ok"] else "NOT VERIFIED")
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
