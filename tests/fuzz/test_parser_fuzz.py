"""Seeded fuzzing of every file parser, in-process, each case under the guard (10 s timeout, 1 GiB address space).

2,100 cases per run, mutated from real inputs (corpus.py): GGUF headers (the SmolLM2 cut), safetensors headers
(MiniLM), HF directories (config.json, index, shard) and recipe YAML configs. A case passes when the parser
returns or raises a ZeropointError naming the file; it fails on any other exception (a traceback), a hang or a
blow-up. The seeds are fixed, so a failure reproduces with `mutate_*(seed)`; ZP_FUZZ_SEED shifts them all for a
longer local run (ZP_FUZZ_SEED=1000 pytest tests/fuzz)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fuzz import corpus as C
from tests.fuzz.guard import failures, run_guarded

BASE = int(os.environ.get("ZP_FUZZ_SEED", "0"))
COUNTS = {"gguf": 700, "safetensors": 500, "hf_dir": 300, "yaml": 600}


def _load_model(path: Path):
    from zeropoint.models.registry import load_weights_any
    cfg, weights, tok, _ = load_weights_any(path)
    return len(weights)


def _hf_dir_case(root: Path, seed: int) -> Path:
    import random
    rng = random.Random(seed)
    conf, header, data, index = C.hf_parts()
    d = root / "hf"
    which = rng.randrange(4)
    if which == 0:
        return C.write_hf_dir(d, conf_raw=json.dumps(C._mutate_tree(rng, conf)).encode())
    if which == 1:
        return C.write_hf_dir(d, index_raw=json.dumps(C._mutate_tree(rng, index)).encode())
    if which == 2:
        return C.write_hf_dir(d, conf_raw=C.mutate_bytes(rng, json.dumps(conf).encode(), 4096))
    return C.write_hf_dir(d, st_raw=C.mutate_bytes(rng, C.safetensors_bytes(header, data), 400))


def run_case(case: tuple[str, int, Path]):
    """Build the seeded input in the child (nothing large crosses the fork) and parse it."""
    kind, seed, root = case
    if kind == "gguf":
        p = root / "case.gguf"
        p.write_bytes(C.mutate_gguf(seed))
        return _load_model(p)
    if kind == "safetensors":
        from zeropoint.models.hf import read_safetensors
        p = root / "case.safetensors"
        p.write_bytes(C.mutate_safetensors(seed))
        return len(read_safetensors(p))
    if kind == "hf_dir":
        return _load_model(_hf_dir_case(root, seed))
    from zeropoint.recipes import load_config
    p = root / "case.yaml"
    p.write_bytes(C.mutate_yaml(seed))
    cfg, _ = load_config(p)
    return cfg.recipe


def test_parsers_survive_2100_seeded_mutations(tmp_path):
    C.mini_gguf(), C.minilm_small(), C.hf_parts()     # built once here; the guard's child inherits them
    import numpy as np
    from tinygrad import Tensor
    import zeropoint.models.registry  # noqa: F401
    import zeropoint.recipes.llm_finetune  # noqa: F401
    Tensor(np.ones(1, np.float32))   # tinygrad picks and opens its device once here (seconds), not inside a case
    cases = [(kind, BASE + i, tmp_path) for kind, n in COUNTS.items() for i in range(n)]
    assert len(cases) >= 2000
    outcomes = run_guarded(run_case, cases)
    labels = [f"{k} seed {s}" for k, s, _ in cases]
    bad = failures(outcomes, labels)
    assert not bad, f"{len(bad)} of {len(cases)} cases failed:\n" + "\n".join(bad[:20])
    assert len(outcomes) == len(cases)
    by_kind = {k: {"ok": 0, "clean": 0} for k in COUNTS}
    for o in outcomes:
        kind = cases[o.index][0]
        by_kind[kind][o.kind] += 1
        if o.kind == "clean":
            assert "case." in o.detail or "/hf" in o.detail, (labels[o.index], o.detail)   # the file is named
    slowest = max(outcomes, key=lambda o: o.seconds)
    print(f"\n{len(cases)} cases: {by_kind}; slowest {labels[slowest.index]} {slowest.seconds:.2f}s")
    # the mutations reach past the first check: some inputs still parse, most are refused
    assert all(v["clean"] > 0 for v in by_kind.values()) and by_kind["yaml"]["ok"] > 0
