"""The study's figures drawn from small hand-made tables: ablation charts show differences on
an axis that holds 0 (ours as the table's paired differences and intervals, the paper's as its
own rows' difference), no chart is a single bar pair, labels do not collide, and a method keeps
one colour across figures."""
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from fgvc.study.figures import ablation_chart, cost_accuracy, method_colours, save

NAN = float("nan")
COLUMNS = ["profile", "protocol", "overrides", "dataset", "method", "variant", "ref",
           "paper_dataset", "paper_diff", "diff_mean", "diff_ci_low", "diff_ci_high", "n_pairs"]


def ablation(rows, method="alpha", dataset="synthbirds"):
    """An ablation table as arm_table writes it: (variant, ref, paper_diff, diff_mean,
    ci_low, ci_high, n_pairs) per row."""
    return pd.DataFrame([["t", "val", "none", dataset, method, *r[:2], "cub", *r[2:]]
                         for r in rows], columns=COLUMNS)


TABLES = {
    "mixed": ablation([("full", "baseline/full", 2.6, -36.2, -56.2, -16.1, 3),
                       ("no_a", "alpha/full", -2.6, 18.5, NAN, NAN, 1),
                       ("no_b", "alpha/full", -0.3, 5.4, -7.3, 18.2, 3)]),
    # every value above 0: an axis fitted to the data would start above 0
    "all above 0": ablation([("full", "baseline/full", 3.0, 20.0, 18.0, 22.0, 3),
                             ("no_a", "alpha/full", 1.0, 25.0, 24.0, 26.0, 3)]),
    "all below 0": ablation([("full", "baseline/full", -3.0, -20.0, -22.0, -18.0, 3),
                             ("no_a", "alpha/full", -1.0, -25.0, -26.0, -24.0, 3),
                             ("no_b", "alpha/full", NAN, NAN, NAN, NAN, 0)]),
}


