"""The lr sweep's choice rule and table, on hand-made records (no training)."""
import json

import pandas as pd
import pytest

from fgvc.methods import list_methods
from fgvc.study import sweep


def _table(rows):
    return pd.DataFrame([{"method": m, "lr": lr, "val_top1": v, "n_val": 120}
                         for m, lr, v in rows])


def test_choice_keeps_the_default_unless_the_gain_exceeds_one_validation_image():
    t = _table([("a", 0.01, 50.0), ("a", 0.02, 60.0), ("a", 0.04, 60.8),     # +0.8 < 1 image
                ("b", 0.01, 40.0), ("b", 0.02, 50.0), ("b", 0.04, 52.5),     # +2.5 > 1 image
                ("c", 0.01, 70.0), ("c", 0.02, 55.0)])                       # lower lr wins
    got = sweep.choose(t, default_lr=0.02).set_index("method")
    assert got.loc["a", "chosen_lr"] == 0.02
    assert got.loc["b", "chosen_lr"] == 0.04
    assert got.loc["c", "chosen_lr"] == 0.01
    assert got.loc["b", "best_val_top1"] == 52.5 and got.loc["b", "val_top1_at_default"] == 50.0
    assert got.loc["c", "lrs_tried"] == 2


def test_report_reads_records_and_never_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FGVC_RESULTS", str(tmp_path))
    for i, (lr, val, test) in enumerate([(0.01, 40.0, 99.0), (0.02, 45.0, 1.0)]):
        d = tmp_path / "sweep" / "lr" / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"profile": "transfer", "train": {"lr": lr}}))
        (d / "metrics.json").write_text(json.dumps({
            "method": "baseline", "variant": "full", "seed": 0, "val_top1": val,
            "test_top1": test, "best_epoch": 5, "n_val": 120, "wall_time_s": 1.0,
            "run_id": f"r{i}"}))
    chosen = sweep.report("transfer")
    assert chosen["chosen_lr"].tolist() == [0.02]          # best on val (45 > 40), not on test
    md = (tmp_path / "sweep" / "lr" / "sweep.md").read_text()
    assert "| baseline |" in md and "lr 0.01" in md and "99" not in md
    assert pd.read_csv(tmp_path / "sweep" / "lr" / "sweep.csv")["val_top1"].dtype.kind == "f"


# A choice of a committed sweep that the profile does not take, with the measured reason; the
# test fails when either side moves, so that the exception is revisited, not forgotten.
NOT_TAKEN = {("lr", "baseline"): (0.08, 0.16)}   # (profile's, sweep's): at 0.16 the baseline reads
# 82.3 % on test over seeds 0-2, above the 80 % ceiling of the calibration band (lab record,
# "The regime"); keeping 0.08 keeps every arm on the recipe its head lr was swept with


@pytest.mark.parametrize("param", ["lr", "head_lr"])
def test_the_default_profiles_lrs_are_the_committed_sweeps_choices(param):
    """transfer's train.lr (one backbone recipe: every method's) and each swept method's
    head_lr equal the choices of the committed sweeps, results/sweep/<param>/chosen.csv,
    but for the listed exceptions."""
    from fgvc.paths import ROOT
    from fgvc.study.config import resolve

    chosen = pd.read_csv(ROOT / "results" / "sweep" / param / "chosen.csv").set_index("method")
    assert len(chosen) >= 1
    for method in chosen.index:
        value, swept = resolve(method)["train"][param], chosen.loc[method, "chosen_lr"]
        if (param, method) in NOT_TAKEN:
            assert (value, swept) == pytest.approx(NOT_TAKEN[param, method]), method
        else:
            assert value == pytest.approx(swept), method
    if param == "lr":   # one backbone recipe
        assert len({resolve(m)["train"]["lr"] for m in list_methods()}) == 1


def test_range_extends_where_the_best_lr_lies_at_an_edge_and_not_past_divergence():
    t = _table([("up", 0.01, 50.0), ("up", 0.02, 55.0), ("up", 0.04, 60.0),      # best at top
                ("down", 0.01, 30.0), ("down", 0.02, 20.0), ("down", 0.04, 6.0),  # best at bottom
                ("inside", 0.01, 50.0), ("inside", 0.02, 70.0), ("inside", 0.04, 60.0),
                ("tie", 0.04, 6.25), ("tie", 0.01, 6.25), ("tie", 0.02, 6.25),   # tie -> lowest
                ("limit", 0.16, 40.0), ("limit", 0.32, 50.0)])                   # at LR_LIMITS
    t["num_classes"] = 16
    assert sweep.extensions(t) == {"up": 0.08, "down": 0.005, "tie": 0.005}
    assert sweep.diverged(t) == {"down": 0.04, "tie": 0.01}     # val <= 2 x chance (12.5 %)
    # what the sweep trains next: nothing above the lr where a method did not learn
    assert sweep.below_divergence(t, {"up": 0.08, "down": 0.04, "tie": 0.02, "new": 0.16}) == {
        "up": 0.08, "down": 0.04, "new": 0.16}
    t.loc[t["method"] == "up", "num_classes"] = float("nan")      # unknown chance: counts as learned
    assert "up" not in sweep.diverged(t)


