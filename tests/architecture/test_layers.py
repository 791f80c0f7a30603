"""The layering docs/ARCHITECTURE.md promises, checked over the AST of every module (lazy imports included):
no import runs up the layers, the import graph has no circles, every module sits in a layer."""
from pathlib import Path

from tests.architecture.graph import circles, edges, module_files
from tests.architecture.layers import LAYERS, layer_index, layer_of, upward

DOC = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def test_every_module_sits_in_a_documented_layer():
    for mod in module_files():
        layer_index(mod)    # raises naming the module
    doc = DOC.read_text(encoding="utf-8")
    for _, pkgs in LAYERS:
        for p in pkgs[1:] if pkgs[0] == "zeropoint" else pkgs:
            short = p.removeprefix("zeropoint.")
            assert f"{short}/" in doc or f"{short}.py" in doc, f"{p} is in tests/architecture/layers.py but not in {DOC}"


def test_no_import_runs_up_the_layers():
    bad = [f"{e.src} ({layer_of(e.src)}) imports {e.dst} ({layer_of(e.dst)}) at line {e.line}" for e in upward(edges())]
    assert not bad, "imports that run up the layers (docs/ARCHITECTURE.md):\n  " + "\n  ".join(bad)


def test_the_import_graph_has_no_circles():
    found = circles(edges())
    assert not found, "import circles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)
