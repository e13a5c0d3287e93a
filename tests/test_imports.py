"""No import circles inside lib/: every `import` / `from ... import` of every module, at module
level or inside functions, read with `ast` (nothing is imported)."""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def module_files(lib: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `lib` (a package is its __init__)."""
    out = {}
    for path in sorted(lib.rglob("*.py")):
        parts = list(path.relative_to(lib).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict) -> str | None:
    """`name`, or its nearest ancestor that is a module of `lib` (None if outside `lib`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(lib: Path) -> dict[str, set[str]]:
    """module -> the modules of `lib` it imports (anywhere in its body).

    ``import a.b`` and ``from a.b import X`` are edges to a.b (not to its parent packages);
    ``from a import b`` is an edge to a.b when a.b is a module, else to a; relative imports
    are resolved against the importing module's package.
    """
    modules = module_files(lib)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                known = _known(t, modules)
                if known is not None and known != mod:
                    graph[mod].add(known)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_lib_has_no_import_cycle():
    graph = import_graph(LIB)
    # the reader sees what matters (a vacuous graph would pass trivially)
    assert "fgvc.data.base" in graph["fgvc.data"]
    assert "fgvc.methods.registry" in graph["fgvc.methods"]
    assert "fgvc.data.prepare" in graph["fgvc.data"]  # a function-level import
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in lib/: " + " -> ".join(cycle)


def test_the_check_finds_function_level_and_package_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("import os\n\ndef g():\n    from pkg import a\n")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("from .other import y\n")
    (pkg / "sub" / "other.py").write_text("y = 1\n")
    graph = import_graph(tmp_path)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.sub.leaf"} and graph["pkg.sub.leaf"] == {"pkg.sub.other"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]

    (pkg / "b.py").write_text("def g():\n    pass\n")
    assert find_cycle(import_graph(tmp_path)) is None
    (pkg / "sub" / "other.py").write_text("def h():\n    from . import x\n")  # back to pkg.sub
    assert find_cycle(import_graph(tmp_path)) == ["pkg.sub", "pkg.sub.leaf", "pkg.sub.other", "pkg.sub"]
