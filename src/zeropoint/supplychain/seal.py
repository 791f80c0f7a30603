"""Seal an appliance bundle (a SHA-256 manifest of every file, signed with Ed25519) and check a sealed one.

The manifest is `sha256sum` output with a comment header, so the installer can check it with coreutils and
OpenSSL before anything of the bundle runs:

    # zeropoint-appliance-bundle/1
    # signer-ed25519-sha256: <SHA-256 of the signer's raw 32-byte public key>
    <sha256>  <path>            one line per file, sorted by path

`MANIFEST.sha256.sig` is the raw 64-byte Ed25519 signature over the manifest's exact bytes. Those two files are
the only ones the manifest does not list. `install.sh` and `verify()` here apply the same rules: the signature
verifies with the key the installer was given (never one from the bundle), every listed file is a regular file
with its hash, and nothing else is present.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import ZeropointError
from ..hashing import sha256_file

FORMAT = "zeropoint-appliance-bundle/1"
MANIFEST, SIGNATURE = "MANIFEST.sha256", "MANIFEST.sha256.sig"
UNLISTED = (MANIFEST, SIGNATURE)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._+~@=%-][A-Za-z0-9._+~@=%/-]*$")   # what sha256sum prints without escaping
_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


class BundleRejected(ZeropointError):
    """The bundle failed verification; `.files` names what failed."""

    def __init__(self, message: str, files: list[str] | None = None):
        super().__init__(message)
        self.files = files or []


def _check_name(rel: str) -> None:
    p = PurePosixPath(rel)
    if not _SAFE_PATH.match(rel) or ".." in p.parts or "." in p.parts or rel.endswith("/"):
        raise BundleRejected(f"bundle path {rel!r} is not a plain relative path of letters, digits and ._+~@=%-/; "
                             "rename it before sealing", [rel])


def bundle_files(root: Path) -> list[str]:
    """Relative paths of every regular file under root (sorted bytewise, like `LC_ALL=C sort`), manifest excluded.
    A symlink or special file anywhere is refused: bundles hold regular files only."""
    out = []
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = Path(dp, n)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise BundleRejected(f"{rel} is a symbolic link; bundles hold regular files only", [rel])
            if n in fns and not p.is_file():
                raise BundleRejected(f"{rel} is not a regular file (device, fifo or socket); refusing it", [rel])
            if n in fns and rel not in UNLISTED:
                out.append(rel)
    return sorted(out, key=lambda s: s.encode())


def public_key_fingerprint(pub) -> str:
    return hashlib.sha256(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def manifest_text(root: Path, signer_fingerprint: str) -> str:
    lines = [f"# {FORMAT}", f"# signer-ed25519-sha256: {signer_fingerprint}"]
    for rel in bundle_files(root):
        _check_name(rel)
        lines.append(f"{sha256_file(root / rel)}  {rel}")
    return "\n".join(lines) + "\n"


def seal(root: Path, private_key) -> dict:
    """Write MANIFEST.sha256 over every file under root and sign it with `private_key` (Ed25519)."""
    fp = public_key_fingerprint(private_key.public_key())
    text = manifest_text(Path(root), fp).encode()
    (Path(root) / MANIFEST).write_bytes(text)
    (Path(root) / SIGNATURE).write_bytes(private_key.sign(text))
    return {"manifest_sha256": hashlib.sha256(text).hexdigest(), "files": text.count(b"\n") - 2, "signer": fp}


def load_public_key(path: Path):
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise BundleRejected(f"--pubkey {path} is not a readable PEM public key ({e}); export the packer's key with "
                             "`zpctl keys export-public --out appliance.pub`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleRejected(f"--pubkey {path} is not an Ed25519 public key")
    return key


def parse_manifest(text: str) -> tuple[dict, dict[str, str]]:
    """-> (header fields, {path: sha256}); BundleRejected on anything malformed."""
    header, files = {}, {}
    lines = text.splitlines()
    if not lines or lines[0] != f"# {FORMAT}":
        raise BundleRejected(f"{MANIFEST} does not start with '# {FORMAT}': not an appliance bundle manifest", [MANIFEST])
    for n, line in enumerate(lines[1:], 2):
        if line.startswith("# "):
            k, _, v = line[2:].partition(": ")
            header[k] = v
            continue
        m = _LINE.match(line)
        if not m:
            raise BundleRejected(f"{MANIFEST} line {n} is not '<sha256>  <path>'", [MANIFEST])
        _check_name(m.group(2))
        files[m.group(2)] = m.group(1)
    return header, files


def verify(root: Path, pubkey_path: Path) -> dict:
    """The checks install.sh makes, in Python: signature with the given key, every file's hash, no extra file.
    Raises BundleRejected naming the key or the files; returns a summary when the bundle is intact."""
    root = Path(root).resolve()
    pub = Path(pubkey_path).resolve()
    if pub == root or root in pub.parents:
        raise BundleRejected(f"--pubkey {pubkey_path} lies inside the bundle; verify with the key the packer gave you "
                             "(`zpctl keys export-public` on the packing appliance), never one shipped in the bundle")
    key = load_public_key(pub)
    fp = public_key_fingerprint(key)
    man, sig = root / MANIFEST, root / SIGNATURE
    for p in (man, sig):
        if not p.is_file() or p.is_symlink():
            raise BundleRejected(f"{p.name} is missing from {root}: not a sealed appliance bundle", [p.name])
    text = man.read_bytes()
    try:
        key.verify(sig.read_bytes(), text)
    except InvalidSignature:
        claimed = re.search(rb"^# signer-ed25519-sha256: ([0-9a-f]{64})$", text, re.M)
        who = claimed.group(1).decode()[:16] if claimed else "unknown"
        raise BundleRejected(f"the signature on {MANIFEST} does not verify with key {fp[:16]} ({pubkey_path}); the "
                             f"manifest names signer {who}: the bundle was signed by another key, or {MANIFEST} or "
                             f"{SIGNATURE} was changed", [MANIFEST, SIGNATURE]) from None
    header, listed = parse_manifest(text.decode())
    present = bundle_files(root)
    extra = sorted(set(present) - set(listed))
    if extra:
        raise BundleRejected(f"{', '.join(extra)}: in the bundle but not in the signed manifest (added after "
                             "sealing); nothing was installed", extra)
    bad = [rel for rel, h in listed.items() if not (root / rel).is_file() or sha256_file(root / rel) != h]
    if bad:
        raise BundleRejected(f"{', '.join(bad)}: missing or SHA-256 differs from the signed manifest (changed after "
                             "sealing); nothing was installed", bad)
    return {"ok": True, "bundle": str(root), "files": len(listed), "signer": fp, "format": FORMAT,
            "manifest_sha256": hashlib.sha256(text).hexdigest(), "header": header}


def write_tar(root: Path, tar_path: Path) -> int:
    """A reproducible tar of the bundle (sorted, mtime 0, root-owned, modes 0644/0755) under `root.name/`."""
    root = Path(root)
    names = [*bundle_files(root), *UNLISTED]
    dirs = sorted({str(d) for n in names for d in PurePosixPath(n).parents} - {"."}, key=lambda s: s.encode())
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tf:
        def info(name: str, kind, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
            ti = tarfile.TarInfo(f"{root.name}/{name}" if name else root.name)
            ti.type, ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, size, mode, 0, 0, 0, "root", "root"
            return ti
        tf.addfile(info("", tarfile.DIRTYPE, mode=0o755))
        for d in dirs:
            # sorted, so a directory comes before the directories inside it
            tf.addfile(info(d, tarfile.DIRTYPE, mode=0o755))
        for n in sorted(names, key=lambda s: s.encode()):
            p = root / n
            mode = 0o755 if os.access(p, os.X_OK) else 0o644
            with open(p, "rb") as f:
                tf.addfile(info(n, tarfile.REGTYPE, p.stat().st_size, mode), f)
    return Path(tar_path).stat().st_size
