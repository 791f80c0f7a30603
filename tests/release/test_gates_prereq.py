"""The prerequisite gates on real files without any model compute (runs in CI in seconds): a checkpoint written by
the checkpoint library, a run record holding what the governance gate returned for an approved corpus."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from zeropoint.errors import ZeropointError

from zeropoint.release.gates import ReleaseContext, gate_checkpoint, gate_governance
from zeropoint.release.policy import ReleasePolicy


def _corpus(tmp_path, name="corp"):
    from zeropoint.governance import manifest as M
    d = tmp_path / name
    d.mkdir()
    for i in range(4):
        (d / f"doc{i}.txt").write_text(f"Document {i}. " * 20)
    M.add_dataset(d, name, "CC0-1.0", "public", include=["*.txt"], actor="tester")
    M.scan_dataset(name, actor="tester")
    M.approve(name, "tester")
    return d


def _run_with_checkpoint(tmp_path, datasets, **record) -> tuple[Path, Path]:
    from zeropoint.checkpoint import save_checkpoint
    from zeropoint.workspace import workspace
    run = workspace().runs / "llm_finetune-test-0001"
    run.mkdir(parents=True)
    cfg_sha = "c" * 64
    rec = {"id": run.name, "kind": "llm_finetune", "status": "succeeded", "simulated": False, "device": "CPU",
           "config": {"recipe": "llm_finetune"}, "config_sha256": cfg_sha, "datasets": datasets, **record}
    (run / "run.json").write_text(json.dumps(rec))
    ck = save_checkpoint(run / "checkpoints", 2, weights={"w": np.ones((2, 2), np.float32)}, weights_kind="adapter",
                         optimizer={"m.w": np.zeros((2, 2), np.float32)}, state={}, config={"recipe": "llm_finetune"},
                         config_sha256=cfg_sha)
    return ck, run


def _ctx(ck, run):
    return ReleaseContext(checkpoint=ck, run_dir=run, run_record=json.loads((run / "run.json").read_text()),
                          policy=ReleasePolicy(), baseline="b", actor="tester")


def _records(name="corp"):
    from zeropoint.governance.gate import require_approved
    return require_approved([name], actor="tester", purpose="test")


def test_governance_passes_then_fails_on_a_changed_file_and_on_re_registration(tmp_path):
    from zeropoint.governance import manifest as M
    d = _corpus(tmp_path)
    ck, run = _run_with_checkpoint(tmp_path, _records())
    g = gate_governance(_ctx(ck, run))
    assert g.passed, g.reason
    assert json.loads(g.evidence["governance/datasets.json"])[0]["verify"]["ok"] is True
    victim = d / "doc2.txt"
    victim.write_text(victim.read_text() + "edited after approval")
    g = gate_governance(_ctx(ck, run))
    assert not g.passed and f"file {victim} changed after approval" in g.reason
    # re-registered and re-approved with the edit: approved, unchanged, but not what the checkpoint trained on
    M.add_dataset(d, "corp", "CC0-1.0", "public", include=["*.txt"], actor="tester", replace=True)
    M.scan_dataset("corp", actor="tester")
    M.approve("corp", "tester")
    g = gate_governance(_ctx(ck, run))
    assert not g.passed and "re-registered after training" in g.reason


def test_governance_fails_without_datasets_and_for_unapproved(tmp_path):
    from zeropoint.governance import manifest as M
    ck, run = _run_with_checkpoint(tmp_path, [])
    g = gate_governance(_ctx(ck, run))
    assert not g.passed and "no governed datasets" in g.reason
    _corpus(tmp_path)
    recs = _records()
    M.reject("corp", "tester", "license question")
    os.rename(run, run.with_name("old"))
    ck, run = _run_with_checkpoint(tmp_path, recs)
    g = gate_governance(_ctx(ck, run))
    assert not g.passed and "is rejected, not approved" in g.reason


@pytest.mark.parametrize("case", ["ok", "tampered", "simulated", "killed", "other_config"])
def test_checkpoint_gate(tmp_path, case):
    extra = {"simulated": {"simulated": True, "simulated_reasons": ["mock flag ZP_MOCK is set"]},
             "killed": {"status": "running", "pid": 2 ** 22 + 12345, "host": __import__("platform").node()},
             "other_config": {"config_sha256": "d" * 64}}.get(case, {})
    ck, run = _run_with_checkpoint(tmp_path, [], **extra)
    if case == "tampered":
        p = ck / "adapter.safetensors"
        b = bytearray(p.read_bytes())
        b[-1] ^= 1
        p.write_bytes(bytes(b))
    g = gate_checkpoint(_ctx(ck, run))
    want = {"ok": None, "tampered": "adapter.safetensors", "simulated": "SIMULATED", "killed": "interrupted",
            "other_config": "config hash"}[case]
    assert g.passed is (case == "ok"), g.reason
    if want:
        assert want in g.reason
    else:
        assert {"checkpoint/manifest.json", "run/run.json"} <= set(g.evidence)


def test_release_with_changed_data_fails_without_compute_and_bundle_says_so(tmp_path):
    """The whole pipeline: prerequisites fail, compute gates are listed as not run, the signed bundle records the
    failure, and the audit chain holds each gate's verdict."""
    from zeropoint.governance.audit import read_events
    from zeropoint.release.keys import init_keys, key_paths
    from zeropoint.release.pipeline import release
    from zeropoint.release.verify import verify_bundle
    init_keys()
    d = _corpus(tmp_path)
    ck, run = _run_with_checkpoint(tmp_path, _records())
    with pytest.raises(ZeropointError, match="no baseline 'nobaseline'.*--baseline-model"):
        release(ck, "nobaseline")           # refused before any gate runs or any bundle is written
    assert not (Path(os.environ["ZP_HOME"]) / "releases").exists()
    (d / "doc0.txt").unlink()
    res = release(ck, "nobaseline", baseline_model="smollm2-135m")   # never evaluated: compute gates are skipped
    by = {g["name"]: g for g in res["gates"]}
    assert res["passed"] is False and by["governance"]["passed"] is False and "is missing" in by["governance"]["reason"]
    assert [by[n]["passed"] for n in ("eval_drift", "export:gguf", "redteam", "bias", "bench")] == [None] * 5
    harms = {i["id"]: i for i in res["harms_checklist"]["items"]}
    assert harms["data_corruption"]["status"] == "fail" and "is missing" in harms["data_corruption"]["reason"]
    assert harms["bias"]["status"] == "not assessed" and "did not run" in harms["bias"]["reason"]
    assert harms["misuse"]["status"] == "not assessed"
    rep = verify_bundle(res["tar"], key_paths()[1])
    checks = {c["check"]: c for c in rep["checks"]}
    assert checks["signature"]["ok"] and checks["files"]["ok"] and checks["audit_chain"]["ok"]
    assert not checks["gates"]["ok"] and "governance" in checks["gates"]["detail"]
    evs = [e for e in read_events() if e["action"] in ("release_gate", "release")]
    assert [e["outcome"] for e in evs] == ["fail", "pass", "skipped", "skipped", "skipped", "skipped", "skipped", "fail"]
    seg = [json.loads(l) for l in (Path(res["bundle"]) / "audit" / "segment.jsonl").read_text().splitlines()]
    assert seg[0]["action"] == "dataset_approve" and seg[-1]["action"] == "release"
