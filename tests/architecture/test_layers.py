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


# imports a function body may make: the CLI's (so `zpctl --help` imports no library), and optional extras
OPTIONAL_EXTRAS = ("torch", "ray", "pynvml", "lm_eval", "playwright", "presidio_analyzer", "spacy", "mlflow",
                   "tensorboardX", "transformers", "peft", "llama_cpp")
# and these, so the API server (and the job executor inside it) starts without tinygrad, the models or
# matplotlib: each is imported where it is first needed (docs/ARCHITECTURE.md)
SERVER_START_LAZY = {("zeropoint.orchestrator.jobs", "..recipes"), ("zeropoint.api.app", "..appliance.health"),
                     ("zeropoint.api.app", "..appliance.diag"), ("zeropoint.api.ui", "..scope")}


def test_imports_sit_at_module_tops_except_cli_and_optional_extras():
    from tests.architecture.graph import function_body_imports
    bad = [f"{m}:{line} imports {what} inside a function" for m, line, what in function_body_imports()
           if not m.startswith("zeropoint.cli.") and what.lstrip(".").split(".")[0] not in OPTIONAL_EXTRAS
           and (m, what) not in SERVER_START_LAZY]
    assert not bad, "move these imports to the top of their module:\n  " + "\n  ".join(bad)


def test_the_api_server_starts_without_tinygrad():
    """What SERVER_START_LAZY buys: importing the API (and the job queue) loads no tinygrad, matplotlib, model or recipe."""
    import subprocess
    import sys
    code = ("import sys, zeropoint.api.app; bad = [m for m in ('tinygrad', 'matplotlib', 'zeropoint.recipes', "
            "'zeropoint.models') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
