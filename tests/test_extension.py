"""One place per extension: a method is its file (lib/fgvc/methods/<name>.py), a dataset is its
module (lib/fgvc/data/<name>.py). Dropped into a copy of the package, each shows up, in its
declared display order, in every listing: the registries, the train CLI's choices, the data
CLI's choices, the grid plan, the results tables (display names, order, paper column).

The drop-in tests work on a copy of the fgvc package (tests/test_registry.py's helpers), in a
subprocess, so the real package is never touched.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fgvc.data import registry as data_registry
from fgvc.data.registry import (DATASETS, DatasetInfo, claims_dataset, dataset_info, display_name, list_datasets, paper_dataset,
                                paper_datasets, register_dataset)
from fgvc.methods import list_methods, method_rank
from fgvc.methods import registry as method_registry
from test_registry import REPO, _copy, _python

TOY_METHOD = '''
"""toy: a linear head on the backbone (a test's drop-in method, shown between ma_ea and lafe)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Method, MethodConfig
from .registry import register


@dataclass
class ToyConfig(MethodConfig):
    scale: float = 1.0


@register(order=25)
class Toy(Method):
    name = "toy"
    Config = ToyConfig

    def __init__(self, num_classes: int, cfg: ToyConfig):
        super().__init__(num_classes, cfg)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict:
        return {"logits": self.cfg.scale * self.fc(self.backbone(x).mean(dim=(2, 3)))}
'''

TOY_DATASET = '''
"""Toy Set 2000: a dataset in CUB layout (a test's drop-in dataset), whose numbers stand beside
the papers' CUB column, shown between SynthBirds and CUB."""
from __future__ import annotations

from pathlib import Path

from fgvc.data.base import Split
from fgvc.data.cub import load_cub
from fgvc.data.registry import DatasetInfo, register_dataset


def _load(root: Path, **options) -> Split:
    return load_cub(root)


DATASET = register_dataset(DatasetInfo(name="toyset", title="Toy Set 2000", load=_load, paper="cub", order=15))
'''

ORDERED_METHODS = ["baseline", "ma_ea", "lafe", "pcanet", "focus"]
ORDERED_DATASETS = ["synthbirds", "cub", "cub30", "cars", "aircraft"]


def test_the_registries_give_todays_order_names_and_paper_columns():
    assert list_methods() == ORDERED_METHODS
    assert sorted(["focus", "nope", "baseline", "lafe"], key=method_rank) == ["baseline", "lafe", "focus", "nope"]
    assert list_datasets() == ORDERED_DATASETS == list(DATASETS)
    assert [display_name(d) for d in list_datasets()] == ["SynthBirds", "CUB-200-2011", "CUB-30",
                                                          "Stanford Cars", "FGVC-Aircraft"]
    assert display_name("elsewhere") == "elsewhere"            # a record of an unknown dataset
    # CUB-30 stands beside no paper column: its own name, no paper numbers
    assert [paper_dataset(d) for d in list_datasets()] == ["cub", "cub", "cub30", "cars", "aircraft"]
    assert paper_datasets() == ["cub", "cars", "aircraft"]
    assert [claims_dataset(d) for d in list_datasets()] == ["cub", "cub", "cub", "cars", "aircraft"]
    assert [dataset_info(d).short for d in paper_datasets()] == ["CUB", "Cars", "Aircraft"]
    assert dataset_info("cub").manifest_key == "cub"


def test_every_dataset_module_registers_its_own_dataset():
    assert set(data_registry.dataset_modules()) == set(list_datasets())
    assert data_registry.NOT_DATASETS.isdisjoint(data_registry.dataset_modules())
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: aircraft, cars, cub, cub30, synthbirds"):
        dataset_info("imagenet")


def test_ties_in_order_are_broken_by_name(monkeypatch):
    from fgvc.methods import Method

    monkeypatch.setattr(method_registry, "_METHODS", dict(method_registry._METHODS))
    monkeypatch.setattr(method_registry, "_ORDER", dict(method_registry._ORDER))
    for name in ("zz_tie", "aa_tie"):
        method_registry.register(type(name, (Method,), {"name": name, "__module__": __name__}), order=20)
    method_registry.register(type("Last", (Method,), {"name": "last", "__module__": __name__}))  # no order
    assert list_methods() == ["baseline", "aa_tie", "ma_ea", "zz_tie", "lafe", "pcanet", "focus", "last"]


def test_a_dataset_name_has_one_declaration(monkeypatch):
    monkeypatch.setattr(data_registry, "_DATASETS", dict(data_registry._DATASETS))
    with pytest.raises(ValueError, match="'cub' is taken"):
        register_dataset(DatasetInfo(name="cub", title="another", load=lambda root, **_: None))
    again = DATASETS["cub"]
    assert register_dataset(again) is again            # re-importing its module is no conflict


def test_no_list_of_method_or_dataset_names_outside_the_registries():
    """The display order and names live in the method classes and dataset modules only."""
    literal = re.compile(r"""["']baseline["'],\s*["']ma_ea["']"""                    # a list of methods
                         r"""|["']cub["'],\s*["']cars["'],\s*["']aircraft["']"""      # a list of datasets
                         r"""|["']synthbirds["']:\s*["']SynthBirds["']""")           # a table of names
    code = {p: p.read_text(encoding="utf-8") for p in (REPO / "lib").rglob("*.py")}
    for p in (REPO / "notebooks").glob("*.ipynb"):   # the cells' code, not their stored outputs
        code[p] = "\n".join("".join(c["source"]) for c in json.loads(p.read_text(encoding="utf-8"))["cells"])
    assert len(code) > 40 and literal.search('METHODS = ["baseline", "ma_ea"]')  # the scan can find one
    found = sorted(str(p.relative_to(REPO)) for p, text in code.items() if literal.search(text))
    assert found == [], found


def test_a_dropped_in_method_and_dataset_are_everywhere(tmp_path):
    root = _copy(tmp_path, {"toy.py": TOY_METHOD})
    (root / "lib" / "fgvc" / "data" / "toyset.py").write_text(TOY_DATASET)
    proc = _python(root, f"""
        import contextlib, io, sys
        import pandas as pd
        import fgvc
        assert fgvc.__file__.startswith({str(root)!r}), fgvc.__file__
        sys.path.insert(0, {str(REPO / "tests")!r})
        from fixtures import make_cub

        def help_of(main, argv):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                try:
                    main(argv)
                except SystemExit as e:
                    assert e.code == 0, e.code
            return buf.getvalue()

        METHODS = "baseline,ma_ea,toy,lafe,pcanet,focus"
        DATASETS = "synthbirds,toyset,cub,cub30,cars,aircraft"

        # the registries, in the declared order
        from fgvc.methods import list_methods
        from fgvc.data import build_data, list_datasets, display_name, paper_dataset, paper_datasets
        assert ",".join(list_methods()) == METHODS, list_methods()
        assert ",".join(list_datasets()) == DATASETS, list_datasets()
        assert (display_name("toyset"), paper_dataset("toyset")) == ("Toy Set 2000", "cub")
        assert paper_datasets() == ["cub", "cars", "aircraft"]   # toyset is no paper column

        # the train CLI's choices
        from fgvc.study.train import main as train
        text = " ".join(help_of(train, ["--help"]).split())
        assert "--method {{" + METHODS + "}}" in text and "--dataset {{" + DATASETS + "}}" in text, text

        # the data CLI's choices, and its commands on the new dataset
        from fgvc.data.__main__ import main as data
        for cmd in ("check", "download", "prepare"):
            assert "{{" + DATASETS + "}}" in help_of(data, [cmd, "--help"]), cmd
        assert "{{synthbirds}}" in help_of(data, ["generate", "--help"])   # toyset is not generated
        cub = make_cub({str(tmp_path / "toyset")!r}, n_classes=3, per_class=4)
        assert data(["check", "toyset", "--root", str(cub)]) == 0
        assert data(["download", "toyset", "--root", str(cub)]) == 1
        bundle = build_data("toyset", cub, resize=16, crop=16, val_fraction=0.0)
        assert (bundle.num_classes, len(bundle.test)) == (3, 6), bundle

        # the grid plan and the config validation
        from fgvc.study.grid import plan
        specs = plan("scratch", methods=["toy"], datasets=["toyset"], seeds=[0])
        assert [(s.method, s.variant, s.dataset) for s in specs] == [("toy", "full", "toyset")], specs
        cfg = specs[0].config()
        assert (cfg["method"], cfg["dataset"]) == ("toy", "toyset"), cfg
        assert [s.method for s in plan("scratch", variants=["full"], seeds=[0])] == METHODS.split(",")

        # the results tables: display names, order, the paper column the toy dataset borrows
        from fgvc.study.results import accuracy_table, summarize
        runs = pd.DataFrame({{"profile": "scratch", "method": ["toy", "focus", "baseline", "toy"],
                             "dataset": ["toyset", "toyset", "toyset", "synthbirds"], "variant": "full",
                             "seed": 0, "test_top1": [50.0, 40.0, 60.0, 55.0]}})
        acc = accuracy_table(runs)
        assert list(acc.index) == ["baseline", "toy", "focus"], acc.index
        assert "Toy Set 2000 (ours)" in acc.columns and "SynthBirds (ours)" in acc.columns, acc.columns
        assert [c for c in acc.columns if c.startswith("paper")] == [
            "paper CUB-200-2011", "paper Stanford Cars", "paper FGVC-Aircraft"], acc.columns
        from fgvc.study.results import paper_number
        paper = summarize(runs).set_index(["method", "dataset"])["paper"]
        assert paper_number("baseline", "full", "cub") is not None
        assert paper[("baseline", "toyset")] == paper_number("baseline", "full", "cub"), paper
        print("OK")
    """)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr


def test_a_dataset_module_that_fails_to_import_is_an_error_with_its_cause(tmp_path):
    root = _copy(tmp_path, {})
    (root / "lib" / "fgvc" / "data" / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    proc = _python(root, """
        from fgvc.data import list_datasets
        try:
            list_datasets()
        except ImportError as e:
            print("MESSAGE:", e)
        else:
            print("no error")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "MESSAGE: dataset module fgvc.data.broken failed to import: RuntimeError: boom at import" in proc.stdout, \
        proc.stdout
