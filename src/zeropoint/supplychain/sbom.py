"""CycloneDX JSON SBOMs (cyclonedx-python-lib): of an appliance bundle, and of the appliance installed here.

Both list every Python package (name, version, license from its metadata, SHA-256), every Debian package
(name, version, architecture, the licenses its machine-readable copyright file declares), the model weights and
the data packs (SHA-256, license from the asset table in `supplychain/assets.py`), and, for an installed
appliance, the datasets registered in the workspace's governance manifest (their SHA-256, license, approval).

Where a hash comes from is said in each component's `zeropoint:hash-source` property:
- `bundle`: the SHA-256 of the exact wheel/.deb/pack in the bundle (signed in its manifest);
- `requirements.lock`: a package set-up installed with `pip --require-hashes`: the lock's hashes for that version
  (every artifact pip was allowed to install; the installed one is among them);
- `file`: the SHA-256 of the model or data file itself, read now.
A package with none of these has no hash and says why.

The serial number is derived from the components, so two SBOMs of the same contents have the same serial: that
is how `zpctl diag` tells whether the SBOM on record still describes this installation.
"""
from __future__ import annotations

import email.parser
import functools
import hashlib
import importlib.util
import json
import os
import platform
import re
import sys
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseAcknowledgement
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from .. import __version__
from ..data import assets as data_assets
from ..errors import ZeropointError
from ..governance.manifest import list_datasets
from ..hashing import sha256_file
from . import debian
from .assets import ASSETS
from .lock import normalize, parse_lock
from .seal import MANIFEST, parse_manifest

SCHEMA = "1.6"
REPO_ROOT = Path(__file__).resolve().parents[3]
RECORD_DIR = Path(sys.prefix) / "share" / "zeropoint"      # where install.sh records the bundle it installed
SBOM_NAME = "sbom.cdx.json"
_NS = uuid.UUID("6f0c5b0e-2b7a-4c51-9a51-7a0c3e9f2d11")    # uuid5 namespace of Zeropoint SBOM serial numbers
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class SbomError(ZeropointError):
    pass


@dataclass
class Item:
    """One SBOM component before it becomes a CycloneDX one."""
    kind: str                   # python | deb | model | dataset
    name: str
    version: str | None
    hashes: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    purl: str | None = None
    description: str | None = None
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.purl or f"{self.kind}:{self.name}" + (f"@{self.version}" if self.version else "")


