"""A method is one file: dropping lib/fgvc/methods/<name>.py with a registered class is all it
takes for the registry, config validation, the grid, the contract tests and the report.

Each test works on a copy of the fgvc package (and of configs/, which fgvc.paths finds beside
the package's lib/ folder), imported in a subprocess, so the real package is never touched.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fgvc.methods import list_methods
from fgvc.methods.registry import method_modules

REPO = Path(__file__).resolve().parents[1]

TOY = '''
"""toy: a linear head on the backbone, scaled by a switch (a test's drop-in method)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Method, MethodConfig
from .registry import register


@dataclass
class ToyConfig(MethodConfig):
    scale: float = 1.0


@register
class Toy(Method):
    name = "toy"
    Config = ToyConfig

    def __init__(self, num_classes: int, cfg: ToyConfig):
        super().__init__(num_classes, cfg)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        return {"logits": self.cfg.scale * self.fc(self.backbone(x).mean(dim=(2, 3)))}
'''


def _copy(tmp_path: Path, files: dict[str, str]) -> Path:
    """tmp_path/lib/fgvc (a copy, plus `files` under fgvc/methods/) and tmp_path/configs."""
    shutil.copytree(REPO / "lib" / "fgvc", tmp_path / "lib" / "fgvc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for name, text in files.items():
        (tmp_path / "lib" / "fgvc" / "methods" / name).write_text(textwrap.dedent(text))
    return tmp_path


def _python(root: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "lib"), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    for var, sub in (("FGVC_RESULTS", "results"), ("FGVC_CHECKPOINTS", "ckpt"), ("FGVC_DATA", "data"),
                     ("FGVC_CACHE", "cache")):
        env[var] = str(root / sub)
    return subprocess.run([sys.executable, *(["-c", textwrap.dedent(code)] if code else []), *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_every_method_module_registers_a_method():
    assert method_modules() == sorted(method_modules())
    assert {"base", "registry"}.isdisjoint(method_modules())
    assert set(method_modules()) <= set(list_methods())  # here each file registers its own name


def test_a_dropped_in_method_file_is_everywhere(tmp_path):
    root = _copy(tmp_path, {"toy.py": TOY, "_private.py": "raise RuntimeError('a private module is no method')\n"})
    proc = _python(root, f"""
        import contextlib, io
        import pandas as pd
        import torch
        import fgvc
        assert fgvc.__file__.startswith({str(root)!r}), fgvc.__file__
        from fgvc.methods import create_method, list_methods
        from fgvc.study.config import resolve
        from fgvc.study.grid import main, plan
        from fgvc.study.results import accuracy_table

        assert "toy" in list_methods() and "baseline" in list_methods(), list_methods()
        cfg = resolve("toy", "full", profile="scratch", seed=1, overrides={{"model.scale": 2.0}})
        assert (cfg["method"], cfg["model"]["scale"], cfg["model"]["backbone"]) == ("toy", 2.0, "resnet18")
        try:
            resolve("toy", overrides={{"model.nope": 1}})
        except ValueError as e:
            assert "scale" in str(e), e
        else:
            raise AssertionError("an unknown toy setting was accepted")

        specs = plan("scratch", methods=["toy"])
        assert {{(s.method, s.variant) for s in specs}} == {{("toy", "full")}} and len(specs) == 3, specs
        assert any(s.method == "toy" for s in plan("scratch"))  # the default study has it too
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["--profile", "scratch", "--methods", "toy", "--seeds", "0", "--plan"]) == 0
        assert specs[0].config()["run_id"] + "  pending" in buf.getvalue(), buf.getvalue()

        model = create_method("toy", 3, backbone="resnet18", input_size=32, scale=0.5)
        assert model(torch.randn(2, 3, 32, 32))["logits"].shape == (2, 3)

        runs = pd.DataFrame({{"profile": "scratch", "dataset": "synthbirds", "method": ["toy", "baseline"],
                             "variant": "full", "test_top1": [50.0, 60.0]}})
        assert list(accuracy_table(runs).index) == ["baseline", "toy"]
        print("OK")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr

    # the contract tests, run from the copy, have a case for it
    shutil.copy(REPO / "tests" / "test_method_contract.py", root / "test_method_contract.py")
    proc = _python(root, "", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                   "--rootdir", str(root), "test_method_contract.py", "-k", "toy")
    per_method = _method_parametrized_tests(REPO / "tests" / "test_method_contract.py")
    assert per_method >= 3, per_method
    assert proc.returncode == 0 and f"{per_method} passed" in proc.stdout, proc.stdout + proc.stderr


def _method_parametrized_tests(path: Path) -> int:
    """How many cases of the toy method (one variant, `full`) the tests in `path` parametrized
    over list_methods() have: one per test, whether the decorator names list_methods() or a
    module-level list built from it (e.g. every (method, variant) cell)."""
    tree = ast.parse(path.read_text())
    built = {t.id for node in tree.body if isinstance(node, ast.Assign)
             and "list_methods" in ast.unparse(node.value) for t in node.targets
             if isinstance(t, ast.Name)}
    return sum(1 for node in tree.body if isinstance(node, ast.FunctionDef)
               and any("list_methods" in ast.unparse(d) or any(n in ast.unparse(d) for n in built)
                       for d in node.decorator_list))


@pytest.mark.parametrize("body, cause", [
    ("import fgvc_no_such_module_anywhere\n", "No module named 'fgvc_no_such_module_anywhere'"),
    ("from .base import NoSuchName\n", "cannot import name 'NoSuchName'"),
    ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
])
def test_a_method_file_that_fails_to_import_is_an_error_with_its_cause(tmp_path, body, cause):
    root = _copy(tmp_path, {"broken.py": body})
    proc = _python(root, """
        from fgvc.methods import list_methods
        try:
            list_methods()
        except ImportError as e:
            print("MESSAGE:", e)
            print("CAUSE:", type(e.__cause__).__name__)
        else:
            print("no error")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "MESSAGE: method module fgvc.methods.broken failed to import" in proc.stdout, proc.stdout
    assert cause in proc.stdout and "CAUSE: None" not in proc.stdout, proc.stdout


def test_two_classes_cannot_share_a_name():
    from fgvc.methods import Method, register

    class Again(Method):
        name = "baseline"

    with pytest.raises(ValueError, match="'baseline'.*taken by fgvc.methods.baseline.Baseline"):
        register(Again)

    class Nameless(Method):
        pass

    with pytest.raises(ValueError, match="has no `name`"):
        register(Nameless)
