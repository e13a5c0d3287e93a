"""fgvc.study.no_harm: the step-0 probe, the features hook of every method, the harm rule, and
on the transfer profile: ma_ea's `pool` graft harms, its `resnet` row does not."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fgvc.methods import create_method, list_methods
from fgvc.study import no_harm as nh
from fgvc.study.config import load_variants
from tiny import TINY, TINY_SYNTH


# ----------------------------------------------------------------------------- the probe
def _blobs(n_per: int, k: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * sep
    y = np.repeat(np.arange(k), n_per)
    return means[y] + rng.normal(size=(len(y), d)), y


def test_probe_separable_features_score_high():
    x, y = _blobs(40, 4, 30, sep=3.0, seed=0)
    xs, ys = _blobs(20, 4, 30, sep=3.0, seed=0)  # same class means, fresh noise
    xs, ys = xs + np.random.default_rng(1).normal(size=xs.shape), ys
    assert nh.fit_probe(x, y, xs, ys)["top1"] > 95


def test_probe_random_features_score_near_chance():
    rng = np.random.default_rng(0)
    x, xs = rng.normal(size=(160, 200)), rng.normal(size=(400, 200))
    y, ys = np.repeat(np.arange(4), 40), np.repeat(np.arange(4), 100)
    assert abs(nh.fit_probe(x, y, xs, ys)["top1"] - 25) < 8


def test_probe_is_invariant_to_feature_scale_and_wide_features():
    """Standardized: pcanet's x100 scale changes nothing; wider than the samples works (SVD)."""
    x, y = _blobs(10, 4, 500, sep=0.3, seed=2)
    xs, ys = _blobs(10, 4, 500, sep=0.3, seed=2)
    a, b = nh.fit_probe(x, y, xs, ys), nh.fit_probe(100 * x, y, 100 * xs, ys)
    assert a["top1"] == b["top1"] and a["lam"] == b["lam"]


def test_split_fit_score_is_stratified_disjoint_and_seeded():
    labels = [c for c in range(4) for _ in range(30)]
    fit, score = nh.split_fit_score(labels, 80, 0.6, seed=0)
    assert not set(fit) & set(score)
    assert np.bincount([labels[i] for i in fit]).tolist() == [12] * 4
    assert np.bincount([labels[i] for i in score]).tolist() == [8] * 4
    assert nh.split_fit_score(labels, 80, 0.6, seed=0) == (fit, score)
    assert nh.split_fit_score(labels, 80, 0.6, seed=1) != (fit, score)
    with pytest.raises(ValueError, match="fewer than"):
        nh.split_fit_score(labels, 200, 0.6, seed=0)


def test_harms_rule():
    assert nh.harms(9.4, 31.8)
    assert not nh.harms(31.8, 31.8) and not nh.harms(35.0, 31.8)
    assert not nh.harms(28.8, 31.8)          # exactly tol below: no harm
    assert nh.harms(28.7, 31.8)
    assert nh.harms(30.0, 31.8, tol=1.0) and not nh.harms(30.0, 31.8, tol=2.0)


def test_focus_features_are_the_hybrid_feature_or_the_image_feature():
    torch.manual_seed(0)
    kw = dict(backbone="resnet18", weights="none", input_size=64, num_regions=2, num_hybrid=2)
    full = create_method("focus", 5, **kw).eval()
    image = create_method("focus", 5, use_hybrid=False, **kw).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert full.features(x).shape[1] == 512 * 3
        torch.testing.assert_close(image.features(x), image.backbone(x).mean((2, 3)))


def test_first_bn_after_pool_is_lite0_block1_expand_bn():
    graft = create_method("ma_ea", 4, backbone="efficientnet_lite0", weights="none",
                          input_size=64, use_ma=False, use_ea=False)
    plain = create_method("baseline", 4, backbone="efficientnet_lite0", weights="none")
    for model in (graft, plain):
        block1 = model.backbone.stages[0][1]
        assert nh.first_bn_after_pool(model) is block1.block[1]
    resnet = create_method("baseline", 4, backbone="resnet18", weights="none")
    assert nh.first_bn_after_pool(resnet) is resnet.backbone.stages[0][0].bn1


def test_input_stats_measure_the_shift_in_running_stds():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    stats = nh.InputStats(bn)
    bn(torch.randn(64, 3, 8, 8) * 4 + 11)        # mean 11 = 1 + 5 running stds, std 2x
    s = stats.summary()
    assert s["bn_shift"] == pytest.approx(5.0, abs=0.05)
    assert s["bn_std_ratio"] == pytest.approx(2.0, abs=0.05)