# ---- licenses --------------------------------------------------------------------------------------------------
def python_licenses(meta) -> list[str]:
    """License-Expression (PEP 639), else a short License field, else the License :: classifiers."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return [expr]
    lic = (meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 80 and lic.upper() != "UNKNOWN":
        return [lic]
    return [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")
            and c.split("::")[-1].strip() != "OSI Approved"]


def _cdx_licenses(names: list[str]):
    f, ack = LicenseFactory(), LicenseAcknowledgement.DECLARED
    if len(names) == 1:
        return [f.make_from_string(names[0], license_acknowledgement=ack)]
    out = []
    for n in names:   # a list may not mix expressions with licenses: each becomes an SPDX id or a name
        try:
            out.append(f.make_with_id(n, acknowledgement=ack))
        except Exception:   # not an SPDX id (Debian short names such as GPL-2+)
            out.append(f.make_with_name(n, acknowledgement=ack))
    return out


# ---- building ----------------------------------------------------------------------------------------------------
def serial_for(items: list[Item]) -> str:
    key = sorted((i.kind, i.name, i.version or "", sorted(i.hashes), i.licenses) for i in items)
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    return str(uuid.uuid5(_NS, digest))


def to_json(items: list[Item], root_name: str, root_version: str, properties: dict[str, str],
            timestamp: datetime | None = None) -> str:
    types = {"python": ComponentType.LIBRARY, "deb": ComponentType.LIBRARY,
             "model": ComponentType.MACHINE_LEARNING_MODEL, "dataset": ComponentType.DATA}
    bom = Bom(serial_number=uuid.UUID(serial_for(items)))
    bom.metadata.timestamp = timestamp or datetime.now(timezone.utc).replace(microsecond=0)
    bom.metadata.tools.components.add(this_component())
    root = Component(type=ComponentType.APPLICATION, name=root_name, version=root_version, bom_ref=root_name,
                     properties=[Property(name=k, value=str(v)) for k, v in sorted(properties.items())])
    bom.metadata.component = root
    comps = []
    for it in sorted(items, key=lambda i: (i.kind, i.name.lower(), i.version or "")):
        comps.append(Component(
            type=types[it.kind], name=it.name, version=it.version, bom_ref=it.ref, description=it.description,
            purl=PackageURL.from_string(it.purl) if it.purl else None,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in sorted(set(it.hashes))],
            licenses=_cdx_licenses(it.licenses) if it.licenses else None,
            properties=[Property(name=k, value=str(v)) for k, v in sorted(it.properties.items())]))
    for c in comps:
        bom.components.add(c)
    bom.register_dependency(root, comps)
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


@functools.cache
def _validator():
    return JsonStrictValidator(SchemaVersion.V1_6)


def validate(text: str) -> None:
    """Raise SbomError unless `text` validates against the CycloneDX 1.6 JSON schema (the library's validator)."""
    err = _validator().validate_str(text)
    if err is not None:
        raise SbomError(f"the SBOM does not validate against the CycloneDX {SCHEMA} schema: {err}")


def summary(text: str) -> dict:
    doc = json.loads(text)
    kinds: dict[str, int] = {}
    for c in doc.get("components", []):
        kinds[c["type"]] = kinds.get(c["type"], 0) + 1
    return {"spec_version": doc.get("specVersion"), "serial": doc.get("serialNumber"), "components": kinds,
            "sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode())}


def same_contents(path: Path, text: str) -> bool:
    """Does the SBOM at path list the same components as `text` (equal serial numbers)?"""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("serialNumber") == json.loads(text)["serialNumber"]
    except (OSError, ValueError):
        return False


def _pypi(name: str, version: str) -> str:
    return f"pkg:pypi/{normalize(name)}@{version}"


def _deb_purl(pkg: str, version: str, arch: str) -> str:
    return PackageURL(type="deb", namespace="debian", name=pkg, version=version,
                      qualifiers={"arch": arch, "distro": f"debian-{_debian_version()}"}).to_string()


def _debian_version() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip().split(".")[0]
    except OSError:
        return "unknown"


def _asset_items(model_file_hash, pack_hash, deb_hash) -> list[Item]:
    """Models and data packs of the asset table. The three callables give a hash or (None, reason)."""
    items = []
    for a in ASSETS:
        props = {"zeropoint:license-source": a.license_source, "zeropoint:source": f"{a.source} {a.spec}"}
        hashes: list[str] = []
        if a.kind == "model":
            for n, rel in enumerate(a.contents):
                h, why = model_file_hash(a, rel)
                if h:
                    props[f"zeropoint:file-sha256:{rel}"] = h
                    if n == 0:
                        hashes, props["zeropoint:hash-source"] = [h], f"file {rel}"
                elif n == 0:
                    props["zeropoint:hash-unavailable"] = why
        else:
            h, why = (deb_hash if a.source == "deb" else pack_hash)(a)
            if h:
                hashes, props["zeropoint:hash-source"] = [h], why
            else:
                props["zeropoint:hash-unavailable"] = why
        items.append(Item(a.kind, a.name, a.version, hashes, [a.license],
                          description=a.description, properties=props))
    return items


# ---- the SBOM of a bundle ------------------------------------------------------------------------------------------
def _wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as zf:
        name = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if name is None:
            raise SbomError(f"{path.name} has no .dist-info/METADATA: not a wheel")
        # str, not bytes: the bytes parser hands non-ASCII fields back as Header objects
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8", errors="replace"), headersonly=True)


def _zip_member_sha256(path: Path, member: str) -> str | None:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            return None
        h = hashlib.sha256()
        with zf.open(info) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()


def _read_tsv(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def bundle_items(root: Path) -> list[Item]:
    """Components of a bundle directory, every hash computed from its files."""
    root = Path(root)
    items: list[Item] = []
    weight_wheels = {}
    for sub in ("wheels", "weights"):
        for whl in sorted((root / sub).glob("*.whl")):
            meta = _wheel_metadata(whl)
            name, version = meta["Name"], meta["Version"]
            items.append(Item("python", name, version, [sha256_file(whl)], python_licenses(meta), _pypi(name, version),
                              meta.get("Summary"), {"zeropoint:hash-source": f"bundle {sub}/{whl.name}"}))
            if sub == "weights":
                weight_wheels[normalize(name)] = whl
    for row in _read_tsv(root / "debs" / "index.tsv"):
        pkg, ver, arch, path = row[:4]
        lic = [x for x in (row[4] if len(row) > 4 else "").split(";") if x]
        props = {"zeropoint:hash-source": f"bundle {path}"}
        if not lic:
            props["zeropoint:license-unavailable"] = "the package's copyright file is not machine-readable (DEP-5)"
        items.append(Item("deb", pkg, ver, [sha256_file(root / path)], lic, _deb_purl(pkg, ver, arch), None, props))
    data = {r[0]: r for r in _read_tsv(root / "data" / "index.tsv")}
    debs = {r[0]: r for r in _read_tsv(root / "debs" / "index.tsv")}

    def model_hash(a, rel):
        whl = weight_wheels.get(normalize(a.package))
        if whl is None:
            return None, "its weight wheel is not in this bundle (packed --without weights)"
        return _zip_member_sha256(whl, rel), f"{rel} is not in {whl.name}"

    def pack_hash(a):
        row = data.get(a.name)
        return (row[3], f"bundle {row[2]}") if row else (None, "not in this bundle (packed --without data)")

    def deb_hash(a):
        row = debs.get(a.spec)
        return (sha256_file(root / row[3]), f"bundle {row[3]}") if row else (None, "its Debian package is not in this bundle")
    return items + _asset_items(model_hash, pack_hash, deb_hash)


def bundle_sbom(root: Path, meta: dict) -> str:
    props = {f"zeropoint:{k}": v for k, v in meta.items() if isinstance(v, (str, int)) and v is not None}
    created = datetime.fromisoformat(meta["created"]) if meta.get("created") else None
    text = to_json(bundle_items(root), "zeropoint-appliance-bundle", meta.get("zeropoint_version", __version__),
                   props, created)
    validate(text)
    return text


# ---- the SBOM of the appliance installed here ----------------------------------------------------------------------
def _record() -> tuple[dict[str, str], dict]:
    """{bundle path: sha256} and bundle.json of the bundle install.sh installed into this venv (empty when none)."""
    man = RECORD_DIR / MANIFEST
    if not man.is_file():
        return {}, {}
    _, files = parse_manifest(man.read_text(encoding="utf-8"))
    try:
        meta = json.loads((RECORD_DIR / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    return files, meta


def _default_deb_roots() -> list[str]:
    py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return [py, f"{py}-venv", "clang", "dataset-fashion-mnist", "chromium"]


def installed_items(workspace_manifest: Path | None = None) -> tuple[list[Item], dict]:
    """Components of this installation: the Python distributions importable here, the Debian packages the
    appliance needs as dpkg has them, the weights and data packs it uses, the governed datasets."""
    rec_files, rec_meta = _record()
    wheel_hash = {}
    for path, h in rec_files.items():
        m = _WHEEL.match(path.rsplit("/", 1)[-1])
        if m and path.startswith(("wheels/", "weights/")):
            wheel_hash[(normalize(m["name"]), m["version"])] = (h, f"bundle {path}")
    locked = {}
    for lock in (REPO_ROOT / "requirements.lock", REPO_ROOT / "requirements-assets.lock"):
        if lock.is_file():
            locked.update(parse_lock(lock.read_text(encoding="utf-8")))
    items: list[Item] = []
    seen = set()
    for dist in importlib_metadata.distributions():
        meta = dist.metadata
        name, version = meta["Name"], meta["Version"]
        if not name or normalize(name) in seen:
            continue
        seen.add(normalize(name))
        props = {}
        hashes: list[str] = []
        key = (normalize(name), version)
        if key in wheel_hash:
            hashes, props["zeropoint:hash-source"] = [wheel_hash[key][0]], wheel_hash[key][1]
        elif key[0] in locked and locked[key[0]].version == version:
            hashes, props["zeropoint:hash-source"] = list(locked[key[0]].hashes), "requirements.lock"
        else:
            props["zeropoint:hash-unavailable"] = ("not installed from a bundle or a hashed lock (e.g. the editable "
                                                   "project itself, or pip/setuptools of the venv)")
        items.append(Item("python", name, version, hashes, python_licenses(meta), _pypi(name, version),
                          meta.get("Summary"), props))
    deb_rows = _read_tsv(RECORD_DIR / "debs.tsv")
    deb_sha = {(r[0], r[1]): (rec_files.get(r[3]), f"bundle {r[3]}") for r in deb_rows}
    pkgs = debian.installed_packages()
    for p in debian.installed_closure([r[0] for r in deb_rows] or _default_deb_roots(), pkgs):
        h, src = deb_sha.get((p.package, p.version), (None, None))
        lic = debian.copyright_licenses(debian.installed_copyright(p.package) or "")
        props = {"zeropoint:hash-source": src} if h else {
            "zeropoint:hash-unavailable": "installed by apt, not from a bundle: dpkg keeps no hash of the .deb"}
        if not lic:
            props["zeropoint:license-unavailable"] = "the package's copyright file is not machine-readable (DEP-5)"
        items.append(Item("deb", p.package, p.version, [h] if h else [], lic, _deb_purl(p.package, p.version, p.arch),
                          None, props))
    pack_sha = {}
    sums = REPO_ROOT / "scripts" / "assets.sha256"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            if line.strip():
                h, f = line.split()
                pack_sha[f] = (h, f"scripts/assets.sha256 {f} (checked by set-up before unpacking)")
    for path, h in rec_files.items():
        if path.startswith("data/"):
            pack_sha[path.split("/", 1)[1]] = (h, f"bundle {path}")

    def model_hash(a, rel):
        top, _, inner = rel.partition("/")
        spec = importlib.util.find_spec(top)
        d = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        p = d / inner if d else None
        return (sha256_file(p), None) if p and p.is_file() else (None, f"{rel} is not installed here")

    def pack_hash(a):
        ok = data_assets.assets_root() / a.name / ".ok"
        if not ok.is_file():
            return None, f"{a.name} is not unpacked under {data_assets.assets_root()}"
        for fname, (h, src) in pack_sha.items():
            if a.is_pack_file(fname):
                return h, src
        return None, "no recorded hash for its pack"

    def deb_hash(a):
        p = pkgs.get(a.spec)
        if p is None:
            return None, f"Debian package {a.spec} is not installed"
        h, src = deb_sha.get((p.package, p.version), (None, None))
        return (h, src) if h else (None, "installed by apt, not from a bundle: dpkg keeps no hash of the .deb")
    items += _asset_items(model_hash, pack_hash, deb_hash)
    items += governed_items(workspace_manifest)
    return items, rec_meta


def governed_items(manifest: Path | None = None) -> list[Item]:
    """Datasets registered in the workspace's governance manifest: their SHA-256, license and approval."""
    items = []
    for ds in list_datasets(manifest):
        appr = ds.get("approval") or {}
        items.append(Item("dataset", ds["name"], str(ds.get("version")), [ds["sha256"]],
                          [ds["license"]["expression"]], description=ds.get("description"), properties={
                              "zeropoint:hash-source": "governance manifest: SHA-256 over the dataset's file list "
                                                       "(path, size, sha256 of each file)",
                              "zeropoint:governance": "registered in the workspace's datasets/manifest.yaml",
                              "zeropoint:approval": appr.get("status") or "none",
                              "zeropoint:approver": appr.get("approver") or "",
                              "zeropoint:files": str(ds.get("file_count")),
                              "zeropoint:bytes": str(ds.get("total_bytes")),
                              "zeropoint:license-source": "zpctl data add --license (governance manifest)"}))
    return items


def installed_sbom(workspace_manifest: Path | None = None) -> str:
    items, rec = installed_items(workspace_manifest)
    props = {"zeropoint:python": platform.python_version(), "zeropoint:prefix": sys.prefix,
             "zeropoint:machine": platform.machine()}
    if rec:
        props.update({"zeropoint:installed-from-bundle": rec.get("bundle_id", ""),
                      "zeropoint:bundle-created": rec.get("created", "")})
    text = to_json(items, "zeropoint-appliance", __version__, props)
    validate(text)
    return text


def recorded_sbom() -> Path:
    """The SBOM on record for this installation: $ZP_SBOM, else the one install.sh wrote into the venv."""
    return Path(os.environ.get("ZP_SBOM") or RECORD_DIR / SBOM_NAME)


def sbom_status() -> dict:
    """What `zpctl diag` reports: the recorded SBOM's SHA-256, and whether it still describes this installation."""
    p = recorded_sbom()
    if not p.is_file():
        return {"path": None, "sha256": None, "serial": None, "current_serial": None, "matches": None,
                "reason": f"no SBOM recorded at {p}: install.sh writes one when it installs a bundle; elsewhere run "
                          "`zpctl appliance sbom --out FILE` and set ZP_SBOM=FILE"}
    current = serial_for(installed_items()[0])
    text = p.read_text(encoding="utf-8")
    try:
        serial = json.loads(text).get("serialNumber")
    except ValueError:
        serial = None
    return {"path": str(p), "sha256": hashlib.sha256(text.encode()).hexdigest(), "serial": serial,
            "current_serial": f"urn:uuid:{current}", "matches": serial == f"urn:uuid:{current}"}
