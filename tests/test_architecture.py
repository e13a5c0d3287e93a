"""The layers of lib/fgvc, enforced by import-linter (the contracts in pyproject.toml):
developer tools (fgvc.dev) on the study (fgvc.study) on the library, nothing importing back up,
no circle between sibling modules; and, over grimp's import graph (import-linter's own), no
circle anywhere. Every import counts, at module level or inside a function."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(lib: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(lib)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_contracts_kept():
    res = lint(ROOT / "lib")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def test_contract_breaks_when_the_library_imports_the_study(tmp_path):
    """The contract is not vacuous: a method importing the study (as ma_ea once imported the
    cost model) and a dataset importing a method each break it."""
    shutil.copytree(ROOT / "lib" / "fgvc", tmp_path / "fgvc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    base = tmp_path / "fgvc" / "methods" / "baseline.py"
    base.write_text(base.read_text() + "\n\ndef _cost():\n    from fgvc.study import cost\n")
    res = lint(tmp_path)
    assert res.returncode == 1 and "fgvc.methods.baseline -> fgvc.study.cost" in res.stdout
    base.write_text(base.read_text().replace("from fgvc.study import cost", "pass"))
    assert lint(tmp_path).returncode == 0
    cub = tmp_path / "fgvc" / "data" / "cub.py"
    cub.write_text(cub.read_text() + "\nfrom fgvc.methods import registry  # noqa\n")
    res = lint(tmp_path)
    assert res.returncode == 1 and "fgvc.data.cub -> fgvc.methods" in res.stdout


def find_cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle as [a, b, ..., a] among all modules of the graph, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph.modules):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_anywhere():
    graph = grimp.build_graph("fgvc", cache_dir=None)
    # the graph sees what matters (a vacuous graph would pass trivially)
    assert "fgvc.data.prepare" in graph.find_modules_directly_imported_by("fgvc.data")  # in a function
    assert "fgvc.methods.registry" in graph.find_modules_directly_imported_by("fgvc.methods")
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_function_level_cycles(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert find_cycle(grimp.build_graph("pkg", cache_dir=None)) == ["pkg.a", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("def g():\n    pass\n")
    assert find_cycle(grimp.build_graph("pkg", cache_dir=None)) is None
