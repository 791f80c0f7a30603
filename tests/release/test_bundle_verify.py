"""Signed bundles without any model: real keys, real audit events, real files; every tamper is caught and named.

The compute path (a real tiny LoRA release) is in test_release_tiny.py; here the bundle writer and the
standalone verifier are exercised directly so these run in CI in seconds.
"""
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from zeropoint.errors import ConfigError, ZeropointError

VERIFY_PY = Path(__file__).resolve().parents[2] / "src" / "zeropoint" / "release" / "verify.py"


def _gates(passed=True):
    return [{"name": "governance", "passed": True, "rule": "r1", "reason": "ok"},
            {"name": "redteam", "passed": passed, "rule": "r2", "reason": "ok" if passed else "jailbreak ASR 0.9 > 0.5"}]


def make_bundle(tmp_path, name="b", passed=True, harms=None, signed_harms=None) -> Path:
    from zeropoint.governance.audit import append_event
    from zeropoint.release.bundle import audit_segment, write_bundle
    from zeropoint.release.keys import init_keys, key_paths
    if not key_paths()[0].exists():
        init_keys()
    append_event("tester", "dataset_approve", "dataset:x", {"sha256": "ab" * 32, "note": "ünïcode ✓"})
    first = append_event("tester", "release_start", "checkpoint:c", {"release_id": name})
    last = append_event("tester", "release", "checkpoint:c", {"passed": passed}, outcome="pass" if passed else "fail")
    seg, head = audit_segment(first["seq"] - 1, last["seq"])
    gates = _gates(passed)
    rel = {"release_id": name, "passed": passed, "gates": gates}
    meta = {"release_id": name, "passed": passed, "gates": [{"name": g["name"], "passed": g["passed"]} for g in gates]}
    if harms is not None:
        rel["harms_checklist"] = {"version": 1, "items": harms}
        meta["harms"] = signed_harms if signed_harms is not None else [{"id": i["id"], "status": i["status"]} for i in harms]
    files = {"release.json": (json.dumps(rel) + "\n").encode(),
             "eval/results.json": b'{"acc": 0.5}\n', "run/run.json": b"{}\n",
             "audit/segment.jsonl": seg, "audit/head.json": json.dumps(head).encode()}
    write_bundle(tmp_path / name, files, meta)
    return tmp_path / name


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path)


def _pub():
    from zeropoint.release.keys import key_paths
    return key_paths()[1]


def test_bundle_verifies_as_dir_and_tar(bundle):
    from zeropoint.release.verify import verify_bundle
    for target in (bundle, bundle.with_name(bundle.name + ".tar")):
        rep = verify_bundle(target, _pub())
        assert rep["ok"], rep
        assert {c["check"] for c in rep["checks"]} == {"signature", "files", "audit_chain", "gates"}
        assert rep["key_trusted"] is True
    # without --pubkey: the embedded key checks integrity and the report says origin is unproven
    rep = verify_bundle(bundle)
    assert rep["ok"] and rep["key_trusted"] is False


