"""The appliance's Ed25519 signing key: `$ZP_HOME/keys/appliance.key` (PKCS#8 PEM, mode 0600) and
`appliance.pub` (SubjectPublicKeyInfo PEM, what `zpctl keys export-public` hands to auditors).

The private key is written through a temp file created 0600 and renamed (never world-readable, never half
written); it is created once and never overwritten, because every bundle it signed is checked against it.
A private key file that group or others can read is refused until its mode is fixed.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import ZeropointError
from ..workspace import atomic_write_bytes, workspace

KEY_NAME, PUB_NAME = "appliance.key", "appliance.pub"


class SigningKeyError(ZeropointError):
    """The signing key is missing, unreadable or too open."""


def keys_dir() -> Path:
    return workspace().root / "keys"


def key_paths() -> tuple[Path, Path]:
    d = keys_dir()
    return d / KEY_NAME, d / PUB_NAME


def _raw_public(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(pub) -> str:
    """SHA-256 of the raw 32-byte public key (what bundle.json records as public_key_sha256)."""
    return hashlib.sha256(_raw_public(pub)).hexdigest()


def public_pem(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def init_keys() -> dict:
    """Create the appliance key pair; refuses to replace an existing one."""
    priv_path, pub_path = key_paths()
    if priv_path.exists():
        raise SigningKeyError(f"a signing key already exists at {priv_path}; bundles signed with it verify only against "
                        "it, so it is never replaced. Export its public key with `zpctl keys export-public`")
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(priv_path.parent, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic_write_bytes(priv_path, pem)            # mkstemp creates it 0600; chmod states the intent
    os.chmod(priv_path, 0o600)
    atomic_write_bytes(pub_path, public_pem(key.public_key()))
    os.chmod(pub_path, 0o644)
    return {"private_key": str(priv_path), "public_key": str(pub_path), "fingerprint": fingerprint(key.public_key()),
            "algorithm": "Ed25519"}


def load_private_key():
    priv_path, _ = key_paths()
    if not priv_path.is_file():
        raise SigningKeyError(f"no signing key at {priv_path}; create one with `zpctl keys init`")
    mode = stat.S_IMODE(priv_path.stat().st_mode)
    if mode & 0o077:
        raise SigningKeyError(f"{priv_path} is readable by group or others (mode {oct(mode)}); fix it with "
                        f"`chmod 600 {priv_path}`")
    try:
        key = serialization.load_pem_private_key(priv_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{priv_path} is not a readable PEM private key ({e}); restore it from backup") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{priv_path} is not an Ed25519 key")
    return key


def key_info() -> dict:
    priv_path, pub_path = key_paths()
    key = load_private_key()
    return {"private_key": str(priv_path), "public_key": str(pub_path), "fingerprint": fingerprint(key.public_key()),
            "algorithm": "Ed25519", "mode": oct(stat.S_IMODE(priv_path.stat().st_mode))}


def export_public(out: Path | str | None = None) -> tuple[bytes, dict]:
    """The public key PEM (derived from the private key, so it always matches); written to `out` if given."""
    key = load_private_key()
    pem = public_pem(key.public_key())
    info = {"fingerprint": fingerprint(key.public_key()), "algorithm": "Ed25519"}
    if out is not None:
        out = Path(out)
        if out.exists() and out.read_bytes() != pem:
            raise SigningKeyError(f"{out} exists with other contents; choose another --out (nothing was overwritten)")
        atomic_write_bytes(out, pem)
        os.chmod(out, 0o644)
        info["path"] = str(out)
    return pem, info


def sign(data: bytes) -> tuple[bytes, bytes, str]:
    """-> (64-byte signature, public key PEM, public key fingerprint)."""
    key = load_private_key()
    return key.sign(data), public_pem(key.public_key()), fingerprint(key.public_key())
