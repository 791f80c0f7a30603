"""The CycloneDX SBOM of this installation and of a bundle: schema-valid (the library's validator), every package
with version and license, tinygrad and the SmolLM2 weights with their hashes, governed datasets from the manifest;
`zpctl diag` reports the recorded SBOM's hash and whether it still describes the installation."""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest

from zeropoint.data.assets import smollm2_gguf, sotu_dir
from zeropoint.hashing import sha256_file
from zeropoint.supplychain import lock, sbom

from ..helpers import zpctl, zpctl_json
from .bundles import make_bundle, new_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`zpctl data add` a governed slice, then `zpctl appliance sbom --out` in that workspace."""
    home = tmp_path_factory.mktemp("zphome")
    env = {"ZP_HOME": str(home)}
    r = zpctl("data", "add", sotu_dir(), "--name", "sotu-slice", "--license", "CC0-1.0 AND PDDL-1.0",
              "--source-type", "public", "--include", "199*.txt", env=env)
    assert r.returncode == 0, r.stderr
    out = home / "sbom.cdx.json"
    r = zpctl("appliance", "sbom", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stderr
    first = out.read_bytes()
    r = zpctl("appliance", "sbom", "--out", out, env=env)     # same contents: the file (and its hash) stays put
    assert r.returncode == 0 and "unchanged" in r.stderr and out.read_bytes() == first
    return out, json.loads(out.read_text()), env


def _component(doc, name, type_=None):
    hits = [c for c in doc["components"] if c["name"] == name and (type_ is None or c["type"] == type_)]
    assert len(hits) == 1, f"{name}: {len(hits)} components"
    return hits[0]


def test_installed_sbom_validates_against_the_cyclonedx_schema(installed):
    out, doc, _ = installed
    sbom.validate(out.read_text())            # the library's strict JSON-schema validator
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    broken = dict(doc, components=[dict(doc["components"][0], type="not-a-type")] + doc["components"][1:])
    with pytest.raises(sbom.SbomError, match="does not validate"):
        sbom.validate(json.dumps(broken))


def test_every_python_distribution_is_listed_with_version_and_license(installed):
    _, doc, _ = installed
    listed = {(c["name"].lower(), c["version"]) for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/")}
    seen = set()
    for d in metadata.distributions():
        key = lock.normalize(d.metadata["Name"])
        if key not in seen:
            seen.add(key)
            assert (d.metadata["Name"].lower(), d.metadata["Version"]) in listed
    licensed = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/") and c.get("licenses")]
    assert len(licensed) >= 0.9 * len(listed)


def test_tinygrad_is_listed_with_its_locked_hashes(installed):
    _, doc, _ = installed
    tg = _component(doc, "tinygrad")
    locked = lock.parse_lock((REPO / "requirements.lock").read_text())["tinygrad"]
    assert tg["version"] == locked.version == metadata.version("tinygrad")
    assert {h["content"] for h in tg["hashes"]} == set(locked.hashes)
    assert tg["licenses"][0]["license"]["id"] == "MIT"


def test_smollm2_weights_are_listed_with_the_hash_of_the_gguf(installed):
    _, doc, _ = installed
    m = _component(doc, "SmolLM2-135M-Instruct", "machine-learning-model")
    assert m["hashes"] == [{"alg": "SHA-256", "content": sha256_file(smollm2_gguf())}]
    assert m["licenses"][0]["license"]["id"] == "Apache-2.0"


def test_debian_packages_and_governed_datasets_are_listed(installed, monkeypatch):
    _, doc, env = installed
    clang = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/debian/clang-")]
    assert clang and all(c["version"] for c in clang)
    from zeropoint.governance.manifest import get_dataset
    monkeypatch.setenv("ZP_HOME", env["ZP_HOME"])
    ds = get_dataset("sotu-slice")
    g = _component(doc, "sotu-slice", "data")
    assert g["hashes"][0]["content"] == ds["sha256"]
    assert g["licenses"][0]["expression"] == "CC0-1.0 AND PDDL-1.0"
    props = {p["name"]: p["value"] for p in g["properties"]}
    assert props["zeropoint:approval"] == "pending"


def test_diag_reports_the_recorded_sbom_hash(installed, monkeypatch):
    out, doc, env = installed
    r, d = zpctl_json("diag", "--json", "--no-parity", env=dict(env, ZP_SBOM=str(out)))
    assert r.returncode == 0, r.stderr
    assert d["sbom"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert d["sbom"]["serial"] == doc["serialNumber"] and d["sbom"]["matches"] is True
    monkeypatch.setenv("ZP_SBOM", str(out.with_name("none.json")))
    st = sbom.sbom_status()
    assert st["sha256"] is None and "no SBOM recorded" in st["reason"]


def test_bundle_sbom_hashes_the_bundle_files(tmp_path):
    key, _ = new_key(tmp_path, "k")
    b = make_bundle(tmp_path, key)
    doc = json.loads((b / sbom.SBOM_NAME).read_text())
    tiny = _component(doc, "zp_tiny")
    assert tiny["hashes"][0]["content"] == sha256_file(b / "wheels" / "zp_tiny-1.0-py3-none-any.whl")
    assert tiny["licenses"][0]["license"]["id"] == "MIT"
    smol = _component(doc, "SmolLM2-135M-Instruct")
    props = {p["name"]: p["value"] for p in smol["properties"]}
    assert "hashes" not in smol and "not in this bundle" in props["zeropoint:hash-unavailable"]
    r = zpctl("appliance", "sbom", "--bundle", b)
    assert r.returncode == 0 and json.loads(r.stdout)["serialNumber"] == doc["serialNumber"]