def test_a_newer_record_of_the_same_point_supersedes_an_older_one(tmp_path):
    for rid, val, when in [("old", 40.0, "2026-11-01T00:00:00"), ("new", 50.0, "2026-12-01T00:00:00")]:
        d = tmp_path / "runs" / rid
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"profile": "transfer", "train": {"lr": 0.02}}))
        (d / "metrics.json").write_text(json.dumps({
            "method": "baseline", "variant": "full", "seed": 0, "val_top1": val, "best_epoch": 5,
            "n_val": 120, "wall_time_s": 1.0, "run_id": rid, "num_classes": 16,
            "finished_at": when}))
    t = sweep.load_sweep(tmp_path)
    assert t["run_id"].tolist() == ["new"] and t["val_top1"].tolist() == [50.0]


# ------------------------------------------------------------ the head-lr sweep (--param)
def test_each_swept_parameter_has_its_folder_under_sweep(tmp_path, monkeypatch):
    from fgvc.paths import ROOT, SCRATCH

    monkeypatch.delenv("FGVC_RESULTS", raising=False)
    assert sweep.sweep_root() == SCRATCH / "results" / "sweep" / "lr"   # make sweep sets results/
    assert sweep.sweep_root("train.head_lr") == SCRATCH / "results" / "sweep" / "head_lr"
    assert sweep.sweep_root("train.head_lr", "results/readings/head_lr") == \
        ROOT / "results" / "readings" / "head_lr"
    with pytest.raises(ValueError, match="unknown sweep parameter 'train.epochs'"):
        sweep.sweep_root("train.epochs")
    monkeypatch.setenv("FGVC_RESULTS", str(tmp_path))
    assert sweep.sweep_root("train.head_lr") == tmp_path / "sweep" / "head_lr"
    assert sweep.sweep_root() == tmp_path / "sweep" / "lr"


def test_a_value_trained_on_more_seeds_counts_by_its_mean():
    """One seed's lucky run does not choose: 0.16 reads 84 on seed 0 but 78 on average."""
    t = pd.DataFrame([{"method": "baseline", "lr": lr, "val_top1": v, "n_val": 800, "seed": s}
                      for lr, v, s in [(0.08, 82.0, 0), (0.08, 80.0, 1), (0.08, 81.0, 2),
                                       (0.16, 84.0, 0), (0.16, 75.0, 1), (0.16, 75.0, 2),
                                       (0.04, 70.0, 0)]])
    got = sweep.choose(t, default_lr=0.08).iloc[0]
    assert got["chosen_lr"] == 0.08 and got["best_val_top1"] == 81.0
    assert got["seeds_at_chosen"] == 3 and got["lrs_tried"] == 3
    assert sweep.extensions(t) == {}            # the best mean lies inside: nothing to extend
    t.loc[t["lr"] == 0.16, "val_top1"] = 84.0                  # 84 on every seed: +3 > one image
    got = sweep.choose(t, default_lr=0.08).iloc[0]
    assert got["chosen_lr"] == 0.16 and got["val_top1_at_default"] == 81.0
    assert sweep.extensions(t) == {"baseline": 0.32}


def test_a_head_lr_sweep_sets_head_lr_only_and_reads_it_back(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep.subprocess, "call", lambda cmd, env, cwd: calls.append((cmd, env)) or 0)
    root = tmp_path / "head"
    assert sweep.run_sweep("transfer_next", "baseline,pcanet", extend=False,
                           param="train.head_lr", root=root) == 0
    sets = [c[c.index("--set") + 1] for c, _ in calls]
    assert sets == [f"train.head_lr={x:g}" for x in sweep.PARAMS["train.head_lr"][0]]
    assert all(env["FGVC_RESULTS"] == str(root) for _, env in calls)
    assert all(c[c.index("--methods") + 1] == "baseline,pcanet" for c, _ in calls)
    for i, head_lr in enumerate([None, 0.16]):   # null: the new modules train at train.lr
        d = root / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"profile": "transfer_next",
                                                   "train": {"lr": 0.08, "head_lr": head_lr}}))
        (d / "metrics.json").write_text(json.dumps({
            "method": "baseline", "variant": "full", "seed": 0, "val_top1": 50.0 + 0.5 * i,
            "best_epoch": 5, "n_val": 120, "wall_time_s": 1.0, "run_id": f"r{i}"}))
    assert sweep.load_sweep(root, "transfer_next", "train.head_lr")["lr"].tolist() == [0.08, 0.16]
    assert sweep.load_sweep(root, "transfer_next")["lr"].tolist() == [0.08]  # by train.lr: one point
    chosen = sweep.report("transfer_next", root, "train.head_lr")
    assert chosen["chosen_lr"].tolist() == [0.08]   # +0.5 < one val image: the profile's
    assert "by train.head_lr" in (root / "sweep.md").read_text()


def test_a_head_lr_choice_keeps_each_methods_own_value_within_one_image():
    """head_lr differs per method in the profile: the margin is taken against each one's own."""
    t = _table([("ma_ea", 0.01, 70.0), ("ma_ea", 0.02, 80.0), ("ma_ea", 0.04, 80.5),
                ("pcanet", 0.0003125, 82.0), ("pcanet", 0.000625, 80.0), ("pcanet", 0.00125, 70.0)])
    got = sweep.choose(t, default_lr={"ma_ea": 0.02, "pcanet": 0.000625}).set_index("method")
    assert got.loc["ma_ea", "chosen_lr"] == 0.02            # +0.5 is within one image (0.83)
    assert got.loc["pcanet", "chosen_lr"] == 0.0003125      # +2.0 is not
    assert got.loc["pcanet", "profile_lr"] == 0.000625
