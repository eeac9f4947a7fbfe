"""The package has no import cycles — top-level, lazy (inside functions) or TYPE_CHECKING-only; importing
compt.a.b counts as importing package compt.a — and every module imports in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import compt

ROOT = Path(compt.__file__).resolve().parent


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every compt module `name` imports anywhere in its file, plus the packages that import implies."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    out = set()
    for target in found & known:
        parts = target.split(".")
        # importing compt.a.b runs compt.a's __init__ first, unless `name` is inside compt.a already
        out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)
                if not (name + ".").startswith(".".join(parts[:i]) + ".")}
    return out - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    assert {"compt.paradigm"} <= graph["compt.config"]                       # lazy and package edges are seen
    assert "compt.clip.data" in graph["compt.clip.paradigm"]
    assert cycles(graph) == []


def test_cycle_finder() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    names = sorted(n for n in modules() if n != "compt.__main__")
    script = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others (lazy imports included)."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_language_model_paradigm_imports_no_clip_module() -> None:
    """compt.lm shares growth and task helpers with compt.clip through compt.growth and compt.tasks, never by
    importing compt.clip: not at import time (a fresh interpreter's sys.modules), not lazily (the import graph)."""
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    lm = sorted(n for n in mods if n == "compt.lm" or n.startswith("compt.lm."))
    assert "compt.lm.growth" in lm and "compt.lm.harness" in lm
    static = {n: sorted(m for m in reachable(graph, n) if m.startswith("compt.clip")) for n in lm}
    assert not any(static.values()), {n: found for n, found in static.items() if found}
    script = (f"import importlib, sys\nfor name in {lm!r}:\n    importlib.import_module(name)\n"
              f"print(sorted(m for m in sys.modules if m.startswith('compt.clip')))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
