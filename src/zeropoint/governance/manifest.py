"""Dataset manifest (`datasets/manifest.yaml`): what each dataset is, where it came from, its license, the SHA-256
of every file, its last PII scan and its approval. Every function here is what a CLI command or API call runs.

The manifest is rewritten atomically under a file lock (read-modify-write from several processes is safe), and
nothing in it is trusted on its own: approval and the training gate re-hash the files they vouch for.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import yaml

from ..clock import utcnow
from ..errors import ZeropointError
from ..hashing import sha256_json
from ..workspace import atomic_write_text, workspace
from . import licenses
from .audit import append_event, default_actor
from .pii import iter_files, scan_paths
from .policy import SOURCE_TYPES, Policy, load_policy, note_policy

# libyaml when present: a manifest of a corpus of many files is megabytes of YAML
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MANIFEST_VERSION = 1
HASH_BLOCK = 8 << 20


class GovernanceError(ZeropointError):
    """A governance rule refused an action; the message names the dataset and the fix."""


class UnknownDataset(GovernanceError):
    pass


class DatasetChanged(GovernanceError):
    """A registered file no longer matches its recorded SHA-256 (or is missing)."""


class NotApproved(GovernanceError):
    pass


class ApprovalRefused(GovernanceError):
    def __init__(self, message: str, checks: list[dict]):
        super().__init__(message)
        self.checks = checks


# ---- manifest file ------------------------------------------------------------------------------------------
def manifest_path(path: Path | str | None = None) -> Path:
    return Path(path) if path is not None else Path(os.environ.get("ZP_MANIFEST") or workspace().datasets / "manifest.yaml")


def load_manifest(path: Path | str | None = None) -> dict:
    p = manifest_path(path)
    if not p.exists():
        return {"manifest_version": MANIFEST_VERSION, "datasets": {}}
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise GovernanceError(f"manifest {p} is not valid YAML ({e}); restore it from backup - it is never "
                              "written partially, so someone edited it by hand") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets", {}), dict):
        raise GovernanceError(f"manifest {p} has no 'datasets' mapping; restore it from backup")
    raw.setdefault("datasets", {})
    return raw


@contextmanager
def _editing(path: Path | str | None = None):
    """Lock, load, yield the manifest for changes, write it back atomically."""
    p = manifest_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p.with_name(p.name + ".lock"), "a+b") as lk:
        fcntl.flock(lk.fileno(), fcntl.LOCK_EX)
        try:
            m = load_manifest(p)
            yield m
            atomic_write_text(p, yaml.dump(m, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120))
        finally:
            fcntl.flock(lk.fileno(), fcntl.LOCK_UN)


def get_dataset(name: str, path: Path | str | None = None) -> dict:
    ds = load_manifest(path)["datasets"].get(name)
    if ds is None:
        known = ", ".join(sorted(load_manifest(path)["datasets"])) or "none registered"
        raise UnknownDataset(f"no dataset {name!r} in {manifest_path(path)} ({known}); register it with "
                             f"`zpctl data add PATH --name {name} --license SPDX --source-type public`")
    return ds


def list_datasets(path: Path | str | None = None) -> list[dict]:
    return [dict(v, name=k) for k, v in sorted(load_manifest(path)["datasets"].items())]


# ---- hashing ------------------------------------------------------------------------------------------------
def _count_records(p: Path, head: bytes, newlines: int, size: int) -> int:
    """Samples in one file: records for line-oriented formats, one document otherwise."""
    suf = p.suffix.lower()
    if suf in (".jsonl", ".ndjson"):
        return newlines + (0 if size == 0 or head.endswith(b"\n") else 1)
    if suf in (".csv", ".tsv"):
        return max(0, newlines - 1)
    return 1


def hash_file(p: Path, progress: Callable[[int], None] | None = None, count_lines: bool = False) -> tuple[str, int, int]:
    """(sha256, size, newline count) in one streaming pass. The buffer is sized to the file (at most 8 MiB):
    zeroing an 8 MiB buffer per file would dominate on corpora of many small files."""
    h = hashlib.sha256()
    size = nl = 0
    with open(p, "rb", buffering=0) as f:
        buf = bytearray(min(HASH_BLOCK, os.fstat(f.fileno()).st_size + 1))
        view = memoryview(buf)
        while n := f.readinto(buf):   # until EOF, so a file that grew since fstat is still hashed in full
            h.update(view[:n])
            if count_lines:
                nl += buf.count(b"\n", 0, n)
            size += n
            if progress:
                progress(n)
    return h.hexdigest(), size, nl


def file_entries(paths: list[Path], progress: Callable[[int], None] | None = None) -> tuple[list[dict], int]:
    entries, samples = [], 0
    for p in paths:
        line_based = p.suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv")
        digest, size, nl = hash_file(p, progress, count_lines=line_based)
        tail = b""
        if line_based and size:
            with open(p, "rb") as f:
                f.seek(-1, os.SEEK_END)
                tail = f.read(1)
        samples += _count_records(p, tail, nl, size)
        entries.append({"path": str(p.resolve()), "size": size, "sha256": digest})
    return entries, samples


def files_digest(files: list[dict]) -> str:
    """One SHA-256 over the dataset's file list (path, size, sha256 of each), the dataset's identity."""
    return sha256_json([{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files])


# ---- commands -----------------------------------------------------------------------------------------------
def add_dataset(path: Path | str, name: str, license: str, source_type: str, source_url: str | None = None,
                organization: str | None = None, version: str = "1", *, include: list[str] | None = None,
                exclude: list[str] | None = None, license_file: Path | str | None = None, description: str | None = None,
                replace: bool = False, actor: str | None = None, progress: Callable[[int], None] | None = None,
                manifest: Path | str | None = None, file_check: Callable[[Path], None] | None = None) -> dict:
    """Register a file or directory: hash every file, count samples, describe the license. Returns the entry.
    `file_check(path)` is called on every file before any is read (the API confines them to its data root)."""
    actor = actor or default_actor()
    if not NAME_RE.match(name or ""):
        raise GovernanceError(f"dataset name {name!r} is invalid; use lower-case letters, digits, '.', '_' or '-' "
                              "(up to 64 characters, starting with a letter or digit), e.g. --name sotu")
    if source_type not in SOURCE_TYPES:
        raise GovernanceError(f"source type {source_type!r} is not one of {', '.join(SOURCE_TYPES)}; "
                              "pass e.g. --source-type public")
    root = Path(path).expanduser()
    if not root.exists():
        raise GovernanceError(f"{root} does not exist; pass the file or directory that holds the dataset")
    root = root.resolve()
    lic = licenses.describe(license)
    if not replace and name in load_manifest(manifest)["datasets"]:
        raise GovernanceError(f"dataset {name!r} is already registered; pass --replace to register it again "
                              "(this resets its scan and approval) or choose another --name")
    paths = iter_files(root, include, exclude)
    if not paths:
        raise GovernanceError(f"no files under {root} match --include {include or '*'}"
                              f"{f' --exclude {exclude}' if exclude else ''}; check the pattern (e.g. --include '*.txt')")
    for p in paths if file_check else []:
        file_check(p)
    files, samples = file_entries(paths, progress)
    # license / readme texts inside the dataset (and an explicit --license-file) are checked for deny phrases
    pol, _ = load_policy()
    texts = [p for p in paths if licenses.is_license_text_name(p.name) and p.stat().st_size < (1 << 20)]
    if license_file:
        lf = Path(license_file).expanduser().resolve()
        if not lf.is_file():
            raise GovernanceError(f"--license-file {lf} not found")
        texts.append(lf)
    text_flags = []
    for t in texts:
        body = t.read_text(encoding="utf-8", errors="replace")
        text_flags.append({"path": str(t), "sha256": hash_file(t)[0], "identified": licenses.identify_text(body),
                           "deny_phrases": licenses.find_phrases(body, pol.licenses.deny_phrases)})
    lic["texts"] = text_flags
    entry = {
        "version": str(version),
        "description": description,
        "root": str(root),
        "include": list(include or []), "exclude": list(exclude or []),
        "source": {"type": source_type, "url": source_url, "organization": organization},
        "license": lic,
        "files": files,
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "sha256": files_digest(files),
        "sample_count": samples,
        "sample_unit": "records" if all(Path(f["path"]).suffix.lower() in (".jsonl", ".ndjson", ".csv", ".tsv")
                                        for f in files) else "files/records",
        "added_at": utcnow("seconds"), "added_by": actor,
        "pii": None,
        "approval": {"status": "pending", "approver": None, "time": None, "policy_version": None,
                     "policy_sha256": None},
    }
    if all(Path(f["path"]).suffix.lower() not in (".jsonl", ".ndjson", ".csv", ".tsv") for f in files):
        entry["sample_unit"] = "files"
    with _editing(manifest) as m:
        if name in m["datasets"] and not replace:
            raise GovernanceError(f"dataset {name!r} was registered meanwhile; pass --replace to overwrite it")
        m["datasets"][name] = entry
    append_event(actor, "dataset_add", f"dataset:{name}",
                 {"version": entry["version"], "sha256": entry["sha256"], "files": len(files),
                  "bytes": entry["total_bytes"], "license": lic["expression"], "source_type": source_type,
                  "replaced": bool(replace)})
    return dict(entry, name=name)


def _check_files(name: str, files: list[dict], progress: Callable[[int], None] | None = None) -> list[dict]:
    """Re-hash every file; return one problem per changed or missing file."""
    problems = []
    for f in files:
        p = Path(f["path"])
        if not p.is_file():
            problems.append({"path": f["path"], "problem": "missing"})
            continue
        if (target := relinked(p)) is not None:
            problems.append({"path": f["path"], "problem": "relinked", "target": str(target)})
            continue
        digest, size, _ = hash_file(p, progress)
        if digest != f["sha256"] or size != f["size"]:
            problems.append({"path": f["path"], "problem": "changed", "expected_sha256": f["sha256"],
                             "actual_sha256": digest, "expected_size": f["size"], "actual_size": size})
    return problems


def relinked(p: Path) -> Path | None:
    """Where a registered file now leads if a link was put in its path since registration (paths are stored
    resolved), else None. Such a file is not read: it may point anywhere, e.g. /etc/passwd."""
    full = p.resolve()
    return full if full != p else None


def changed_message(name: str, problems: list[dict]) -> str:
    first = problems[0]
    what = (f"file {first['path']} is missing" if first["problem"] == "missing" else
            f"file {first['path']} now leads to {first['target']} through a symbolic link" if first["problem"] == "relinked" else
            f"file {first['path']} changed since it was registered (sha256 {first['actual_sha256'][:12]}..., "
            f"recorded {first['expected_sha256'][:12]}...)")
    more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
    return (f"dataset {name!r}: {what}{more}; restore the original file, or re-register it with "
            f"`zpctl data add ... --name {name} --replace`, scan and approve it again")


def verify(name: str | None = None, *, actor: str | None = None, progress: Callable[[int], None] | None = None,
           manifest: Path | str | None = None) -> list[dict]:
    """Re-hash one dataset (or all). Returns [{name, ok, files, problems}]; audits each result."""
    names = [name] if name else [d["name"] for d in list_datasets(manifest)]
    out = []
    for n in names:
        ds = get_dataset(n, manifest)
        problems = _check_files(n, ds["files"], progress)
        listing_ok = files_digest(ds["files"]) == ds["sha256"]
        if not listing_ok:
            problems.append({"path": "(manifest)", "problem": "file list does not match the dataset sha256 "
                             "(manifest edited by hand)"})
        out.append({"name": n, "ok": not problems, "files": len(ds["files"]), "problems": problems})
        append_event(actor, "dataset_verify", f"dataset:{n}", {"sha256": ds["sha256"], "problems": problems[:20]},
                     "ok" if not problems else "failed")
    return out


def scan_dataset(name: str, *, actor: str | None = None, progress: Callable[[int], None] | None = None,
                 keep: int = 50, manifest: Path | str | None = None) -> dict:
    """PII-scan every byte of a dataset, hashing as it reads so the scan is tied to the registered contents."""
    ds = get_dataset(name, manifest)
    pol, _ = load_policy()
    moved = [{"path": f["path"], "problem": "relinked", "target": str(t)} for f in ds["files"]
             if (t := relinked(Path(f["path"]))) is not None]
    if moved:
        append_event(actor, "dataset_scan", f"dataset:{name}", {"problems": moved[:20]}, "failed")
        raise DatasetChanged(changed_message(name, moved))
    rep = scan_paths([Path(f["path"]) for f in ds["files"]], keep=keep, progress=progress, hash_it=True)
    problems = [{"path": f["path"], "problem": "changed", "expected_sha256": f["sha256"], "actual_sha256": pf["sha256"]}
                for f, pf in zip(ds["files"], rep.per_file) if pf["sha256"] != f["sha256"]]
    if problems:
        append_event(actor, "dataset_scan", f"dataset:{name}", {"problems": problems[:20]}, "failed")
        raise DatasetChanged(changed_message(name, problems))
    summary = rep.summary(pol)
    summary.update(scanned_at=utcnow("seconds"), dataset_sha256=ds["sha256"], policy_version=pol.version,
                   scanner="zeropoint.governance.pii", examples=rep.findings[:keep])
    with _editing(manifest) as m:
        cur = m["datasets"].get(name)
        if cur is None or cur["sha256"] != ds["sha256"]:
            raise GovernanceError(f"dataset {name!r} was re-registered during the scan; scan it again")
        cur["pii"] = summary
    append_event(actor, "dataset_scan", f"dataset:{name}",
                 {"sha256": ds["sha256"], "counts": {k: v for k, v in summary["counts"].items() if v},
                  "density_per_mb": summary["density_per_mb"], "risk": summary["risk"], "bytes": summary["bytes"]})
    return summary


# ---- approval -----------------------------------------------------------------------------------------------
def evaluate(ds: dict, pol: Policy, *, file_problems: list[dict] | None = None) -> list[dict]:
    """Every policy rule applied to one manifest entry: [{rule, outcome: pass|review|deny, detail}]."""
    checks = []
    st = ds["source"]["type"]
    if st == "synthetic":
        ok = pol.sources.synthetic_allowed
        checks.append({"rule": "sources.synthetic_allowed", "outcome": "pass" if ok else "deny",
                       "detail": "synthetic data is " + ("allowed" if ok else "not allowed by this policy")})
    elif st in pol.sources.denied or st not in pol.sources.allowed:
        checks.append({"rule": "sources.allowed", "outcome": "deny",
                       "detail": f"source type {st!r} is not in the policy's allowed source types {pol.sources.allowed}"})
    else:
        checks.append({"rule": "sources.allowed", "outcome": "pass", "detail": f"source type {st!r} is allowed"})
    dec = licenses.decide(ds["license"]["expression"], pol.licenses)
    checks.append({"rule": "licenses", "outcome": {"allow": "pass"}.get(dec.decision, dec.decision),
                   "detail": f"{ds['license']['expression']}: {dec.decision} ("
                             + "; ".join(r["why"] for r in dec.rules if r["rule"] not in ("licenses.or", "licenses.and")) + ")",
                   "license_rules": dec.rules})
    for t in ds["license"].get("texts") or []:
        body = Path(t["path"]).read_text(encoding="utf-8", errors="replace") if Path(t["path"]).is_file() else None
        hits = licenses.find_phrases(body, pol.licenses.deny_phrases) if body is not None else t["deny_phrases"]
        if hits:
            checks.append({"rule": "licenses.deny_phrases", "outcome": "deny",
                           "detail": f"{t['path']} says {', '.join(repr(h) for h in hits)}"})
        found = licenses.identify_text(body) if body is not None else t.get("identified") or []
        for lid in found:
            if licenses.declared_covers(ds["license"]["expression"], lid):
                continue
            # the text is another license than declared: at least a review, a denial if that license is denied
            d = licenses.decide(lid, pol.licenses).decision
            checks.append({"rule": "licenses.text_mismatch", "outcome": "deny" if d == "deny" else "review",
                           "detail": f"{t['path']} is the text of {lid} (policy: {d}) but the declared license is "
                                     f"{ds['license']['expression']}; declare the real license or explain with "
                                     "--accept-review"})
    pii = ds.get("pii")
    if not pii:
        checks.append({"rule": "pii.scanned", "outcome": "deny",
                       "detail": f"no PII scan on record; run `zpctl data scan {ds.get('name', 'NAME')}`"})
    elif pii.get("dataset_sha256") != ds["sha256"]:
        checks.append({"rule": "pii.scanned", "outcome": "deny",
                       "detail": "the PII scan is for other contents; run `zpctl data scan` again"})
    else:
        sens = sum(pii["counts"].get(t, 0) for t in pol.pii.sensitive_types) / (pii["bytes"] / 1e6) if pii["bytes"] else 0.0
        risk = pol.risk_level(pii["density_per_mb"], sens)
        d = pol.pii.decisions.get(risk, "review")
        nonzero = {k: v for k, v in pii["counts"].items() if v}
        checks.append({"rule": f"pii.decisions.{risk}", "outcome": {"allow": "pass"}.get(d, d),
                       "detail": f"PII risk {risk}: {pii['density_per_mb']} findings/MB, {round(sens, 4)} sensitive/MB "
                                 f"({nonzero or 'none found'})"})
    if file_problems is not None:
        checks.append({"rule": "files.sha256", "outcome": "deny" if file_problems else "pass",
                       "detail": changed_message(ds.get("name", "?"), file_problems) if file_problems
                       else f"all {len(ds['files'])} files match their recorded SHA-256"})
    return checks


def approve(name: str, approver: str, *, accept_review: str | None = None, note: str | None = None,
            progress: Callable[[int], None] | None = None, manifest: Path | str | None = None) -> dict:
    """Evaluate the policy; record the approval or raise ApprovalRefused listing every failed rule.

    Rules that need review pass only with `accept_review` (the approver's written reason); denials never pass -
    change the data or the policy (an audited action) instead."""
    if not approver or not approver.strip():
        raise GovernanceError("an approval needs a named approver: pass --approver WHO")
    ds = dict(get_dataset(name, manifest), name=name)
    pol, src = load_policy()
    note_policy(pol, src, approver)
    checks = evaluate(ds, pol, file_problems=_check_files(name, ds["files"], progress))
    denied = [c for c in checks if c["outcome"] == "deny"]
    review = [c for c in checks if c["outcome"] == "review"]
    if denied or (review and not accept_review):
        failed = denied + review
        lines = "\n".join(f"  - {c['outcome'].upper()} {c['rule']}: {c['detail']}" for c in failed)
        hint = ("fix the data or change the policy (`zpctl data policy init`, then edit datasets/policy.yaml)" if denied
                else "a reviewer may approve with --accept-review 'why this is acceptable'")
        append_event(approver, "dataset_approve", f"dataset:{name}",
                     {"sha256": ds["sha256"], "policy_version": pol.version, "policy_sha256": pol.sha256(),
                      "failed": [{"rule": c["rule"], "outcome": c["outcome"], "detail": c["detail"]} for c in failed]},
                     "refused")
        raise ApprovalRefused(f"dataset {name!r} not approved; {len(failed)} rule(s) failed:\n{lines}\n{hint}", checks)
    approval = {"status": "approved", "approver": approver, "time": utcnow("seconds"), "policy_version": pol.version,
                "policy_sha256": pol.sha256(), "policy_source": src, "dataset_sha256": ds["sha256"],
                "checks": [{k: c[k] for k in ("rule", "outcome", "detail")} for c in checks],
                "accepted_review": accept_review if review else None, "note": note}
    with _editing(manifest) as m:
        cur = m["datasets"].get(name)
        if cur is None or cur["sha256"] != ds["sha256"]:
            raise GovernanceError(f"dataset {name!r} was re-registered during approval; approve it again")
        cur["approval"] = approval
    append_event(approver, "dataset_approve", f"dataset:{name}",
                 {"sha256": ds["sha256"], "policy_version": pol.version, "policy_sha256": pol.sha256(),
                  "accepted_review": approval["accepted_review"],
                  "review_rules": [c["rule"] for c in review]})
    return approval


def reject(name: str, approver: str, reason: str, *, manifest: Path | str | None = None) -> dict:
    if not approver or not reason:
        raise GovernanceError("a rejection needs --approver WHO and --reason WHY")
    pol, _ = load_policy()
    with _editing(manifest) as m:
        cur = m["datasets"].get(name)
        if cur is None:
            raise UnknownDataset(f"no dataset {name!r} to reject; see `zpctl data ls`")
        cur["approval"] = {"status": "rejected", "approver": approver, "time": utcnow("seconds"), "reason": reason,
                           "policy_version": pol.version, "policy_sha256": pol.sha256(), "dataset_sha256": cur["sha256"]}
        rec = cur["approval"]
    append_event(approver, "dataset_reject", f"dataset:{name}", {"sha256": rec["dataset_sha256"], "reason": reason})
    return rec