def test_changing_any_byte_of_any_file_fails_naming_it(bundle, tmp_path):
    from zeropoint.release.verify import verify_bundle
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert {"bundle.json", "bundle.sig", "appliance.pub", "audit/segment.jsonl"} <= set(names)
    for i, rel in enumerate(names):
        copy = tmp_path / f"t{i}"
        shutil.copytree(bundle, copy)
        p = copy / rel
        data = bytearray(p.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0x01                       # one bit of one byte
        p.write_bytes(bytes(data))
        rep = verify_bundle(copy, _pub())
        assert not rep["ok"], rel
        named = [c for c in rep["checks"] if not c["ok"] and rel in (c.get("file") or "")]
        assert named, (rel, rep["checks"])


def test_added_removed_and_truncated_files_are_named(bundle, tmp_path):
    from zeropoint.release.verify import verify_bundle
    c1 = tmp_path / "add"
    shutil.copytree(bundle, c1)
    (c1 / "eval" / "extra.json").write_text("{}")
    rep = verify_bundle(c1, _pub())
    assert not rep["ok"] and "eval/extra.json" in rep["failed_files"]
    c2 = tmp_path / "rm"
    shutil.copytree(bundle, c2)
    (c2 / "run" / "run.json").unlink()
    rep = verify_bundle(c2, _pub())
    assert not rep["ok"] and "run/run.json" in rep["failed_files"]
    c3 = tmp_path / "sig"
    shutil.copytree(bundle, c3)
    (c3 / "bundle.sig").write_bytes((c3 / "bundle.sig").read_bytes()[:63])
    rep = verify_bundle(c3, _pub())
    assert not rep["ok"] and "bundle.sig" in rep["failed_files"]
    # a link to identical bytes elsewhere is still refused: a bundle is regular files only
    c4 = tmp_path / "link"
    shutil.copytree(bundle, c4)
    outside = tmp_path / "outside.json"
    shutil.copy(c4 / "eval" / "results.json", outside)
    (c4 / "eval" / "results.json").unlink()
    (c4 / "eval" / "results.json").symlink_to(outside)
    (c4 / "linkdir").symlink_to(tmp_path)
    rep = verify_bundle(c4, _pub())
    assert not rep["ok"] and {"eval/results.json", "linkdir"} <= set(rep["failed_files"])


def test_wrong_public_key_fails_the_signature(bundle, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from zeropoint.release.verify import verify_bundle
    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    rep = verify_bundle(bundle, other)
    sig = next(c for c in rep["checks"] if c["check"] == "signature")
    assert not rep["ok"] and not sig["ok"] and "another key" in sig["detail"]


def test_failed_gate_is_reported_by_verify(tmp_path):
    from zeropoint.release.verify import verify_bundle
    b = make_bundle(tmp_path, "failing", passed=False)
    rep = verify_bundle(b, _pub())
    gates = next(c for c in rep["checks"] if c["check"] == "gates")
    assert not rep["ok"] and not gates["ok"] and "jailbreak ASR 0.9 > 0.5" in gates["detail"]
    sig = next(c for c in rep["checks"] if c["check"] == "signature")
    assert sig["ok"]                        # authentic, but it records a failed release


def _harms(**change):
    items = [{"id": "data_corruption", "status": "pass", "reason": "re-hashed", "evidence": ["run/run.json"]},
             {"id": "bias", "status": "not assessed", "reason": "the bias gate did not run", "evidence": []}]
    for k, v in change.items():
        items[0][k] = v
    return items


@pytest.mark.parametrize("case, harms, signed, expect", [
    ("valid", _harms(), None, "2 items (1 pass, 1 not assessed"),
    ("missing evidence", _harms(evidence=["bias/gate.json"]), None, "data_corruption: evidence bias/gate.json is not in the bundle"),
    ("no evidence", _harms(evidence=[]), None, "data_corruption: pass without an evidence file"),
    ("no reason", _harms(status="not assessed", reason="", evidence=[]), None, "not assessed, without a reason"),
    ("failed item", _harms(status="fail", reason="canary reproduced"), None, "harms checklist items failed: data_corruption: canary"),
    ("not as signed", _harms(), [{"id": "data_corruption", "status": "fail"}], "differs from the one signed"),
])
def test_harms_checklist_is_checked_against_the_bundle(tmp_path, case, harms, signed, expect):
    from zeropoint.release.verify import verify_bundle
    b = make_bundle(tmp_path, name=case.replace(" ", "-"), harms=harms, signed_harms=signed)
    rep = verify_bundle(b, _pub())
    check = next(c for c in rep["checks"] if c["check"] == "harms")
    assert check["ok"] is (case == "valid") and rep["ok"] is (case == "valid"), rep["checks"]
    assert expect in check["detail"]


def test_audit_segment_chain_checks(bundle, tmp_path):
    from zeropoint.release.verify import check_audit_segment
    seg, head = bundle / "audit" / "segment.jsonl", bundle / "audit" / "head.json"
    ok, detail = check_audit_segment(seg, head)
    assert ok, detail
    lines = seg.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    cases = {"drop": lines[:1] + lines[2:], "swap": [lines[1], lines[0]] + lines[2:],
             "edit": [lines[0].replace(b'"tester"', b'"mallory"')] + lines[1:], "cut_end": lines[:-1]}
    for name, ls in cases.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_bytes(b"".join(ls))
        ok, detail = check_audit_segment(bad, head)
        assert not ok, name


def test_verifier_canonical_json_matches_the_projects():
    from zeropoint.governance.audit import read_events
    from zeropoint.hashing import canonical_json
    from zeropoint.release import verify as V
    from zeropoint.governance.audit import append_event
    append_event("tester", "x", "dataset:y", {"text": "ünïcode ✓ \"q\"", "n": [1, 2.5, None], "nested": {"b": 1, "a": 2}})
    for ev in read_events():
        assert V.canonical_json(ev) == canonical_json(ev)
        assert V.event_hash(ev) == ev["hash"]


def _tar_with(tmp_path, add) -> Path:
    p = tmp_path / "evil.tar"
    with tarfile.open(p, "w") as tf:
        add(tf)
    return p


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "fifo"])
def test_unsafe_tar_members_are_refused(tmp_path, kind):
    from zeropoint.release.verify import BundleError, verify_bundle

    def add(tf):
        info = tarfile.TarInfo({"absolute": "/etc/evil", "dotdot": "b/../../evil"}.get(kind, "b/evil"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "b/bundle.json"
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        data = b"x" if info.type == tarfile.REGTYPE else b""
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError):
        verify_bundle(_tar_with(tmp_path, add))
    assert not (tmp_path.parent / "evil").exists()


def test_standalone_verifier_runs_isolated_without_zeropoint(bundle, tmp_path):
    """verify.py copied next to a bundle tar and the public key, run with `python -I` (no PYTHONPATH, no user
    site) from a directory that holds nothing else, and with `import zeropoint` made impossible."""
    far = tmp_path / "auditor"
    far.mkdir()
    shutil.copy(VERIFY_PY, far / "verify.py")
    shutil.copy(bundle.with_name(bundle.name + ".tar"), far / "bundle.tar")
    shutil.copy(_pub(), far / "appliance.pub")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(far)}
    guard = ("import sys, runpy; sys.modules['zeropoint'] = None; sys.argv = ['verify.py'] + sys.argv[1:]; "
             "runpy.run_path('verify.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-I", "-c", guard, "bundle.tar", "--pubkey", "appliance.pub", "--json"],
                       cwd=far, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    # a tampered copy fails there too, naming the file
    shutil.copytree(bundle, far / "dir")
    (far / "dir" / "eval" / "results.json").write_bytes(b'{"acc": 0.9}\n')
    r = subprocess.run([sys.executable, "-I", "verify.py", "dir", "--pubkey", "appliance.pub"], cwd=far, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "eval/results.json" in r.stdout


def test_keys_private_is_0600_never_replaced_and_refused_when_open(tmp_path):
    from zeropoint.release import keys as K
    info = K.init_keys()
    priv = Path(info["private_key"])
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(priv.parent.stat().st_mode) == 0o700
    with pytest.raises(ZeropointError, match="never replaced"):
        K.init_keys()
    pem, exp = K.export_public(tmp_path / "pub.pem")
    assert (tmp_path / "pub.pem").read_bytes() == pem == Path(info["public_key"]).read_bytes()
    assert exp["fingerprint"] == info["fingerprint"]
    os.chmod(priv, 0o644)
    with pytest.raises(ZeropointError, match="chmod 600"):
        K.load_private_key()


def test_release_policy_is_typed_and_default_file_matches_packaged():
    import yaml
    from zeropoint.release.policy import DEFAULT_POLICY_YAML, ReleasePolicy, export_gate, load_release_policy
    repo = Path(__file__).resolve().parents[2]
    pol, _, _ = load_release_policy(repo / "configs" / "release" / "default.yaml")
    assert pol == ReleasePolicy.model_validate(yaml.safe_load(DEFAULT_POLICY_YAML))
    assert [e.format for e in pol.exports] == ["gguf"] and pol.redteam.suite == "quick"
    assert pol == ReleasePolicy()                           # the class defaults are the packaged policy
    load_release_policy(repo / "configs" / "release" / "tiny.yaml")
    bad = repo / "configs" / "release" / "default.yaml"
    raw = yaml.safe_load(bad.read_text())
    raw["redteam"]["max_tokenz"] = 3
    p = Path(os.environ["ZP_HOME"]) / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="max_tokenz.*max_tokens"):
        load_release_policy(p)
    raw = yaml.safe_load(bad.read_text())
    raw["exports"] = [{"format": "onnx", "gate": {"max_abs": 0.5}}]
    p.write_text(yaml.safe_dump(raw))
    g = export_gate(load_release_policy(p)[0].exports[0])
    assert (g.max_abs, g.min_top1) == (0.5, 1.0)            # only the key given is overridden


def test_cli_verify_exit_codes_and_release_needs_a_key(bundle, tmp_path):
    from tests.helpers import zpctl
    r = zpctl("release", "verify", str(bundle))
    assert r.returncode == 0 and "VERIFIED" in r.stdout
    (bundle / "run" / "run.json").write_text("{}\n\n")
    r = zpctl("release", "verify", str(bundle), "--json")
    assert r.returncode == 1 and "run/run.json" in json.loads(r.stdout)["failed_files"]
    r = zpctl("release", "verify", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    home = tmp_path / "fresh"
    home.mkdir()
    r = zpctl("release", "whatever-ckpt", "--baseline", "b", env={"ZP_HOME": str(home)})
    assert r.returncode == 2 and "zpctl keys init" in r.stderr
