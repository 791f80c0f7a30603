"""The package's import graph, read from the AST (nothing is imported): edges, function-body imports, circles,
and arrows that run up the layers. Used by tests/architecture/test_layers.py and, as a script, to print the
figures the architecture note quotes:

    python -m tests.architecture.graph            # figures as JSON
"""
from __future__ import annotations

import ast
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = "zeropoint"


@dataclass(frozen=True)
class Edge:
    src: str          # importing module, e.g. zeropoint.engine.loop
    dst: str          # imported module (a module of this package)
    line: int
    in_function: bool  # inside a def (a lazy import), not at module level


def module_files(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for f in sorted((src / PKG).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if level:
        base = base[:len(base) - (level - 1)]
        return ".".join(base + (name.split(".") if name else []))
    return name or ""


def _nearest_module(name: str, modules: dict) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _import_module_arg(node: ast.Call) -> str | None:
    """importlib.import_module("zeropoint.x") with a literal argument counts as an import of zeropoint.x."""
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr == "import_module" and node.args and \
            isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


@functools.lru_cache(maxsize=None)   # the layer tests share one parse of the tree
def edges(src: Path = SRC) -> list[Edge]:
    modules = module_files(src)
    out: list[Edge] = []
    for mod, f in modules.items():
        is_pkg = f.name == "__init__.py"
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))

        def visit(node, in_fn: bool):
            for child in ast.iter_child_nodes(node):
                fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = _resolve(mod, is_pkg, child.level, child.module)
                    # `from pkg import sub` imports the submodule when sub is one
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
                elif isinstance(child, ast.Call) and (arg := _import_module_arg(child)):
                    targets = [arg]
                for t in targets:
                    if t == PKG or t.startswith(PKG + "."):
                        dst = _nearest_module(t, modules)
                        if dst and dst != mod and (e := Edge(mod, dst, child.lineno, in_fn)) not in out:
                            out.append(e)
                visit(child, fn)
        visit(tree, False)
    return out


def function_body_imports(src: Path = SRC) -> list[tuple[str, int, str]]:
    """Every import statement inside a function body (any module, not only this package's)."""
    out = []
    for mod, f in module_files(src).items():
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        names = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        out.append((mod, node.lineno, f"{'.' * getattr(node, 'level', 0)}{names or ''}"))
    # a nested def is walked by each enclosing def: count each statement once
    return sorted(set(out))


def circles(es: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in es:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(comps)


def recipe_run_lines(src: Path = SRC) -> dict[str, int]:
    """Lines of each recipe's `run()` (def line to last line, comments and blank lines included)."""
    out = {}
    for mod, f in module_files(src).items():
        if mod.startswith(f"{PKG}.recipes."):
            for node in ast.parse(f.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.FunctionDef) and node.name == "run":
                    out[mod.rpartition(".")[2]] = node.end_lineno - node.lineno + 1
    return out


if __name__ == "__main__":
    from tests.architecture.layers import layer_of, upward
    es = edges()
    fb = function_body_imports()
    up = upward(es)
    print(json.dumps({
        "modules": len(module_files()), "package_edges": len(es),
        "recipe_run_lines": recipe_run_lines(),
        "function_body_imports": len(fb),
        "function_body_imports_of_this_package": sum(1 for e in es if e.in_function),
        "arrows_running_up": [f"{e.src} ({layer_of(e.src)}) -> {e.dst} ({layer_of(e.dst)}) line {e.line}" for e in up],
        "circles": circles(es),
    }, indent=2))
    sys.exit(0)
