"""`make study` on a clone: retrain into a separate root, compare with the committed runs."""
import json
import subprocess
import sys

import pandas as pd

from fgvc.study import reproduce as rp
from fgvc.paths import ROOT

from tiny import TINY

OVER = {**TINY, "train.epochs": 1, "train.max_steps": 2}


def _machine(**change):
    m = {k: "x" for k in rp.DECIDES}
    return {**m, **change}


def test_compare_is_exact_when_everything_that_decides_matches():
    a = {"run_id": "r", "test_top1": 50.0, "test_top5": 90.0, "test_loss": 1.0, "val_top1": 40.0,
         "best_epoch": 3, "machine": _machine()}
    assert rp.compare(a, dict(a))["verdict"] == "exact"
    off = rp.compare(a, {**a, "test_loss": 1.0000001})
    assert (off["mode"], off["verdict"], off["reproduced"]) == ("exact", "differs", False)
    # equal metrics, other per-image predictions: not exact; none recorded: the metrics decide
    assert rp.compare(a, dict(a), same_images=False)["verdict"] == "differs"
    assert rp.compare(a, dict(a), same_images=None)["verdict"] == "exact"


def test_same_predictions_compares_every_split(tmp_path):
    import numpy as np

    from fgvc.study import predictions

    def write(name, pred):
        d = tmp_path / name
        d.mkdir()
        predictions.write(d, "h", {"test": {"pred": np.array(pred), "target": np.array([0, 1, 1])}})
        return d

    a, b, c = write("a", [0, 1, 0]), write("b", [0, 1, 0]), write("c", [0, 1, 1])
    assert rp._same_predictions(a, b) is True and rp._same_predictions(a, c) is False
    assert rp._same_predictions(tmp_path / "none", a) is None


def test_compare_is_bounded_and_names_what_differs():
    a = {"run_id": "r", "test_top1": 50.0, "machine": _machine(cpu_capability="AVX512")}
    near = rp.compare(a, {"run_id": "r", "test_top1": 51.5, "machine": _machine(cpu_capability="AVX2")})
    assert near["mode"] == "bounded" and near["reproduced"]
    assert near["differs_in"] == "cpu_capability: AVX512 -> AVX2"
    far = rp.compare(a, {"run_id": "r", "test_top1": 50.0 + rp.BOUND + 0.5,
                         "machine": _machine(torch="other")})
    assert not far["reproduced"] and far["verdict"].startswith("outside")


def test_changed_claim_verdicts_are_listed(tmp_path):
    csv = tmp_path / "claims.csv"
    pd.DataFrame({"dataset": ["d", "d"], "claim": ["a", "b"],
                  "verdict": ["supported", "not distinguishable"]}).to_csv(csv, index=False)
    rerun = pd.DataFrame({"dataset": ["d", "d"], "claim": ["a", "b"],
                          "verdict": ["supported", "contradicted"]})
    changed = rp.compare_claims(csv, rerun)
    assert changed[["claim", "committed", "rerun"]].values.tolist() == [["b", "not distinguishable",
                                                                        "contradicted"]]


def test_claims_of_a_dataset_the_rerun_lacks_are_not_counted_as_changed(tmp_path):
    """CUB-30's runs need data a clone does not have: the rerun has SynthBirds' claims only."""
    csv = tmp_path / "claims.csv"
    pd.DataFrame({"dataset": ["synthbirds", "cub30"], "claim": ["a", "a"],
                  "verdict": ["supported", "supported"]}).to_csv(csv, index=False)
    same = pd.DataFrame({"dataset": ["synthbirds"], "claim": ["a"], "verdict": ["supported"]})
    assert rp.compare_claims(csv, same).empty
    other = same.assign(verdict="contradicted")
    assert rp.compare_claims(csv, other)["dataset"].tolist() == ["synthbirds"]


def test_a_clone_reproduces_its_committed_runs_exactly_and_touches_nothing_committed(tmp_path, monkeypatch):
    committed, root = tmp_path / "results", tmp_path / "repro"
    monkeypatch.setenv("FGVC_RESULTS", str(committed))
    monkeypatch.setenv("FGVC_CHECKPOINTS", str(tmp_path / "ckpt"))
    cmd = [sys.executable, "-m", "fgvc.study.grid", "--profile", "scratch", "--methods", "baseline",
           "--variants", "full", "--seeds", "0", "--workers", "1", "--threads", "1"]
    for k, v in OVER.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**__import__("os").environ})
    before = {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    table = rp.reproduce("scratch", root=root, committed=committed, report=False,
                         overrides=OVER, methods=["baseline"], variants=["full"], seeds=[0])
    assert table["verdict"].tolist() == ["exact"] and table["reproduced"].all()
    assert "reproduced 1/1 runs exactly" in (root / "reproduction.md").read_text()
    assert pd.read_csv(root / "reproduction.csv")["difference"].tolist() == [0.0]
    after = {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert after == before                      # nothing committed is modified
    assert (root / "checkpoints").is_dir()      # checkpoints for the gallery stay in the root
