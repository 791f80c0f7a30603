"""The warm-start stores (engine/jitcache.py) in one process, on small tensors: what is stored, what is refused.

A new PersistentJit / ProgramStore object stands in for a new process (a new process is tested in
test_warm_start.py): everything it uses comes from the files, never from the first object."""
import json

import numpy as np
import pytest
import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize
from tinygrad import Tensor

from zeropoint.engine import jitcache
from zeropoint.engine.jitcache import PersistentJit, ProgramStore, read_entry
from zeropoint.engine.trainer import device_array


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZP_CACHE", str(tmp_path / "cache"))
    jitcache._notices.clear()
    before = codegen.to_program_cache
    yield tmp_path / "cache"
    codegen.to_program_cache = realize.to_program_cache = before


def _state():
    w = device_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    acc = device_array(np.zeros((3, 4), dtype=np.float32))
    return w, acc


def _step_fn(w, acc):
    def step(x):
        y = (x @ w.T).relu().sum()   # x (2, 4) -> scalar
        acc.assign(acc + w * y)
        Tensor.realize(y, acc)
        return y
    return step


def _x(i):
    return device_array(np.full((2, 4), 0.1 * (i + 1), dtype=np.float32))


def _run(w, acc, n=3, key=None):
    jit = PersistentJit(_step_fn(w, acc), name="t.step", key=key or {"t": 1}, bindings=lambda: {"w": w, "acc": acc})
    return jit, [float(jit(_x(i)).item()) for i in range(n)]


def _folder(cache):
    (d,) = list((cache / "jit").iterdir())
    return d


def test_capture_is_stored_and_replayed_with_rebound_state(cache):
    w, acc = _state()
    jit1, ys1 = _run(w, acc)
    assert jit1.info["source"] == "compiled" and jit1.info["entry"]
    acc1 = acc.numpy().copy()
    manifest = json.loads((_folder(cache) / "manifest.json").read_text())
    bound = manifest["key"]["bound"]
    assert bound["acc"] == bound["w"] == [[3, 4], "dtypes.float", "CPU"]
    assert set(bound) == {"acc", "w", "tinygrad.rng.seed.CPU", "tinygrad.rng.counter.CPU"}   # + tinygrad's RNG state
    # the payload holds names and sizes, never the values of w or acc
    payload = (_folder(cache) / "payload.bin").read_bytes()
    assert w.numpy().tobytes() not in payload and acc1.tobytes() not in payload

    w2, acc2 = _state()   # new tensors: the stored step must run on these, not on the first ones
    jit2, ys2 = _run(w2, acc2)
    assert jit2.info["source"] == "cache" and jit2.jit.cnt >= 3
    assert ys2 == ys1 and np.array_equal(acc2.numpy(), acc1)
    assert np.array_equal(acc.numpy(), acc1)   # the first state was not touched by the second jit