# ----------------------------------------------------------------------------- the command
def test_step0_lists_not_applicable_rows_and_compares_with_the_baseline(monkeypatch):
    """Scratch profile on a tiny set: baseline row first, a `not_applicable:` variant listed
    with its reason and no probe, every other row against the baseline's probe."""
    real = nh.load_variants

    def variants(method):
        out = real(method)
        if method == "ma_ea":
            out = {**out, "pool": {**out["pool"], "not_applicable": "no max-pool here"}}
        return out

    monkeypatch.setattr(nh, "load_variants", variants)
    df = nh.step0("scratch", methods=["ma_ea"], variants=["resnet", "pool"], images=40,
                  overrides={"data.synth": TINY_SYNTH}, log=lambda *_: None)
    assert df[["method", "variant"]].values.tolist() == [["baseline", "full"], ["ma_ea", "resnet"],
                                                         ["ma_ea", "pool"]]
    pool = df.set_index("variant").loc["pool"]
    assert pool.not_applicable == "no max-pool here" and pd.isna(pool.probe_top1)
    resnet = df.set_index("variant").loc["resnet"]
    # ma_ea without its parts is the baseline's network, seeded alike: the same probe
    assert resnet.probe_top1 == resnet.baseline_probe_top1 and not resnet.harms
    # the backbone probe: the classifier input where it is the pooled backbone map, as here
    assert resnet.backbone_probe_top1 == resnet.probe_top1
    md = nh.step0_markdown(df, "cmd")
    assert "not applicable: no max-pool here" in md and "| ma_ea | resnet |" in md


def test_parts_reports_gates_and_top1_without_the_removable_branch(isolated_results):
    from fgvc.study.run import run

    over = {**TINY, "model.use_ea": False}
    run(method="ma_ea", variant="pool_ma", profile="scratch", seed=0, overrides=over,
        progress=False)
    df = nh.parts(isolated_results / "results", log=lambda *_: None)
    row = df.iloc[0]
    assert row.method == "ma_ea" and row.removed.startswith("MA blocks")
    assert 0 <= row.top1_without <= 100 and 0 <= row.eval_top1 <= 100
    assert isinstance(row.gates, str) and row.gates
    md = nh.parts_markdown(df, "cmd")
    assert f"| {row.run_id} |" in md and "MA blocks" in md


def test_own_gates_names_scales_twins_and_centres():
    torch.manual_seed(0)
    kw = dict(backbone="resnet18", weights="none", input_size=64)
    lafe = create_method("lafe", 4, **kw)
    gates = nh.own_gates(lafe)
    assert gates and all(v == "0" for k, v in gates.items() if "relative L2" in k)  # twins at step 0
    with torch.no_grad():
        lafe.attention[0].con_channel.fc1.weight.add_(1.0)
    assert nh.own_gates(lafe)["attention.0.con_channel - dis_channel (relative L2)"] != "0"
    assert "center.centers (L2 norm per class)" in nh.own_gates(create_method("pcanet", 4, **kw))
    base = create_method("baseline", 4, **kw)
    assert nh.own_gates(base) == {}
    base.gate_scale = nn.Parameter(torch.tensor([0.5]))  # a zero-init-style scale of a method
    assert nh.own_gates(base) == {"gate_scale": "0.5"}
    assert not nh.remove_branch(base)


def test_cli_writes_markdown_and_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(nh, "step0", lambda *a, **k: pd.DataFrame(
        [{"method": "baseline", "variant": "full", "dim": 8, "probe_top1": 30.0,
          "baseline_probe_top1": 30.0, "difference": 0.0, "harms": False, "lam": 1.0,
          "backbone_probe_top1": 30.0,
          "bn_shift": 0.2, "bn_std_ratio": 1.4, "n_fit": 6, "n_score": 4, "chance": 25.0}]))
    assert nh.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "no_harm.csv").is_file()
    assert "| baseline | full | 8 | 30.0 |" in (tmp_path / "no_harm.md").read_text()


# ----------------------------------------------------------------------------- this issue
@pytest.mark.slow
def test_transfer_ma_ea_pool_graft_harms_and_resnet_does_not():
    """Lite0 with ImageNet weights at 128 px (transfer_v1, the default before the fair
    transplant, where `pool` is the graft): ma_ea's stem-pool graft loses the probe, its
    `resnet` row (the baseline's network) keeps it."""
    df = nh.step0("transfer_v1", methods=["ma_ea"], variants=["resnet", "pool"], images=320,
                  log=lambda *_: None).set_index("variant")
    assert not df.loc["resnet", "harms"]
    assert df.loc["pool", "harms"]
    assert df.loc["pool", "bn_shift"] > 3 > df.loc["resnet", "bn_shift"]


@pytest.mark.slow
def test_transfer_next_new_choices_keep_the_probe_and_todays_graft_fails():
    """The fair transplant's settings (profile transfer_next, issue 29): ma_ea's pooling branch
    and pcanet's learned attention keep the probe within TOL of the baseline's on the same
    images; today's graft (variant graft_full) still fails it, with the block-1 BN shift.
    focus's classifier input adds the features of crops chosen by its untrained localisation;
    its backbone is the baseline's (the backbone probe equals the baseline's probe)."""
    df = nh.step0("transfer_next", methods=["ma_ea", "pcanet", "focus"],
                  variants=["full", "graft_full"], images=320,
                  log=lambda *_: None).set_index(["method", "variant"])
    assert not df.loc[("ma_ea", "full"), "harms"]
    assert not df.loc[("pcanet", "full"), "harms"]
    assert df.loc[("ma_ea", "graft_full"), "harms"]
    assert df.loc[("ma_ea", "graft_full"), "bn_shift"] > 3 > df.loc[("ma_ea", "full"), "bn_shift"]
    # the branch enters through a zero gate: the backbone's own features are the baseline's
    base = df.loc[("baseline", "full"), "probe_top1"]
    assert df.loc[("ma_ea", "full"), "backbone_probe_top1"] == base
    assert df.loc[("focus", "full"), "backbone_probe_top1"] == base