def _text_boxes(fig, texts) -> dict:
    """{text: its display box}, the text alone (an annotation's extent includes its leader)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    boxes = {}
    for t in texts:
        t.update_positions(renderer)
        boxes[t.get_text()] = Text.get_window_extent(t, renderer)
    return boxes


def _overlapping(boxes: dict) -> list:
    names = list(boxes)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if boxes[a].overlaps(boxes[b])]


def _bars(ax):
    """(ours, paper) bar widths, top row first."""
    rects = sorted(ax.patches, key=lambda p: -(p.get_y() + p.get_height() / 2))
    return [r.get_width() for r in rects[0::2]], [r.get_width() for r in rects[1::2]]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_ablation_chart_difference_axis_holds_zero_and_every_value(name):
    table = TABLES[name]
    fig = ablation_chart(table, "alpha", "synthbirds")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    values = pd.concat([table[c] for c in ("paper_diff", "diff_mean", "diff_ci_low",
                                           "diff_ci_high")]).dropna()
    assert lo < 0 < hi and lo == pytest.approx(-hi)                  # symmetric about 0
    assert lo < values.min() and values.max() < hi
    assert len(ax.get_yticks()) == len(table) >= 2                    # never one bar pair


def test_ablation_chart_draws_the_tables_differences_and_intervals():
    table = TABLES["mixed"]
    ax = ablation_chart(table, "alpha", "synthbirds").axes[0]
    ours, paper = _bars(ax)
    assert ours == pytest.approx(list(table["diff_mean"]))            # row - its reference
    assert paper == pytest.approx(list(table["paper_diff"]))          # the paper's, the same way
    whiskers = [seg for c in ax.collections if hasattr(c, "get_segments")
                for seg in c.get_segments() if len(seg) == 2 and seg[0][1] == seg[1][1]]
    spans = sorted((min(s[0][0], s[1][0]), max(s[0][0], s[1][0])) for s in whiskers)
    assert np.allclose(spans, [(-56.2, -16.1), (-7.3, 18.2)])         # n=1: no interval drawn
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["full \u2212 baseline full", "no_a \u2212 full", "no_b \u2212 full"]
    texts = " | ".join(t.get_text() for t in ax.texts)
    assert "n=1: no CI" in texts and "paper \u22122.6" in texts
    assert not _overlapping(_text_boxes(ax.figure, ax.texts))


def test_no_chart_of_a_single_bar_pair(tmp_path):
    baseline = ablation([("full", "", NAN, NAN, NAN, NAN, 0)], method="baseline")
    only_full = ablation([("full", "baseline/full", 2.0, 1.0, -1.0, 3.0, 3)])
    assert ablation_chart(baseline, "baseline", "synthbirds") is None
    assert ablation_chart(only_full, "alpha", "synthbirds") is None
    assert ablation_chart(TABLES["mixed"], "alpha", "cub") is None    # no rows on that dataset
    save(None, tmp_path / "ablation_baseline.png")                    # the notebook's call
    assert not (tmp_path / "ablation_baseline.png").exists()


def test_a_method_keeps_its_colour_across_figures():
    colours = method_colours(["zeta"])
    assert len(set(colours.values())) == len(colours)                 # one colour per method
    assert method_colours()["ma_ea"] == colours["ma_ea"]              # not shifted by others
    ax = ablation_chart(TABLES["mixed"], "ma_ea", "synthbirds").axes[0]
    ours = sorted(ax.patches, key=lambda p: -p.get_y())[0]
    assert mcolors.same_color(ours.get_facecolor(), colours["ma_ea"])

    pts = pd.DataFrame({"method": ["baseline", "ma_ea", "ma_ea", "pcanet", "pcanet"],
                        "variant": ["full", "full", "pool", "full", "ae_center"],
                        "infer_GMACs": [0.125, 0.1207, 0.1207, 0.1267, 0.1267],
                        "mean": [75.0, 38.8, 42.8, 39.3, 38.3],
                        "std": [3.1, 5.1, NAN, 1.0, 2.3], "profile": "t", "protocol": "val"})
    ax = cost_accuracy(pts).axes[0]
    by_label = {"baseline": "baseline", "ma_ea": "ma_ea", "pool": "ma_ea", "pcanet": "pcanet",
                "ae_center": "pcanet"}
    texts = [t for t in ax.texts if t.get_text() in by_label]
    assert len(texts) == len(pts)
    for t in texts:                                                   # label and leader line
        colour = colours[by_label[t.get_text()]]
        assert mcolors.same_color(t.get_color(), colour)
        if t.arrow_patch is not None:
            assert mcolors.same_color(t.arrow_patch.get_edgecolor(), colour)


def test_cost_accuracy_labels_sit_by_their_own_point():
    """Near-coincident points of several methods (ma_ea's and pcanet's full, lafe's and focus's
    rows): no label overlaps another, and a label without a leader line is nearer its own
    point than any other."""
    from fgvc.study.figures import _distance

    pts = pd.DataFrame(   # the study's transfer runs on SynthBirds (results/runs, 2026-12)
        [("baseline", "full", 0.1254, 75.0, 3.1), ("focus", "full", 0.3765, 74.2, 8.9),
         ("focus", "image_only", 0.1254, 71.0, 1.6), ("lafe", "full", 0.2005, 68.8, 4.6),
         ("lafe", "no_fusion", 0.1258, 70.3, 8.3), ("ma_ea", "full", 0.1207, 38.8, 5.1),
         ("ma_ea", "pool", 0.1207, 42.8, 0.0), ("ma_ea", "pool_ma", 0.1207, 44.2, 1.6),
         ("ma_ea", "resnet", 0.1254, 61.0, 0.0), ("pcanet", "ae_center", 0.1267, 38.3, 2.3),
         ("pcanet", "full", 0.1267, 39.3, 1.0)],
        columns=["method", "variant", "infer_GMACs", "mean", "std"]).assign(profile="t",
                                                                            protocol="val")
    fig = cost_accuracy(pts)
    ax = fig.axes[0]
    labels = {t.get_text(): t for t in ax.texts}
    assert len(labels) == len(pts)
    boxes = _text_boxes(fig, ax.texts)
    assert not _overlapping(boxes)
    where = {m if v == "full" else v: ax.transData.transform((x, y))   # full: the method's name
             for m, v, x, y in zip(pts["method"], pts["variant"], pts["infer_GMACs"], pts["mean"])}
    for name, t in labels.items():
        if t.arrow_patch is None:
            own = _distance(where[name], boxes[name])
            assert all(own < _distance(p, boxes[name]) for k, p in where.items() if k != name)


def test_cost_accuracy_labels_do_not_overlap():
    """Eleven points in a clump of three methods: every point labelled, no two labels overlap;
    the title names profile and protocol, the axes their units."""
    rng = np.random.default_rng(0)
    pts = pd.DataFrame({"method": ["baseline"] + ["alpha"] * 5 + ["beta"] * 5,
                        "variant": ["full", "full", "no_a", "no_b", "no_c", "no_long_name",
                                    "full", "x1", "x2", "x3", "x4"],
                        "infer_GMACs": 0.2 + rng.normal(0, 0.001, 11),
                        "mean": 50 + rng.normal(0, 0.3, 11), "std": [1.0] * 10 + [np.nan],
                        "profile": "t", "protocol": "val"})
    fig = cost_accuracy(pts, title="t profile, synthbirds: cost vs top-1")
    ax = fig.axes[0]
    names = set(np.where(pts["variant"] == "full", pts["method"], pts["variant"]))
    boxes = _text_boxes(fig, [t for t in ax.texts if t.get_text() in names])
    assert set(boxes) == names and len(ax.texts) == len(pts)
    assert not _overlapping(boxes)
    assert "protocol val" in ax.get_title() and "t profile" in ax.get_title()
    assert "GMACs" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
