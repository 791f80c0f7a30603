"""The allowed import directions (docs/ARCHITECTURE.md): a module may import its own layer or any lower one,
never a higher one. Keys are package paths under `zeropoint`; the longest matching key decides a module's layer."""
from __future__ import annotations

LAYERS: list[tuple[str, list[str]]] = [
    # lowest first
    ("foundation", ["zeropoint", "zeropoint.errors", "zeropoint.hashing", "zeropoint.workspace", "zeropoint.scope",
                    "zeropoint.config", "zeropoint.evidence", "zeropoint.appliance", "zeropoint.modelcard"]),
    ("core", ["zeropoint.engine", "zeropoint.checkpoint", "zeropoint.models", "zeropoint.data",
              "zeropoint.governance"]),
    ("services", ["zeropoint.evals", "zeropoint.export", "zeropoint.safety", "zeropoint.perf", "zeropoint.drift",
                  "zeropoint.tracking"]),
    ("recipes", ["zeropoint.recipes"]),
    ("release", ["zeropoint.release", "zeropoint.orchestrator"]),
    ("supplychain", ["zeropoint.supplychain"]),   # signs with release/keys.py
    ("surface", ["zeropoint.cli", "zeropoint.api", "zeropoint.demo"]),
]

_RANK = {pkg: i for i, (_, pkgs) in enumerate(LAYERS) for pkg in pkgs}


def layer_index(module: str) -> int:
    name = module
    while name:
        if name in _RANK:
            return _RANK[name]
        name = name.rpartition(".")[0]
    raise KeyError(f"{module} is in no layer of tests/architecture/layers.py; add its package there and to "
                   "docs/ARCHITECTURE.md")


def layer_of(module: str) -> str:
    return LAYERS[layer_index(module)][0]


def upward(edges) -> list:
    """Edges whose target sits in a higher layer than their source."""
    return [e for e in edges if layer_index(e.dst) > layer_index(e.src)]
