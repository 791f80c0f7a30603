"""Warm start: compiled kernels and captured jitted steps kept under ZP_CACHE, so the next process that runs the
same step skips graph building, scheduling and kernel compilation.

Two stores, both under `$ZP_CACHE` (default `$ZP_HOME/cache`; `ZP_CACHE=off` disables both):

- `programs/`: every kernel tinygrad lowers and compiles (its PROGRAM: launch info and machine code), one file per
  kernel, keyed by tinygrad's own compile key (the kernel's AST, renderer, target and codegen settings) plus the
  environment below. Any later process that builds the same kernel (model init, an eval, an export check) loads it
  instead of lowering it again: lowering is most of a cold first step (tinygrad-0.14 notes, and docs/warm-start.md).
- `jit/`: one captured TinyJit per step (`PersistentJit`): the list of kernel calls the step runs. Every buffer that
  holds state (weights, optimizer moments, gradient accumulators, KV cache, RoPE tables) is stored as a NAME, and
  scratch buffers as a size: no weights, no optimizer state and no data are stored. On load the names are bound to
  this process's tensors and scratch is allocated fresh, so the step replays with no graph building at all.

Keys hold everything that changes the kernels: tinygrad's version and a hash of its code, this package's code
(for captured steps: the loss function is code), Python, the CPU (kernels are built with -march=native), the device
and renderer, tinygrad's codegen settings and BEAM, the caller's description (model config, method, precision) and
the shapes and dtypes of every input and bound tensor.

Every entry is a payload plus a manifest (the full key, the payload's SHA-256 and size), written atomically (temp
file + rename, manifest last). Nothing is trusted blindly: on load the manifest must parse, its key must equal the
one wanted (an entry from another tinygrad version or another model is refused), the payload must hash to the
manifest's SHA-256 (one flipped byte is refused), and every named buffer must exist here with the recorded shape and
dtype. A refused entry is compiled again and rewritten, with one line on stderr. The payloads are pickles of
tinygrad objects, written and read only by this user's own processes (the same trust as tinygrad's CACHEDB).

A step is only saved when every buffer it reads before writing is named: a step that reads an unnamed tensor (say a
constant made inside the function) keeps working, uncached, and says why once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import pickle
import platform
import shutil
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import tinygrad
import tinygrad.codegen as codegen
import tinygrad.engine.realize as realize
from tinygrad import Device, Tensor, TinyJit
from tinygrad.codegen import to_program_config
from tinygrad.dtype import AddrSpace
from tinygrad.engine.jit import CapturedJit, _prepare_jit_inputs, _TinyJit
from tinygrad.engine.realize import get_call_arg_uops, get_call_outs_ins
from tinygrad.helpers import BEAM, JIT, JIT_BATCH_SIZE, getenv
from tinygrad.uop.ops import Ops, UOp, buffers

from ..workspace import atomic_write_bytes
from . import cpu_kernels

FORMAT = 1                                # bump when the layout of an entry changes
_OFF = {"off", "0", "none", "false", "no"}
_lock = threading.Lock()
_notices: set[str] = set()

# what this process did with the caches, for perf.json and `zpctl bench`
STATS: dict[str, Any] = {"programs": {"loaded": 0, "compiled": 0, "rejected": 0, "saved": 0, "tuned": 0},
                         "jit": {}}


def cache_root() -> Path | None:
    """$ZP_CACHE, else $ZP_HOME/cache (the workspace root); None when ZP_CACHE=off."""
    v = os.environ.get("ZP_CACHE")
    if v is not None and v.strip().lower() in _OFF:
        return None
    if v:
        return Path(v).expanduser()
    return Path(os.environ.get("ZP_HOME") or os.getcwd()).resolve() / "cache"


def notice(msg: str) -> None:
    """One line on stderr, once per process per message."""
    if msg not in _notices:
        _notices.add(msg)
        print(f"zeropoint cache: {msg}", file=sys.stderr, flush=True)


# ---- the environment part of every key -------------------------------------------------------------------------

def _tree_sha(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


_ENV: dict | None = None


def environment() -> dict:
    """What every entry depends on besides its own key (the machine part computed once per process, ~0.1 s), and
    the rules CPU kernels are built with now (engine/cpu_kernels.py)."""
    global _ENV
    if _ENV is None:
        flags = model = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].strip()
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
        except OSError:
            pass
        _ENV = {"format": FORMAT, "tinygrad": importlib.metadata.version("tinygrad"),
                "tinygrad_code": _tree_sha(Path(tinygrad.__file__).parent)[:32],
                "python": f"{sys.version_info.major}.{sys.version_info.minor}", "machine": platform.machine(),
                "cpu": model or platform.processor(), "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:16]}
    return {**_ENV, "cpu_kernels": cpu_kernels.active()}


_CODE: str | None = None


def code_sha() -> str:
    """SHA-256 of this package's code: a captured step is a function of it (the loss, the model, the engine)."""
    global _CODE
    if _CODE is None:
        _CODE = _tree_sha(Path(__file__).resolve().parents[1])[:32]
    return _CODE


