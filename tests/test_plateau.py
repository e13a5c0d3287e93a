"""fgvc.study.plateau: validation top-1 at two training lengths, on the seeds both have, and
what an epoch's training and validation cost."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fgvc.study import plateau, results
from fixtures import write_run_record

def _write_history_run(root, method, seed, epochs, vals, lr=None):
    h = pd.DataFrame({"epoch": range(1, epochs + 1), "train_ce": np.linspace(2, 1, epochs),
                      "train_top1": np.linspace(20, 90, epochs), "train_seconds": 30.0,
                      "val_seconds": 4.0, "val_top1": vals})
    write_run_record(root, method, seed, run_id=f"{method}-e{epochs}-s{seed}" + (f"-lr{lr}" if lr else ""),
                     epochs=epochs, train={"lr": lr} if lr else None,
                     overrides={"train.epochs": epochs}, history=h,
                     metrics={"val_top1": max(vals), "test_top1": max(vals) - 5,
                              "n_val": 800, "n_test": 1600, "num_classes": 16})


def test_plateau_compares_lengths_on_common_seeds(tmp_path):
    for s in (0, 1):
        _write_history_run(tmp_path, "baseline", s, 2, [60.0, 70.0 + s])     # best 70, 71
        _write_history_run(tmp_path, "baseline", s, 4, [50, 60, 70, 70.5 + s])  # best 70.5, 71.5
        _write_history_run(tmp_path, "lafe", s, 2, [50.0, 60.0])
        _write_history_run(tmp_path, "lafe", s, 4, [50, 60, 65, 64.0])
    runs, hists = plateau.load([tmp_path], "p")
    df = plateau.table(runs, hists).set_index(["method", "epochs"])
    assert df.loc[("baseline", 4), "gain_over_half"] == pytest.approx(0.5)
    assert df.loc[("baseline", 4), "plateau_at_half"]
    assert df.loc[("lafe", 4), "gain_over_half"] == pytest.approx(5.0)
    assert not df.loc[("lafe", 4), "plateau_at_half"]
    assert math.isnan(df.loc[("lafe", 2), "gain_over_half"])
    assert df.loc[("lafe", 2), "val_s_per_epoch"] == 4.0 and df.loc[("lafe", 2), "train_s_per_epoch"] == 30.0
    md = plateau.markdown(df.reset_index(), "cmd")
    assert "| lafe | profile | 4 | 2 | 65.0 | 60.0 | 90.0 | +5.0 | no | 30 | 4.0 (800) |" in md
    fig = plateau.figure(hists)
    assert len(fig.axes) == 2


def test_runs_of_another_setting_are_not_paired_with_the_profiles(tmp_path):
    """A run at another lr (or SynthBirds spec) is its own row, labelled by what differs."""
    _write_history_run(tmp_path, "baseline", 0, 2, [60.0, 70.0])
    _write_history_run(tmp_path, "baseline", 0, 4, [50, 60, 70, 71.0])
    _write_history_run(tmp_path, "baseline", 0, 4, [50, 60, 70, 90.0], lr=0.16)
    runs, hists = plateau.load([tmp_path], "p")
    df = plateau.table(runs, hists)
    assert df[["setting", "epochs"]].values.tolist() == [["lr=0.16", 4], ["profile", 2], ["profile", 4]]
    assert df["gain_over_half"].round(1).fillna(-1).tolist() == [-1, -1, 1.0]   # 0.16 has no half
    assert results.setting_label({"data": {"synth": {"part_scale": 1.0}}, "train": {"lr": 0.08}},
                                 {"data": {"synth": {"part_scale": 0.7, "noise": 0.1}},
                                  "train": {"lr": 0.08}}) == "noise=default, part_scale=1.0"
    assert len(plateau.figure(hists).axes) == 1
