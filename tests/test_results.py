"""Tidy tables, paired differences and claims from fake run records (known values, checked
against scipy), and the learning curves' titles (profile and protocol); the other figures: test_figures.py."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import fgvc.study.results as results
from fixtures import write_run_record
from fgvc.study.results import (accuracy_markdown, arm_table, claims_markdown, claims_table,
                          load_failures, load_histories, load_runs, paper_baseline)

VARIANTS = {
    "baseline": {"full": {"cfg": {}, "paper": {"cub": 84.0, "cars": 90.0}}},
    "alpha": {
        "full": {"cfg": {}, "paper": {"cub": 88.0, "cars": 93.0},
                 "note": "main table. The plain ResNet-50 row (run it as the baseline): CUB 85.0, "
                         "Cars 92.5, Aircraft 90.0."},
        "no_a": {"cfg": {}, "paper": {"cub": 86.0}},
        "no_b": {"cfg": {}, "paper": {"cub": 87.5}},
        "no_c": {"cfg": {}, "paper": {"cub": 87.0}},
        "no_place": {"cfg": {}, "paper": {"cub": 86.5}},
        "diag": {"cfg": {}, "paper": {}},
    },
    "beta": {"full": {"cfg": {}, "paper": {"cub": 87.0}}},
}
METHODS = ["baseline", "alpha", "beta"]

# (method, variant): {seed: test top-1}
TOP1 = {
    ("baseline", "full"): {0: 60.0, 1: 62.0, 2: 58.0},
    ("alpha", "full"): {0: 65.0, 1: 66.0, 2: 64.0},    # - baseline: 5, 4, 6 -> supported
    ("alpha", "no_a"): {0: 66.0, 1: 68.0, 2: 66.0},    # full - row: -1, -2, -2 -> contradicted
    ("alpha", "no_b"): {0: 64.0, 1: 67.0, 2: 63.0},    # full - row: 1, -1, 1 -> holds 0
    ("alpha", "no_c"): {0: 60.0},                      # one seed
    ("beta", "full"): {3: 70.0, 4: 71.0},              # no seed in common with the baseline
}


def t_ci(values):
    """The 95 % t interval by scipy: (mean, std, lo, hi)."""
    x = np.asarray(values, float)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), x.std(ddof=1), lo, hi


def write_run(root, method, variant, seed, top1, profile="t", protocol="val", history=True,
              extra=None, overrides=None, dataset="synthbirds"):
    """fixtures.write_run_record with these tests' defaults (ResNet-18 at 64 px, 3 epochs)."""
    rid = f"{profile}-{dataset}-{method}-{variant}-s{seed}" + ("-abcdef" if overrides else "")
    h = None
    if history:
        h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0 + seed, 1.5, 1.0],
                          "train_top1": [20.0, 40.0, 60.0]})
        if protocol != "paper":
            h["val_top1"] = [10.0 + seed, 30.0, top1]
    write_run_record(root, method, seed, variant=variant, dataset=dataset, profile=profile,
                     run_id=rid, overrides=overrides, epochs=3, protocol=protocol,
                     metrics={"test_top1": top1, **(extra or {})}, history=h,
                     backbone="resnet18", crop=64)
    return rid


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "load_variants", lambda m: VARIANTS.get(m, {"full": {"cfg": {}}}))
    root = tmp_path / "results"
    for (method, variant), by_seed in TOP1.items():
        for seed, top1 in by_seed.items():
            extra = ({"test_genus_top1": 80.0 + seed, "chance_top1": 6.25,
                      "test_within_genus_top1": None}    # null: a dataset without genera
                     if (method, variant) == ("alpha", "full") else None)
            write_run(root, method, variant, seed, top1,
                      protocol=None if method == "beta" else "val", extra=extra)
    # another protocol: its own group, never paired with the val runs
    paper = {"protocol": "paper"}   # a --set protocol=paper run: its own run_id, overrides "none"
    write_run(root, "baseline", "full", 0, 50.0, protocol="paper", overrides=paper)
    write_run(root, "alpha", "full", 0, 52.0, protocol="paper", overrides=paper)
    (root / "failures.json").write_text(json.dumps({
        "t-synthbirds-alpha-no_place-s0": {"error": "Traceback ...\nValueError: no place for a "
                                           "stem pooling in backbone 'tiny'", "log": "x"}}))
    return root


def _row(df, **kw):
    mask = np.logical_and.reduce([df[k] == v for k, v in kw.items()])
    out = df[mask]
    assert len(out) == 1, (kw, out)
    return out.iloc[0]


