import json

import numpy as np
import pytest

from zeropoint.checkpoint import (CheckpointError, latest_valid, list_checkpoints, load_checkpoint, save_checkpoint,
                                  verify_checkpoint)


def _save(root, step, keep=0, kind="model"):
    w = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4) + step, "b": np.ones(3, np.float32)}
    opt = {f"m.{k}": v * 0.1 for k, v in w.items()} | {f"v.{k}": v * 0.01 for k, v in w.items()}
    return save_checkpoint(root, step, weights=w, weights_kind=kind, optimizer=opt,
                           state={"rng": {"seed": 1}, "data": {"position": step}}, config={"recipe": "x"},
                           config_sha256="ab" * 32, keep=keep)


def test_roundtrip_and_manifest(tmp_path):
    p = _save(tmp_path, 20)
    assert p.name == "step-00000020"
    man = json.loads((p / "manifest.json").read_text())
    names = {f["path"] for f in man["files"]}
    assert names == {"model.safetensors", "optimizer.safetensors", "state.json", "config.json"}
    assert man["config_sha256"] == "ab" * 32 and man["step"] == 20
    ck = load_checkpoint(p)
    assert ck.step == 20 and ck.state["data"]["position"] == 20 and ck.config == {"recipe": "x"}
    assert np.array_equal(ck.weights["a.weight"], np.arange(12, dtype=np.float32).reshape(3, 4) + 20)
    assert set(ck.optimizer) == {"m.a.weight", "m.b", "v.a.weight", "v.b"}    # no params duplicated
    assert verify_checkpoint(p)["ok"]


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors", "state.json", "config.json"])
def test_one_flipped_byte_is_refused_naming_the_file(tmp_path, victim):
    p = _save(tmp_path, 5)
    f = p / victim
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=victim):
        verify_checkpoint(p)
    with pytest.raises(CheckpointError, match=victim):
        load_checkpoint(p)


def test_truncated_missing_extra_and_bad_manifest(tmp_path):
    p = _save(tmp_path, 1)
    (p / "state.json").write_bytes((p / "state.json").read_bytes()[:-3])
    with pytest.raises(CheckpointError, match="size"):
        verify_checkpoint(p)
    p = _save(tmp_path, 2)
    (p / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(p)
    p = _save(tmp_path, 3)
    (p / "evil.pkl").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="evil.pkl"):
        load_checkpoint(p)
    p = _save(tmp_path, 4)
    man = json.loads((p / "manifest.json").read_text())
    man["files"][0]["path"] = "../../etc/passwd"
    (p / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="invalid path"):
        verify_checkpoint(p)
    p = _save(tmp_path, 6)
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest"):
        load_checkpoint(p)


def test_keep_last_k_and_latest_valid_skips_corrupt(tmp_path):
    for s in (10, 20, 30, 40):
        _save(tmp_path, s, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000030", "step-00000040"]
    (tmp_path / "step-00000040" / "model.safetensors").write_bytes(b"garbage")
    best, skipped = latest_valid(tmp_path)
    assert best.name == "step-00000030" and "step-00000040" in skipped[0]["path"]


def test_interrupted_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    import zeropoint.checkpoint as ck
    root = tmp_path / "ckpts"
    _save(root, 1)
    def boom(fd):
        raise OSError("disk full")
    monkeypatch.setattr(ck.os, "fsync", boom)     # fails half-way through writing the files
    with pytest.raises(OSError):
        _save(root, 2)
    assert [p.name for p in list_checkpoints(root)] == ["step-00000001"]
    assert [p.name for p in root.iterdir()] == ["step-00000001"]   # no temp dir left behind


def test_adapter_kind(tmp_path):
    p = _save(tmp_path, 3, kind="adapter")
    assert (p / "adapter.safetensors").is_file() and not (p / "model.safetensors").exists()
    assert load_checkpoint(p).weights_kind == "adapter"