def codegen_settings() -> dict:
    """The tinygrad settings that change generated kernels or how a step is captured."""
    dev = Device[Device.DEFAULT]
    graph = dev.graph.func if hasattr(dev.graph, "func") else dev.graph
    return {"device": Device.DEFAULT, "renderer": type(dev.renderer).__name__, "target": repr(dev.renderer.target),
            "graph": getattr(graph, "__qualname__", None if graph is None else type(graph).__name__),
            **{v.key: v.value for v in to_program_config}, "BEAM": BEAM.value, "JITBEAM": getenv("JITBEAM", BEAM.value),
            "JIT": JIT.value, "JIT_BATCH_SIZE": JIT_BATCH_SIZE.value}


# ---- files: payload + manifest, atomic, verified ---------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, durable=False)   # entries are SHA-256-checked on load: a torn one is rebuilt


def _key_sha(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def write_entry(folder: Path, key: dict, payload: bytes, **info) -> Path:
    """payload.bin then manifest.json (the manifest is the commit point: no manifest, no entry)."""
    manifest = {"key": key, "key_sha256": _key_sha(key), "payload": "payload.bin", "size": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(), "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "pid": os.getpid(), **info}
    _atomic_write(folder / "payload.bin", payload)
    _atomic_write(folder / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n").encode())
    return folder


class Rejected(Exception):
    """An entry that exists but must not be used; the message says why."""


def read_entry(folder: Path, key: dict) -> tuple[dict, bytes] | None:
    """(manifest, payload) when the entry exists and verifies; None when there is none; Rejected otherwise."""
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text())
        want = json.loads(json.dumps(key, sort_keys=True, default=str))
    except (OSError, ValueError) as e:
        raise Rejected(f"unreadable manifest ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("key") != want:
        have = manifest.get("key", {}) if isinstance(manifest, dict) else {}
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k)) if isinstance(have, dict) else ["key"]
        env_diff = sorted(k for k in set(have.get("env", {})) | set(want.get("env", {}))
                          if have.get("env", {}).get(k) != want.get("env", {}).get(k)) if "env" in diff else []
        raise Rejected(f"built for a different {', '.join(env_diff or diff) or 'key'}")
    try:
        payload = (folder / manifest.get("payload", "payload.bin")).read_bytes()
    except OSError as e:
        raise Rejected(f"payload unreadable ({type(e).__name__})") from None
    if len(payload) != manifest.get("size") or hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise Rejected("payload does not match its SHA-256 (corrupt)")
    return manifest, payload


# ---- store 1: compiled kernels ---------------------------------------------------------------------------------

def tuned_enabled() -> bool:
    return os.environ.get("ZP_TUNED", "1").strip().lower() not in _OFF


class ProgramStore(dict):
    """tinygrad's in-process `to_program_cache`, backed by files: a miss in memory is looked up on disk before
    tinygrad lowers the kernel, and every kernel tinygrad lowers is written to disk.

    Tuned kernels (`zpctl tune`, perf/tune.py) live beside them in `tuned/`, keyed by the same compile key: when
    one exists it is used instead of the kernel tinygrad's heuristics would build (ZP_TUNED=0: never)."""

    def __init__(self, root: Path, initial: dict):
        super().__init__(initial)
        self.root = root
        self._missing: set = set()
        self.tuned: dict = {}          # key -> tuned PROGRAM or None (looked up, none)

    def _folder(self, key, kind: str = "programs") -> tuple[Path, dict]:
        k = {"program": hashlib.sha256(repr(key).encode()).hexdigest(), "env": environment()}
        if kind == "tuned":
            k["tuned"] = True
        sha = _key_sha(k)
        return self.root / kind / sha[:2] / sha[2:], k

    def _read_program(self, folder: Path, k: dict, what: str):
        try:
            got = read_entry(folder, k)
            if got is None:
                return None
            prg = pickle.loads(got[1])
            if not isinstance(prg, UOp) or prg.op is not Ops.PROGRAM:
                raise Rejected("payload is not a compiled program")
            return prg
        except Rejected as e:
            STATS["programs"]["rejected"] += 1
            notice(f"{what} {folder.name[:12]}: {e}; compiling it again")
        except Exception as e:   # an unpicklable payload is corrupt too
            STATS["programs"]["rejected"] += 1
            notice(f"{what} {folder.name[:12]}: payload does not load ({type(e).__name__}); compiling it again")
        return None

    def _load(self, key):
        if key in self._missing:
            return None
        prg = self._read_program(*self._folder(key), "kernel")
        if prg is None:
            self._missing.add(key)
            return None
        STATS["programs"]["loaded"] += 1
        return prg

    def tuned_program(self, key):
        if not tuned_enabled():
            return None
        if key not in self.tuned:
            self.tuned[key] = self._read_program(*self._folder(key, "tuned"), "tuned kernel")
            if self.tuned[key] is not None:
                STATS["programs"]["tuned"] += 1
        return self.tuned[key]

    def put_tuned(self, key, prg, **info) -> Path:
        folder, k = self._folder(key, "tuned")
        write_entry(folder, k, pickle.dumps(prg, protocol=5), **info)
        self.tuned[key] = prg
        return folder

    def __contains__(self, key) -> bool:
        if dict.__contains__(self, key) or self.tuned_program(key) is not None:
            return True
        prg = self._load(key)
        if prg is None:
            return False
        dict.__setitem__(self, key, prg)
        return True

    def __getitem__(self, key):
        t = self.tuned_program(key)
        return t if t is not None else dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def clear(self) -> None:
        """Forget what this process holds in memory (the files stay)."""
        dict.clear(self)
        self._missing.clear()
        self.tuned.clear()

    def __setitem__(self, key, prg) -> None:
        dict.__setitem__(self, key, prg)
        STATS["programs"]["compiled"] += 1
        self._missing.discard(key)
        folder, k = self._folder(key)
        try:
            name = prg.src[0].arg.name if prg.src and hasattr(prg.src[0].arg, "name") else None
            write_entry(folder, k, pickle.dumps(prg, protocol=5), kernel=name)
            STATS["programs"]["saved"] += 1
        except Exception as e:   # a cache that cannot be written must never fail the computation
            notice(f"kernel not saved ({type(e).__name__}: {e})")


def tuned_state() -> str:
    """Which tuned kernels exist (a captured step bakes its kernels in, so tuning must invalidate it)."""
    root = cache_root()
    if root is None or not tuned_enabled():
        return "off"
    names = sorted(str(p.parent.relative_to(root)) for p in (root / "tuned").glob("*/*/manifest.json"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16] if names else "none"


def store() -> ProgramStore | None:
    return codegen.to_program_cache if isinstance(codegen.to_program_cache, ProgramStore) else None


def enable() -> bool:
    """Back tinygrad's kernel cache with `$ZP_CACHE/programs` (idempotent). False when the cache is off."""
    root = cache_root()
    with _lock:
        cur = codegen.to_program_cache
        if root is None:
            if isinstance(cur, ProgramStore):   # switched off mid-process (tests): back to a plain dict
                codegen.to_program_cache = realize.to_program_cache = dict(cur)
            return False
        if isinstance(cur, ProgramStore) and cur.root == root:
            return True
        store = ProgramStore(root, dict(cur))
        codegen.to_program_cache = realize.to_program_cache = store
    return True


# ---- store 2: captured steps -----------------------------------------------------------------------------------

def buffer_uop(t: Tensor) -> UOp | None:
    """The BUFFER uop holding a realized tensor's storage (None for lazy or multi-device tensors)."""
    u = t.uop.base
    while u.op is Ops.AFTER:
        u = u.src[0].base
    return u if u.op is Ops.BUFFER and buffers.get(u) is not None else None


def _global_buffers(u: UOp) -> list[UOp]:
    return [x for x in u.toposort() if x.op is Ops.BUFFER and x.arg.addrspace == AddrSpace.GLOBAL]


def _signature(x) -> Any:
    if isinstance(x, Tensor):
        return ["tensor", list(x.shape), str(x.dtype), str(x.device)]
    if isinstance(x, UOp):     # a bound symbolic variable (decode position)
        v, _ = x.unbind() if x.is_bound_var else (x, None)
        return ["var", v.expr, v.vmin, v.vmax]
    return ["value", repr(x)]


def unsaved_reason(linear: UOp, named: dict[UOp, str], before: "weakref.WeakSet[UOp]") -> str | None:
    """Why this capture cannot be stored (None: it can). Walks the calls in order: a buffer read before anything in
    the step wrote it is state, and state must have a name to be rebound on load."""
    written: set[UOp] = set()
    calls = [c for call in linear.src for c in
             (call.src[0].src[0].src if call.src[0].op is Ops.CUSTOM_FUNCTION and call.src[0].arg == "graph" else (call,))]
    for call in calls:
        ast = call.src[0]
        if call.op is not Ops.CALL or ast.op not in (Ops.PROGRAM, Ops.COPY):
            return f"it contains a {ast.op.name}{'/' + str(ast.arg) if ast.op is Ops.CUSTOM_FUNCTION else ''} call"
        args = get_call_arg_uops(call)
        outs, ins = get_call_outs_ins(call)
        for i in ins:
            for b in _global_buffers(args[i]):
                if b in named or b in written:
                    continue
                what = f"{b.dtype.name}[{b.arg.device}:{b.max_numel()}]"
                if b in before:
                    return f"it reads a tensor {what} made before the step that has no name to rebind it by"
                return f"it reads a buffer {what} before writing it (a constant made inside the step?)"
        for i in outs:
            written.update(_global_buffers(args[i]))
    return None


class _Saver(pickle.Pickler):
    def __init__(self, f, named: dict[UOp, str]):
        super().__init__(f, protocol=5)
        self.named = named

    def persistent_id(self, obj):
        if isinstance(obj, UOp) and obj.op is Ops.BUFFER and obj.arg.addrspace == AddrSpace.GLOBAL:
            if obj in self.named:
                return ("bind", self.named[obj], obj.dtype.name, obj.max_numel())
            if isinstance(obj.arg.device, tuple):
                raise Rejected("multi-device buffers are not cached")
            return ("scratch", obj.dtype, obj.src, obj.arg, obj.tag)
        if type(obj).__name__ in ("Buffer", "MultiBuffer"):
            raise Rejected("a device buffer would be stored")   # never: every BUFFER uop is replaced above
        return None


class _Loader(pickle.Unpickler):
    def __init__(self, f, bindings: dict[str, Tensor]):
        super().__init__(f)
        self.bindings, self.scratch = bindings, {}

    def persistent_load(self, pid):
        if pid[0] == "bind":
            _, name, dtype, numel = pid
            if name not in self.bindings:
                raise Rejected(f"it needs tensor {name!r}, which this process does not have")
            t = self.bindings[name]
            if (u := buffer_uop(t.realize())) is None:
                raise Rejected(f"tensor {name!r} is not a single realized buffer here")
            if u.dtype.name != dtype or u.max_numel() != numel:
                raise Rejected(f"tensor {name!r} is {u.dtype.name}[{u.max_numel()}] here, {dtype}[{numel}] in the entry")
            return u
        if pid[0] == "scratch":
            _, dtype, src, arg, tag = pid
            if arg.slot not in self.scratch:   # a fresh slot: never alias a buffer of this process
                self.scratch[arg.slot] = UOp(Ops.BUFFER, dtype, src, dataclasses.replace(arg, slot=next(UOp.unique_num)), tag)
            return self.scratch[arg.slot]
        raise Rejected(f"unknown reference {pid[0]!r}")


def _input_info(args, kwargs) -> tuple:
    """(names, input info) exactly as TinyJit checks them before a replay, computed before anything runs."""
    _, _, names, info = _prepare_jit_inputs(args, kwargs)
    return names, info


def _ensure_rng() -> None:
    """Create tinygrad's random-number state before a step is captured or loaded. Made lazily inside a capture
    (dropout's first draw), its initial copy would be captured too and replayed every call, resetting the counter;
    made here, it is state like any other and bound by name. The values are those tinygrad would make anyway."""
    dev = Device.DEFAULT
    if dev not in Tensor._device_seeds:
        Tensor._next_counter(dev, 0)
        Tensor.realize(Tensor._device_seeds[dev], Tensor._device_rng_counters[dev])


def _rng_bindings() -> dict[str, Tensor]:
    """tinygrad's random-number state (dropout inside a step reads and advances it)."""
    out = {}
    for dev, t in Tensor._device_seeds.items():
        out[f"tinygrad.rng.seed.{dev}"] = t
    for dev, t in Tensor._device_rng_counters.items():
        out[f"tinygrad.rng.counter.{dev}"] = t
    return out


def _step_info(source: str | None, *, first_call_s: float | None = None, entry: str | None = None,
               bytes: int | None = None, capture_s: float | None = None, reason: str | None = None) -> dict:
    """What one captured step did in this process, with the same keys whatever happened (evidence readers and the
    evidence-key snapshots rely on that). source: "cache" (loaded), "compiled" (captured here), "cache off" or
    None (not called yet); first_call_s: load and first replay, or capture; entry: the cache folder it came from or
    went to (None: not stored, see reason); capture_s: how long capturing it took (in the process that stored it)."""
    return {"source": source, "first_call_s": _round(first_call_s), "entry": entry, "bytes": bytes,
            "capture_s": _round(capture_s), "reason": reason}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


class PersistentJit:
    """`TinyJit(fxn)` whose capture is stored under $ZP_CACHE/jit and loaded by the next process.

        step = PersistentJit(fn, name="train.micro", key={"model": cfg}, bindings=lambda: {"w": w, ...})

    `bindings()` names every tensor the step reads or updates (weights, optimizer state, caches); `key` describes
    what the step computes (together with the code hash, the inputs' shapes and dtypes and the environment).
    Unlike a plain TinyJit the first call captures (no eager call first): that is one graph build and schedule
    instead of two in a cold process, and the same kernels in the same order as a warm process will replay."""

    def __init__(self, fxn: Callable, *, name: str, key: dict, bindings: Callable[[], dict[str, Tensor]]):
        self.fxn, self.name, self.key, self.bindings = fxn, name, key, bindings
        self.jit: _TinyJit = TinyJit(fxn)
        self.jit.cnt = 1
        self.looked = False
        self.info: dict = _step_info(None)

    @property
    def captured(self) -> CapturedJit | None:
        return self.jit.captured

    def full_key(self, args, kwargs) -> dict:
        return {"name": self.name, "key": self.key, "code": code_sha(), "env": environment(), "codegen": codegen_settings(),
                "tuned": tuned_state(),
                "inputs": [_signature(a) for a in args] + [[k, _signature(v)] for k, v in sorted(kwargs.items())],
                "bound": {n: [list(t.shape), str(t.dtype), str(t.device)] for n, t in sorted(self._bindings().items())}}

    def _bindings(self) -> dict[str, Tensor]:
        return {**_rng_bindings(), **self.bindings()}

    def _folder(self, key: dict) -> Path:
        return cache_root() / "jit" / f"{self.name}-{_key_sha(key)[:24]}"

    def __call__(self, *args, **kwargs):
        if self.jit.captured is not None or not JIT or cache_root() is None:
            if self.jit.captured is None and cache_root() is None:
                self.info["source"] = "cache off"
            return self.jit(*args, **kwargs)
        enable()
        _ensure_rng()
        key = self.full_key(args, kwargs)
        if not self.looked:
            self.looked = True
            t0 = time.perf_counter()
            cap, size = self._load(key)
            if cap is not None and _input_info(args, kwargs) != (cap.expected_names, cap.expected_input_info):
                notice(f"step {self.name}: the stored capture expects other inputs; compiling it again")
                cap = None
            if cap is not None:
                jit = _TinyJit(self.fxn, captured=cap)
                jit.cnt = 2
                try:
                    ret = jit(*args, **kwargs)
                except Exception as e:   # a stale entry that got past the checks: capture afresh
                    notice(f"step {self.name}: the stored capture does not replay here ({type(e).__name__}: {e}); "
                           "compiling it again")
                else:
                    self.jit = jit
                    self.info = _step_info("cache", first_call_s=time.perf_counter() - t0, entry=self._folder(key).name,
                                           bytes=size, capture_s=self._manifest_field(key, "capture_s"))
                    STATS["jit"][self.name] = self.info
                    return ret
        before = weakref.WeakSet(list(buffers.keys()))
        t0 = time.perf_counter()
        ret = self.jit(*args, **kwargs)
        capture_s = time.perf_counter() - t0
        self.info = _step_info("compiled", first_call_s=capture_s, capture_s=capture_s)
        if self.jit.captured is not None:
            self.info.update(self._save(key, before, capture_s))
        STATS["jit"][self.name] = self.info
        return ret

    def _manifest_field(self, key: dict, field: str):
        try:
            return json.loads((self._folder(key) / "manifest.json").read_text()).get(field)
        except (OSError, ValueError):
            return None

    def _load(self, key: dict) -> tuple[CapturedJit | None, int | None]:
        """(the stored capture, its payload's size), or (None, None) when there is none or it is refused."""
        folder = self._folder(key)
        try:
            got = read_entry(folder, key)
            if got is None:
                return None, None
            cap = _Loader(io.BytesIO(got[1]), self._bindings()).load()
            if not isinstance(cap, CapturedJit):
                raise Rejected("payload is not a captured step")
            return cap, len(got[1])
        except Rejected as e:
            notice(f"step {self.name} ({folder.name}): {e}; compiling it again")
        except Exception as e:
            notice(f"step {self.name} ({folder.name}): payload does not load ({type(e).__name__}: {e}); compiling it again")
        return None, None

    def _save(self, key: dict, before, capture_s: float) -> dict:
        cap = self.jit.captured
        named: dict[UOp, str] = {}
        for n, t in self._bindings().items():
            if (u := buffer_uop(t)) is not None:
                named.setdefault(u, n)
        reason = unsaved_reason(cap._linear, named, before)
        if reason is None:
            try:
                f = io.BytesIO()
                _Saver(f, named).dump(cap)
                folder = write_entry(self._folder(key), key, f.getvalue(), capture_s=round(capture_s, 4),
                                     kernels=len(cap._linear.src))
                return {"entry": folder.name, "bytes": len(f.getvalue())}
            except Rejected as e:
                reason = str(e)
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
        notice(f"step {self.name} is not cached: {reason}")
        return {"entry": None, "reason": reason}


def inventory(verify: bool = False) -> dict:
    """What $ZP_CACHE holds, per store: entries and bytes; with `verify`, every payload checked against its manifest
    (the entries that fail would be refused and rebuilt on use; `clear` removes them)."""
    root = cache_root()
    out: dict = {"root": str(root) if root else None, "stores": {}, "bad": []}
    if root is None:
        return {**out, "reason": "ZP_CACHE=off"}
    for kind in ("programs", "tuned", "jit"):
        entries = sorted((root / kind).glob("*/manifest.json" if kind == "jit" else "*/*/manifest.json"))
        size = sum(f.stat().st_size for m in entries for f in m.parent.iterdir() if f.is_file())
        out["stores"][kind] = {"entries": len(entries), "bytes": size}
        if verify:
            for m in entries:
                try:
                    if read_entry(m.parent, json.loads(m.read_text()).get("key")) is None:
                        raise Rejected("no manifest")
                except (Rejected, ValueError, OSError) as e:
                    out["bad"].append({"entry": str(m.parent.relative_to(root)), "reason": str(e)})
    out["tune_records"] = sorted(p.stem for p in (root / "tune").glob("*.json"))
    out["bytes"] = sum(v["bytes"] for v in out["stores"].values())
    return out


def clear(kinds: tuple[str, ...] = ("programs", "jit"), only_bad: bool = False) -> dict:
    """Remove whole stores (tuned kernels and tune records only when asked: they cost a search to rebuild)."""
    root = cache_root()
    if root is None:
        return {"removed": [], "reason": "ZP_CACHE=off"}
    removed = []
    if only_bad:
        for b in inventory(verify=True)["bad"]:
            shutil.rmtree(root / b["entry"], ignore_errors=True)
            removed.append(b["entry"])
        return {"root": str(root), "removed": removed}
    for kind in kinds:
        if (root / kind).exists():
            shutil.rmtree(root / kind)
            removed.append(kind)
    return {"root": str(root), "removed": removed}


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): "time to first step" includes imports."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


def summary() -> dict:
    """`report()` in fixed keys (whatever steps ran): for evidence files that are not a training run's."""
    sources = [v.get("source") for v in STATS["jit"].values()]
    return {"warm": bool(sources) and all(s == "cache" for s in sources), "steps_loaded": sources.count("cache"),
            "steps_compiled": sources.count("compiled"), "programs": dict(STATS["programs"]),
            "process_age_s": process_age_s()}


def report(steps: dict[str, dict] | None = None) -> dict:
    """What the caches did in this process (for perf.json, bench records and `zpctl cache`). `steps`: one
    trainer's steps (`Trainer.jit_steps()`), so a run's record is not mixed with steps an earlier run in the same
    process (a test session, a notebook) stored under the same names; default: every step this process ran."""
    root = cache_root()
    steps = STATS["jit"] if steps is None else steps
    return {"root": str(root) if root else None, "programs": dict(STATS["programs"]),
            "steps": {k: dict(v) for k, v in steps.items()},
            "warm": bool(steps) and all(v.get("source") == "cache" for v in steps.values())}
