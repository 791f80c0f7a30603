"""A small appliance bundle made by the packer's own code (bundle.env, SBOM, seal, tar) around one tiny wheel, so the
installer's checks can be exercised in a second, offline. The real pack (every wheel, weight, data pack and Debian
package) is exercised by bench/appliance_offline.sh."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zeropoint.supplychain import pack, sbom, seal

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "src" / "zeropoint" / "supplychain" / "install.sh"


def new_key(tmp: Path, name: str) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pub = tmp / f"{name}.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def tiny_wheel(dest: Path, name: str = "zp_tiny", version: str = "1.0") -> Path:
    """A valid pure-Python wheel (METADATA, WHEEL, RECORD with hashes)."""
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{name}-{version}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                                      "Summary: a tiny test wheel\nLicense-Expression: MIT\n").encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}\n"
                     for p, b in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    files[f"{name}-{version}.dist-info/RECORD"] = record.encode()
    whl = dest / f"{name}-{version}-py3-none-any.whl"
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl, "w") as zf:
        for p, b in files.items():
            zf.writestr(p, b)
    return whl


def make_bundle(tmp: Path, key: Ed25519PrivateKey, name: str = "bundle", **meta_overrides) -> Path:
    root = tmp / name
    whl = tiny_wheel(root / "wheels")
    h = hashlib.sha256(whl.read_bytes()).hexdigest()
    (root / "requirements.txt").write_text(f"zp-tiny==1.0 \\\n    --hash=sha256:{h}\n")
    shutil.copytree(REPO / "configs" / "llm", root / "configs" / "llm")
    shutil.copy2(INSTALL_SH, root / "install.sh")
    osr = pack.os_release()
    meta = {"format": seal.FORMAT, "bundle_id": name, "zeropoint_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
            "machine": __import__("platform").machine(), "python_version": pack.PY,
            "python_tag": f"cp{pack.PY.replace('.', '')}", "os_id": osr.get("ID"),
            "os_version_codename": osr.get("VERSION_CODENAME"), "dpkg_arch": "amd64",
            "project_wheel": f"wheels/{whl.name}"}
    meta.update(meta_overrides)
    (root / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    (root / "bundle.env").write_text(pack.bundle_env(meta))
    (root / sbom.SBOM_NAME).write_text(sbom.bundle_sbom(root, meta))
    seal.seal(root, key)
    return root