def test_corrupt_and_foreign_entries_are_recompiled(cache, capfd):
    w, acc = _state()
    _, ys = _run(w, acc)
    folder = _folder(cache)
    payload = bytearray((folder / "payload.bin").read_bytes())
    payload[len(payload) // 2] ^= 0x01                                    # one flipped byte
    (folder / "payload.bin").write_bytes(bytes(payload))
    with pytest.raises(jitcache.Rejected, match="SHA-256"):
        read_entry(folder, json.loads((folder / "manifest.json").read_text())["key"])
    w2, acc2 = _state()
    jit2, ys2 = _run(w2, acc2)
    assert jit2.info["source"] == "compiled" and ys2 == ys
    assert "corrupt" in capfd.readouterr().err
    read_entry(folder, json.loads((folder / "manifest.json").read_text())["key"])   # rewritten, verifies again

    m = json.loads((folder / "manifest.json").read_text())
    m["key"]["env"]["tinygrad"] = "0.13.0"                                  # built by another tinygrad
    (folder / "manifest.json").write_text(json.dumps(m))
    w3, acc3 = _state()
    jit3, ys3 = _run(w3, acc3)
    assert jit3.info["source"] == "compiled" and ys3 == ys
    assert "different tinygrad" in capfd.readouterr().err


def test_other_key_or_shape_is_a_different_entry(cache):
    w, acc = _state()
    _run(w, acc)
    _run(*_state(), key={"t": 2})
    assert len(list((cache / "jit").iterdir())) == 2


def test_unnamed_state_is_not_stored(cache, capfd):
    w, acc = _state()
    hidden = device_array(np.ones((3, 4), dtype=np.float32))   # read by the step, not among the bindings

    def step(x):
        y = (x @ (w * hidden).T).sum()
        acc.assign(acc + y)
        Tensor.realize(y, acc)
        return y
    jit = PersistentJit(step, name="t.hidden", key={}, bindings=lambda: {"w": w, "acc": acc})
    vals = [float(jit(_x(i)).item()) for i in range(3)]
    assert jit.info["entry"] is None and "no name" in jit.info["reason"]
    assert "is not cached" in capfd.readouterr().err
    assert vals[0] != vals[1]                                   # still runs, uncached
    assert not (cache / "jit").exists() or not list((cache / "jit").iterdir())


def test_program_store_loads_kernels_and_refuses_a_flipped_byte(cache, capfd, monkeypatch):
    root = cache
    store = ProgramStore(root, {})
    codegen.to_program_cache = realize.to_program_cache = store
    lowered = []
    real = codegen.do_to_program
    monkeypatch.setattr(codegen, "do_to_program", lambda *a: lowered.append(1) or real(*a))
    a = device_array(np.arange(64, dtype=np.float32).reshape(8, 8))
    want = ((a @ a).exp2() * 3.0 + 7.125).sum(0).numpy()
    n = len(lowered)
    assert n >= 1 and store.__class__ is ProgramStore and jitcache.STATS["programs"]["saved"] >= n
    files = sorted(root.glob("programs/*/*/payload.bin"))
    assert len(files) >= n

    fresh = ProgramStore(root, {})                      # a new process's view: nothing in memory
    codegen.to_program_cache = realize.to_program_cache = fresh
    assert np.array_equal(((a @ a).exp2() * 3.0 + 7.125).sum(0).numpy(), want)
    assert len(lowered) == n                            # every kernel came from the files

    for f in files:                                     # one flipped byte in each entry
        b = bytearray(f.read_bytes())
        b[-1] ^= 0x80
        f.write_bytes(bytes(b))
    codegen.to_program_cache = realize.to_program_cache = ProgramStore(root, {})
    assert np.array_equal(((a @ a).exp2() * 3.0 + 7.125).sum(0).numpy(), want)
    assert len(lowered) == 2 * n                        # each one refused and compiled again
    assert "corrupt" in capfd.readouterr().err


def test_zpctl_cache_info_verify_and_clear(cache):
    from typer.testing import CliRunner

    from zeropoint.cli.main import app
    w, acc = _state()
    _run(w, acc)
    folder = _folder(cache)
    payload = bytearray((folder / "payload.bin").read_bytes())
    payload[7] ^= 0x04
    (folder / "payload.bin").write_bytes(bytes(payload))
    r = CliRunner().invoke(app, ["cache", "info", "--verify", "--json"])
    assert r.exit_code == 0, r.output
    inv = json.loads(r.stdout)
    assert inv["stores"]["jit"]["entries"] == 1 and inv["stores"]["programs"]["entries"] >= 1
    assert [b["entry"] for b in inv["bad"]] == [f"jit/{folder.name}"] and "SHA-256" in inv["bad"][0]["reason"]
    r = CliRunner().invoke(app, ["cache", "clear", "--bad", "--json"])
    assert json.loads(r.stdout)["removed"] == [f"jit/{folder.name}"] and not folder.exists()
    r = CliRunner().invoke(app, ["cache", "clear", "--json"])
    assert "programs" in json.loads(r.stdout)["removed"] and not (cache / "programs").exists()


def test_dropout_state_is_rebound_and_advances(cache):
    from tinygrad.helpers import Context

    def make():
        w = device_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10)

        def step(x):
            with Context(TRAINING=1):
                return (x.dropout(0.5) @ w.T).sum().realize()
        return PersistentJit(step, name="t.dropout", key={}, bindings=lambda: {"w": w})

    Tensor.manual_seed(7)
    jit = make()
    cold = [float(jit(_x(0)).item()) for _ in range(4)]
    assert jit.info["entry"] and len(set(cold)) > 1          # a new mask every call: the counter advances
    Tensor.manual_seed(7)                                     # a new process: fresh RNG state, same seed
    jit2 = make()
    warm = [float(jit2(_x(0)).item()) for _ in range(4)]
    assert jit2.info["source"] == "cache" and warm == cold


def test_tuned_kernel_replaces_the_default_build_and_invalidates_captures(cache, monkeypatch):
    import tinygrad.engine.realize as rz
    seen = {}
    real_key = rz.to_program_key
    monkeypatch.setattr(rz, "to_program_key", lambda ast, ren: seen.setdefault(real_key(ast, ren), (ast, ren)) and
                        real_key(ast, ren))
    store = ProgramStore(cache, {})
    codegen.to_program_cache = realize.to_program_cache = store
    a = device_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 1000)
    want = (a @ a).numpy()
    (key, (ast, ren)), = [(k, v) for k, v in seen.items() if v[0].op.name == "SINK"][:1]
    from tinygrad.codegen.opt import Opt, OptOps

    from zeropoint.perf.tune import _build
    other = _build(ast, ren, [Opt(OptOps.UPCAST, 0, 2)])            # the same kernel, built another way
    assert other.arg.name != store[key].arg.name
    state = jitcache.tuned_state()
    store.put_tuned(key, other, kernel=other.arg.name)
    assert jitcache.tuned_state() != state                         # captured steps will be rebuilt once

    fresh = ProgramStore(cache, {})                                # a later process
    codegen.to_program_cache = realize.to_program_cache = fresh
    assert fresh[key].arg.name == other.arg.name
    assert np.array_equal((a @ a).numpy(), want)                   # and it computes the same thing
    monkeypatch.setenv("ZP_TUNED", "0")
    fresh2 = ProgramStore(cache, {})
    codegen.to_program_cache = realize.to_program_cache = fresh2
    assert key in fresh2 and fresh2[key].arg.name != other.arg.name