def test_load_runs_reads_protocol_with_val_for_older_records(fake):
    runs = load_runs(fake)
    assert len(runs) == sum(map(len, TOP1.values())) + 2
    assert set(runs.loc[runs["method"] == "beta", "protocol"]) == {"val"}   # key missing
    assert sorted(runs["protocol"].unique()) == ["paper", "val"]
    assert set(runs["overrides"]) == {"none"}


def test_arm_table_means_intervals_and_paired_differences_by_hand(fake):
    arms = arm_table(load_runs(fake))
    base = _row(arms, protocol="val", method="baseline", variant="full")
    mean, std, lo, hi = t_ci([60.0, 62.0, 58.0])
    assert (base["mean"], base["std"], base["n"]) == (pytest.approx(mean), pytest.approx(std), 3)
    assert (base["ci_low"], base["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert base["half_width"] == pytest.approx(4.302652729911275 * 2.0 / math.sqrt(3))
    assert base["ref"] == "" and base["n_pairs"] == 0 and math.isnan(base["diff_mean"])

    full = _row(arms, protocol="val", method="alpha", variant="full")
    d_mean, d_std, d_lo, d_hi = t_ci([5.0, 4.0, 6.0])
    assert full["ref"] == "baseline/full" and full["n_pairs"] == 3
    assert (full["diff_mean"], full["diff_std"]) == (pytest.approx(d_mean), pytest.approx(d_std))
    assert (full["diff_ci_low"], full["diff_ci_high"]) == (pytest.approx(d_lo), pytest.approx(d_hi))
    assert full["diff_half_width"] == pytest.approx((d_hi - d_lo) / 2)
    # the paper's numbers: CUB's on SynthBirds, the method's own baseline from its note
    assert (full["paper_dataset"], full["paper"], full["paper_ref"]) == ("cub", 88.0, 85.0)
    assert full["paper_diff"] == pytest.approx(3.0)
    assert "note" in full["paper_ref_source"]

    row = _row(arms, protocol="val", method="alpha", variant="no_a")   # row - full
    r_mean, _, r_lo, r_hi = t_ci([1.0, 2.0, 2.0])
    assert row["ref"] == "alpha/full" and row["diff_mean"] == pytest.approx(r_mean)
    assert (row["diff_ci_low"], row["diff_ci_high"]) == (pytest.approx(r_lo), pytest.approx(r_hi))
    assert row["paper_diff"] == pytest.approx(86.0 - 88.0)

    one = _row(arms, protocol="val", method="alpha", variant="no_c")  # one seed: no interval
    assert one["n"] == 1 and one["mean"] == 60.0 and one["n_pairs"] == 1
    assert all(math.isnan(one[c]) for c in ("std", "ci_low", "ci_high", "half_width",
                                            "diff_ci_low", "diff_ci_high", "diff_half_width"))
    assert one["diff_mean"] == pytest.approx(60.0 - 65.0)

    beta = _row(arms, method="beta", variant="full")        # seeds 3, 4 vs 0, 1, 2: no pairs
    assert beta["n"] == 2 and beta["n_pairs"] == 0 and math.isnan(beta["diff_mean"])

    paper = _row(arms, protocol="paper", method="alpha", variant="full")   # paired in its group
    assert paper["n_pairs"] == 1 and paper["diff_mean"] == pytest.approx(2.0)


def test_genus_metrics_where_present_nan_elsewhere(fake):
    arms = arm_table(load_runs(fake))
    full = _row(arms, protocol="val", method="alpha", variant="full")
    assert (full["test_genus_top1_mean"], full["test_genus_top1_n"]) == (81.0, 3)
    assert full["test_genus_top1_std"] == pytest.approx(1.0)
    assert full["chance_top1_mean"] == 6.25 and full["test_errors_in_genus_n"] == 0
    assert math.isnan(full["test_errors_in_genus_mean"])
    assert full["test_within_genus_top1_n"] == 0 and math.isnan(full["test_within_genus_top1_mean"])
    base = _row(arms, protocol="val", method="baseline", variant="full")
    assert base["test_genus_top1_n"] == 0 and math.isnan(base["test_genus_top1_mean"])


def test_tables_are_tidy_and_read_back_numeric(fake, tmp_path):
    runs = load_runs(fake)
    for df, numeric in ((arm_table(runs), ["mean", "std", "n", "ci_low", "ci_high", "half_width",
                                          "paper", "paper_diff", "diff_mean", "diff_ci_low",
                                          "diff_ci_high", "diff_half_width", "n_pairs",
                                          "test_genus_top1_mean", "test_genus_top1_n"]),
                        (claims_table(runs, load_failures(fake), methods=METHODS),
                         ["paper_gain", "diff_mean", "ci_low", "ci_high", "half_width",
                          "n_pairs", "n_arm", "n_against"])):
        path = tmp_path / "t.csv"
        df.to_csv(path, index=False)
        back = pd.read_csv(path)
        assert list(back.columns) == list(df.columns)
        for col in numeric:
            assert pd.api.types.is_numeric_dtype(back[col]), (col, back[col].dtype)
        for col in ("n", "n_pairs"):
            if col in back:
                assert pd.api.types.is_integer_dtype(back[col])
        # one observation per row: the keys are unique
        keys = (["profile", "protocol", "dataset", "overrides", "method", "variant"]
                if "variant" in df else ["profile", "protocol", "dataset", "overrides", "claim"])
        assert not df.duplicated(keys).any()


def test_claims_verdicts_and_reasons(fake):
    claims = claims_table(load_runs(fake), load_failures(fake), methods=METHODS)
    val = claims[claims["protocol"] == "val"]
    verdict = dict(zip(val["against"] + " <- " + val["arm"], zip(val["verdict"], val["reason"])))
    assert verdict["baseline/full <- alpha/full"][0] == "supported"
    assert verdict["alpha/no_a <- alpha/full"][0] == "contradicted"
    assert verdict["alpha/no_b <- alpha/full"][0] == "not distinguishable"
    assert verdict["alpha/no_c <- alpha/full"] == ("not tested", "one seed only")
    assert verdict["alpha/diag <- alpha/full"] == ("not tested", "row not run: alpha/diag")
    v, reason = verdict["alpha/no_place <- alpha/full"]
    assert v == "not tested" and "no place on the backbone" in reason
    assert verdict["baseline/full <- beta/full"] == ("not tested", "no common seeds")

    sup = _row(val, arm="alpha/full", against="baseline/full")
    d_mean, _, d_lo, d_hi = t_ci([5.0, 4.0, 6.0])
    assert (sup["kind"], sup["diff_mean"], sup["n_pairs"]) == ("beats baseline", pytest.approx(d_mean), 3)
    assert (sup["ci_low"], sup["ci_high"]) == (pytest.approx(d_lo), pytest.approx(d_hi))
    assert sup["half_width"] == pytest.approx((d_hi - d_lo) / 2)
    assert sup["paper_gain"] == pytest.approx(88.0 - 85.0)      # the paper's own baseline

    comp = _row(val, arm="alpha/full", against="alpha/no_a")  # full - row (component helps)
    c_mean, _, c_lo, c_hi = t_ci([-1.0, -2.0, -2.0])
    assert comp["kind"] == "component helps" and comp["diff_mean"] == pytest.approx(c_mean)
    assert (comp["ci_low"], comp["ci_high"]) == (pytest.approx(c_lo), pytest.approx(c_hi))
    assert comp["paper_gain"] == pytest.approx(88.0 - 86.0)
    assert _row(val, against="alpha/diag")["kind"] == "beats diagnostic row"
    assert math.isnan(_row(val, against="alpha/diag")["paper_gain"])

    paper = claims[claims["protocol"] == "paper"]     # one seed each under protocol "paper"
    assert _row(paper, arm="alpha/full", against="baseline/full")["reason"] == "one seed only"


def test_markdown_says_profile_protocol_and_t_intervals(fake):
    runs = load_runs(fake)
    acc = accuracy_markdown(arm_table(runs))
    cl = claims_markdown(claims_table(runs, load_failures(fake), methods=METHODS))
    for text in (acc, cl):
        assert "t intervals over seeds" in text
        assert "profile `t`, protocol `val` (held-out val split, best epoch tested)" in text
        assert "protocol `paper` (whole train set, final epoch tested)" in text
        assert "nan" not in text.lower().replace("not distinguishable", "")
    assert "| dataset" in acc and "test_genus_top1_mean" in acc
    assert "supported" in cl and "contradicted" in cl


def test_empty_records_give_empty_tables(tmp_path):
    runs = load_runs(tmp_path)
    assert arm_table(runs).empty and claims_table(runs).empty
    assert "No complete runs" in accuracy_markdown(arm_table(runs))


def test_paper_baseline_sources(monkeypatch):
    monkeypatch.setattr(results, "load_variants", lambda m: VARIANTS.get(m, {"full": {}}))
    assert paper_baseline("alpha", "cars") == (92.5, "alpha.yaml full note (plain ResNet-50 row)")
    assert paper_baseline("beta", "cub") == (84.0, "baseline.yaml full")
    assert paper_baseline("beta", "aircraft") == (None, "")


# ------------------------------------------------------------------ figures

def test_learning_curves_val_and_paper_protocol(fake):
    from fgvc.study.figures import learning_curves

    hist = load_histories(load_runs(fake), fake)
    val = hist[(hist["protocol"] == "val") & (hist["variant"] == "full")]
    fig = learning_curves(val, title="SynthBirds")
    title = fig._suptitle.get_text()
    assert "profile t" in title and "protocol val" in title and "min-max" in title
    assert fig.axes[1].get_ylabel() == "val top-1 (%)" and fig.axes[0].get_xlabel() == "epoch"
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3                                   # baseline, alpha, beta
    base = [ln for ln in lines if ln.get_label().startswith("baseline")][0]
    assert list(base.get_ydata()) == pytest.approx([3.0, 1.5, 1.0])   # mean of 2, 3, 4 at epoch 1
    paper = hist[(hist["protocol"] == "paper") & (hist["variant"] == "full")]
    fig = learning_curves(paper, title="SynthBirds")
    assert "protocol paper" in fig._suptitle.get_text()
    assert fig.axes[1].get_ylabel() == "train top-1 (%)"
    assert "no val split" in fig.axes[1].get_title()


def test_a_claim_with_a_run_that_did_not_learn_is_not_tested(tmp_path, monkeypatch):
    """Final train top-1 <= 2 x chance in any run of an arm: the claim is not tested, with why."""
    monkeypatch.setattr(results, "load_variants", lambda m: {"full": {"cfg": {}, "paper": {}}})
    root = tmp_path / "results"
    for seed in (0, 1, 2):
        for method, top1, train in (("baseline", 60.0 + seed, 80.0), ("alpha", 7.0, 14.0 - seed)):
            rid = write_run(root, method, "full", seed, top1, extra={"num_classes": 16})
            pd.DataFrame({"epoch": [1], "train_loss": [9.0], "train_top1": [train]}).to_csv(
                root / "runs" / rid / "history.csv", index=False)
    runs = load_runs(root)
    # 2 x chance = 12.5 %: alpha's seeds 0-1 (14, 13 %) learned, seed 2 (12 %) did not
    assert runs.set_index(["method", "seed"])["learned"].to_dict() == {
        ("alpha", 0): True, ("alpha", 1): True, ("alpha", 2): False,
        ("baseline", 0): True, ("baseline", 1): True, ("baseline", 2): True}
    claim = _row(claims_table(runs, methods=["baseline", "alpha"]), arm="alpha/full")
    assert claim["verdict"] == "not tested"
    assert claim["reason"] == ("training did not learn (final train top-1 <= 2 x chance): "
                               "alpha/full (1 of 3 seeds)")
    assert claim["diff_mean"] == pytest.approx(-54.0)     # the numbers are still shown


def test_claims_report_the_minimum_detectable_difference_and_whether_the_paper_gain_was_within_it(fake):
    claims = claims_table(load_runs(fake), load_failures(fake), methods=METHODS)
    alpha = _row(claims, arm="alpha/full", against="baseline/full", protocol="val")
    # paired differences 5, 4, 6: sd 1, n 3 -> (t(0.975, 2) + t(0.8, 2)) x 1 / sqrt(3)
    want = (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) / math.sqrt(3)
    assert alpha["mdd"] == pytest.approx(want)                       # 3.10
    assert alpha["paper_gain"] == pytest.approx(3.0)                 # 88 - 85: below the mdd
    assert alpha["paper_gain_detectable"] == "no"
    no_a = _row(claims, arm="alpha/full", against="alpha/no_a", protocol="val")      # diffs -1, -2, -2: sd 0.577
    assert no_a["mdd"] == pytest.approx(want * math.sqrt(1 / 3))     # 1.79
    assert no_a["paper_gain"] == pytest.approx(2.0)                  # 88 - 86: at least the mdd
    assert no_a["paper_gain_detectable"] == "yes"
    one_seed = _row(claims, arm="alpha/full", against="alpha/no_c", protocol="val")
    assert math.isnan(one_seed["mdd"]) and one_seed["paper_gain_detectable"] == ""
    assert "mdd" in claims_markdown(claims) and "paper_gain_detectable" in claims_markdown(claims)
    # no no-harm table given: the adaptation column is empty, no bootstrap without predictions
    assert set(claims["adaptation"]) == {""}
    assert claims["boot_low"].isna().all()


def test_a_failed_adaptation_makes_its_claims_not_tested_and_keeps_their_numbers(fake):
    """The no-harm table's backbone probe decides (fgvc.study.verdicts.adaptation_failures):
    alpha's row no_a harms the backbone; alpha's full reads low only through its classifier
    input (new modules untrained at step 0) with the backbone's probe at the baseline's."""
    no_harm = pd.DataFrame([
        {"method": "baseline", "variant": "full", "probe_top1": 35.0, "baseline_probe_top1": 35.0,
         "backbone_probe_top1": 35.0},
        {"method": "alpha", "variant": "full", "probe_top1": 28.0, "baseline_probe_top1": 35.0,
         "backbone_probe_top1": 35.0},
        {"method": "alpha", "variant": "no_a", "probe_top1": 13.0, "baseline_probe_top1": 35.0,
         "backbone_probe_top1": 31.5}])
    claims = claims_table(load_runs(fake), load_failures(fake), methods=METHODS, no_harm=no_harm)
    no_a = _row(claims, arm="alpha/full", against="alpha/no_a", protocol="val")
    assert no_a["verdict"] == "not tested"          # it was "contradicted" (CI below 0)
    assert no_a["reason"] == ("the adaptation failed the no-harm check: alpha/no_a: backbone "
                              "probe 31.5 % against the baseline's 35.0 % at step 0")
    assert no_a["adaptation"].startswith("failed: alpha/no_a")
    assert no_a["diff_mean"] == pytest.approx(-5 / 3)                  # still shown
    alpha = _row(claims, arm="alpha/full", against="baseline/full", protocol="val")
    assert (alpha["verdict"], alpha["adaptation"]) == ("supported", "ok")
    # 3.5 points below is a harm, 3.0 is not (the tolerance); an older table without the
    # backbone column is read by its feature probe
    older = no_harm.drop(columns="backbone_probe_top1")
    assert set(results.adaptation_failures(older)) == {("alpha", "full"), ("alpha", "no_a")}
    at_tol = no_harm.assign(backbone_probe_top1=[35.0, 35.0, 32.0])
    assert results.adaptation_failures(at_tol) == {}


def test_claims_carry_a_paired_bootstrap_over_seeds_and_images_where_runs_have_predictions(fake):
    runs = load_runs(fake)
    rng = np.random.default_rng(0)
    correct = {}
    for (m, v, s) in zip(runs["method"], runs["variant"], runs["seed"]):
        p = (0.7 if m == "alpha" else 0.5)
        correct[(m, v, s)] = (rng.random(400) < p).astype(float)
    runs["correct"] = [correct[k] for k in zip(runs["method"], runs["variant"], runs["seed"])]
    claims = claims_table(runs, load_failures(fake), methods=METHODS)
    alpha = _row(claims, arm="alpha/full", against="baseline/full", protocol="val")
    pairs = [np.stack([correct[("alpha", "full", s)], correct[("baseline", "full", s)]], 1)
             for s in (0, 1, 2)]
    assert (alpha["boot_low"], alpha["boot_high"]) == pytest.approx(results.paired_bootstrap(pairs))
    assert 10 < alpha["boot_low"] < 20 < alpha["boot_high"] < 30       # about +20 points
    beta = _row(claims, arm="beta/full", protocol="val")                              # no common seed
    assert math.isnan(beta["boot_low"])


def test_cub30_shows_no_paper_numbers_beside_its_accuracy_and_tests_cubs_claimed_gains(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "load_variants", lambda m: VARIANTS.get(m, {"full": {"cfg": {}}}))
    root = tmp_path / "results"
    for method, by_seed in (("baseline", {0: 60.0, 1: 62.0}), ("alpha", {0: 65.0, 1: 66.0})):
        for seed, top1 in by_seed.items():
            write_run(root, method, "full", seed, top1, dataset="cub30")
    runs = load_runs(root)
    arms = arm_table(runs)
    assert arms["paper"].isna().all() and set(arms["paper_dataset"]) == {"cub30"}
    claim = _row(claims_table(runs, methods=["baseline", "alpha"]), arm="alpha/full",
                 against="baseline/full")
    assert claim["paper_dataset"] == "cub" and claim["paper_gain"] == pytest.approx(3.0)
