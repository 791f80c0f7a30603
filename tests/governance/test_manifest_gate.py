import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from zeropoint.cli.main import app
from zeropoint.errors import ZeropointError
from zeropoint.governance import audit, manifest as M
from zeropoint.governance.croissant import to_croissant
from zeropoint.governance.gate import read_verified, require_approved


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("The quick brown fox.\n" * 50)
    (d / "sub" / "b.txt").write_text("Jumps over the lazy dog.\n" * 80)
    (d / "notes.md").write_text("not part of the dataset\n")
    (d / "train.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n{"text": "z"}')
    return d


def _ready(corpus, name="demo", license="MIT", include=("*.txt",)):
    M.add_dataset(corpus, name, license, "public", include=list(include), actor="alice")
    M.scan_dataset(name, actor="alice")
    return M.approve(name, "bob")


def test_add_hashes_equal_sha256sum(corpus):
    e = M.add_dataset(corpus, "demo", "mit", "public", source_url="https://example.org", include=["*.txt"])
    assert e["license"]["expression"] == "MIT" and e["file_count"] == 2 and e["sample_count"] == 2
    for f in e["files"]:
        assert Path(f["path"]).is_absolute()
        out = subprocess.run(["sha256sum", f["path"]], capture_output=True, text=True, check=True).stdout
        assert f["sha256"] == out.split()[0]
        assert f["size"] == Path(f["path"]).stat().st_size
    stored = yaml.safe_load(M.manifest_path().read_text())["datasets"]["demo"]
    assert stored["sha256"] == M.files_digest(stored["files"]) and stored["approval"]["status"] == "pending"
    assert audit.read_events()[-1]["action"] == "dataset_add"


def test_jsonl_counts_records(corpus):
    e = M.add_dataset(corpus, "recs", "MIT", "public", include=["*.jsonl"])
    assert e["sample_count"] == 3 and e["sample_unit"] == "records"


def test_add_refuses_bad_input_clearly(corpus):
    with pytest.raises(ZeropointError, match="name"):
        M.add_dataset(corpus, "Bad Name!", "MIT", "public")
    with pytest.raises(ZeropointError, match="source type"):
        M.add_dataset(corpus, "x", "MIT", "scraped")
    with pytest.raises(ZeropointError, match="no files"):
        M.add_dataset(corpus, "x", "MIT", "public", include=["*.parquet"])
    M.add_dataset(corpus, "x", "MIT", "public")
    with pytest.raises(ZeropointError, match="--replace"):
        M.add_dataset(corpus, "x", "MIT", "public")


def test_approve_gate_and_records(corpus):
    appr = _ready(corpus)
    assert appr["status"] == "approved" and appr["policy_version"] == "default-1" and appr["policy_sha256"]
    recs = require_approved(["demo"], actor="trainer", purpose="unit test", run_id="run-1")
    r = recs[0]
    assert set(r) >= {"name", "version", "license", "sha256", "files", "sample_count"}
    assert r["license"] == "MIT" and len(r["files"]) == 2 and all(Path(f["path"]).is_file() for f in r["files"])
    last = audit.read_events()[-1]
    assert last["action"] == "training_use" and last["details"]["run_id"] == "run-1" and last["actor"] == "trainer"
    assert audit.verify_chain().ok


def test_flipped_byte_fails_verify_and_gate_naming_the_file(corpus):
    _ready(corpus)
    target = corpus / "sub" / "b.txt"
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    res = M.verify("demo")
    assert not res[0]["ok"] and res[0]["problems"][0]["path"] == str(target)
    with pytest.raises(M.DatasetChanged, match=str(target)):
        require_approved(["demo"], actor="trainer", purpose="test")
    assert audit.read_events()[-1]["outcome"] == "refused"
    r = CliRunner().invoke(app, ["data", "verify", "demo"])
    assert r.exit_code == 1 and "b.txt" in r.stdout


def test_gate_refuses_unapproved_and_rejected(corpus):
    M.add_dataset(corpus, "demo", "MIT", "public", include=["*.txt"])
    with pytest.raises(M.NotApproved, match="zpctl data approve demo"):
        require_approved(["demo"], actor="t", purpose="p")
    M.reject("demo", "carol", "contains test data")
    with pytest.raises(M.NotApproved, match="rejected"):
        require_approved(["demo"], actor="t", purpose="p")
    with pytest.raises(M.UnknownDataset, match="zpctl data add"):
        require_approved(["nope"], actor="t", purpose="p")


def test_approval_refusal_lists_every_failed_rule(corpus):
    M.add_dataset(corpus, "nc", "CC-BY-NC-4.0", "synthetic", include=["*.txt"])
    with pytest.raises(M.ApprovalRefused) as ei:
        M.approve("nc", "bob")
    msg = str(ei.value)
    for rule in ("sources.synthetic_allowed", "licenses", "pii.scanned"):
        assert rule in msg
    assert audit.read_events()[-1]["outcome"] == "refused"


def test_review_needs_explicit_acceptance(corpus):
    M.add_dataset(corpus, "sa", "CC-BY-SA-4.0", "public", include=["*.txt"])
    M.scan_dataset("sa")
    with pytest.raises(M.ApprovalRefused, match="accept-review"):
        M.approve("sa", "bob")
    a = M.approve("sa", "bob", accept_review="share-alike terms reviewed by legal")
    assert a["accepted_review"] and require_approved(["sa"], actor="t", purpose="p")


def test_license_text_deny_phrase(corpus):
    (corpus / "LICENSE").write_text("Permission granted for research. No AI training permitted.\n")
    M.add_dataset(corpus, "ph", "MIT", "public")
    M.scan_dataset("ph")
    with pytest.raises(M.ApprovalRefused, match="deny_phrases"):
        M.approve("ph", "bob")


def test_policy_change_after_approval_is_rechecked(corpus):
    from zeropoint.governance.policy import init_policy, policy_path
    _ready(corpus)
    init_policy()
    p = policy_path()
    p.write_text(p.read_text().replace("deny: [LicenseRef-proprietary", "deny: [MIT, LicenseRef-proprietary"))
    with pytest.raises(ZeropointError, match="licenses"):
        require_approved(["demo"], actor="t", purpose="p")
    changes = [e for e in audit.read_events() if e["action"] == "policy_change"]
    assert changes and changes[-1]["details"]["detected"] and changes[-1]["details"]["previous_sha256"]


def test_edited_manifest_is_not_trusted(corpus):
    _ready(corpus)
    m = yaml.safe_load(M.manifest_path().read_text())
    m["datasets"]["demo"]["files"][0]["sha256"] = "0" * 64
    M.manifest_path().write_text(yaml.safe_dump(m))
    with pytest.raises(M.NotApproved, match="different contents"):
        require_approved(["demo"], actor="t", purpose="p")


def test_croissant_has_sha256_per_file(corpus):
    _ready(corpus)
    doc = to_croissant("demo")
    assert doc["@type"] == "sc:Dataset" and doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    fos = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    entry = M.get_dataset("demo")
    assert sorted(f["sha256"] for f in fos) == sorted(f["sha256"] for f in entry["files"])
    assert doc["license"] == "https://spdx.org/licenses/MIT.html"
    r = CliRunner().invoke(app, ["data", "croissant", "demo"])
    assert r.exit_code == 0 and json.loads(r.stdout)["name"] == "demo"


def test_cli_end_to_end(corpus):
    run = CliRunner().invoke
    r = run(app, ["data", "add", str(corpus), "--name", "cli", "--license", "Apache-2.0", "--source-type", "public",
                  "--include", "*.txt", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["file_count"] == 2
    assert run(app, ["data", "approve", "cli", "--approver", "bob"]).exit_code == 2   # not scanned yet
    assert run(app, ["data", "scan", "cli", "--json"]).exit_code == 0
    r = run(app, ["data", "approve", "cli", "--approver", "bob", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "approved"
    r = run(app, ["data", "ls", "--json"])
    assert json.loads(r.stdout)[0]["approval"] == "approved"
    assert run(app, ["audit", "verify"]).exit_code == 0


def test_sotu_register_scan_approve_gate():
    from zeropoint.data.assets import sotu_dir
    e = M.add_dataset(sotu_dir(), "sotu", "CC0-1.0", "public", include=["*.txt"])
    assert e["file_count"] == 233 and all(f["path"].endswith(".txt") for f in e["files"])
    s = M.scan_dataset("sotu")
    assert s["bytes"] == e["total_bytes"] and s["risk"] in ("none", "low")
    M.approve("sotu", "demo-approver")
    recs = require_approved(["sotu"], actor="demo", purpose="llm finetune")
    assert recs[0]["sample_count"] == 233


def test_read_verified_catches_a_swap_after_the_gate(corpus):
    _ready(corpus)
    f = require_approved(["demo"], actor="t", purpose="p")[0]["files"][0]
    assert read_verified(f) == Path(f["path"]).read_bytes()
    Path(f["path"]).write_text("swapped")
    with pytest.raises(M.DatasetChanged, match="changed between"):
        read_verified(f)


def _add_one(args):
    d, name = args
    M.add_dataset(d, name, "MIT", "public")


def test_concurrent_adds_from_processes_all_land(tmp_path):
    import multiprocessing as mp
    dirs = []
    for i in range(4):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "x.txt").write_text(f"dataset {i}\n")
        dirs.append((d, f"ds{i}"))
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_add_one, dirs)
    assert sorted(d["name"] for d in M.list_datasets()) == ["ds0", "ds1", "ds2", "ds3"]
    assert audit.verify_chain().ok and len(audit.read_events()) == 4


def test_declared_license_vs_real_text(corpus):
    gpl = Path("/usr/share/common-licenses/GPL-3")
    if not gpl.exists():
        pytest.skip("no GPL-3 text on this machine")
    (corpus / "LICENSE").write_text(gpl.read_text())
    M.add_dataset(corpus, "mism", "MIT", "public")
    M.scan_dataset("mism")
    with pytest.raises(M.ApprovalRefused, match="licenses.text_mismatch") as ei:
        M.approve("mism", "bob")
    assert "GPL-3.0-only" in str(ei.value)
    M.add_dataset(corpus, "honest", "GPL-3.0-or-later", "public")
    M.scan_dataset("honest")
    checks = M.evaluate(dict(M.get_dataset("honest"), name="honest"), __import__(
        "zeropoint.governance.policy", fromlist=["load_policy"]).load_policy()[0])
    assert not [c for c in checks if c["rule"] == "licenses.text_mismatch"]
    # a share-alike text honestly declared still needs a human: copyleft is "review" by default
    assert [c["outcome"] for c in checks if c["rule"] == "licenses"] == ["review"]
