"""Figures of the study (matplotlib): Grad-CAM gallery, ablation charts, cost-accuracy scatter,
learning curves. Each names its axes with units and, where the data say, the profile and
protocol of the runs behind it.

Every function returns a matplotlib Figure; :func:`save` writes it atomically as PNG.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))  # headless under papermill and pytest

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from fgvc.data.registry import display_name  # noqa: E402
from fgvc.methods import list_methods  # noqa: E402
from fgvc.study.results import PROTOCOLS  # noqa: E402,F401


def save(fig, path) -> None:
    """Write `fig` as PNG to `path` atomically (the folder is created). `fig` None (a chart
    with nothing to show, e.g. :func:`ablation_chart` of the baseline) writes nothing and
    says so."""
    from fgvc.io import atomic_path

    if fig is None:
        print(f"no figure for {os.path.basename(str(path))}: nothing to compare, not written")
        return
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def short_name(name: str, width: int = 16) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Alb…' (tile titles stay readable)."""
    name = re.sub(r"^\d+\.", "", name).replace("_", " ")
    return name if len(name) <= width else name[:width - 1] + "…"


def gallery(images: torch.Tensor, labels: Sequence[int], columns: Sequence[dict],
            classes: Sequence[str], title: str = "", boxes: Sequence | None = None,
            parts: Sequence | None = None):
    """Rows = images, columns = the input then one CAM overlay per entry of `columns`.

    `images`: (N, 3, H, W) normalised as the networks saw them; each column is a dict with
    `title`, `cams` (N, H, W) in [0, 1] and `preds` (N,); each tile says predicted vs true
    class, green when right, red when wrong. Optional `boxes` ((x, y, w, h) or None) and
    `parts` ((P, 2) x, y) in input pixels are drawn on the input tile (the box and the parts
    the pointing game counts).
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from fgvc.data import denormalize

    n, k = len(images), len(columns)
    rgb = denormalize(images.detach().cpu()).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.9 * (k + 1), 2.0 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(rgb[i])
        if boxes is not None and boxes[i] is not None:
            x, y, w, h = boxes[i]
            axes[i, 0].add_patch(plt.Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=1,
                                               ec="yellow"))
        if parts is not None and len(parts[i]):
            axes[i, 0].scatter(np.asarray(parts[i])[:, 0] - 0.5, np.asarray(parts[i])[:, 1] - 0.5,
                               s=14, c="cyan", marker="+", linewidths=1)
        axes[i, 0].set_title(f"true: {short_name(classes[labels[i]])}", fontsize=7)
        for j, col in enumerate(columns):
            ax = axes[i, j + 1]
            ax.imshow(show_cam_on_image(rgb[i].astype(np.float32), col["cams"][i], use_rgb=True))
            pred = int(col["preds"][i])
            ok = pred == labels[i]
            ax.set_title(f"pred: {short_name(classes[pred])}", fontsize=7,
                         color="green" if ok else "red")
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    for j, col in enumerate(columns):
        axes[0, j + 1].annotate(col["title"], (0.5, 1.28), xycoords="axes fraction",
                                ha="center", fontsize=9, weight="bold")
    axes[0, 0].annotate("input", (0.5, 1.28), xycoords="axes fraction", ha="center",
                        fontsize=9, weight="bold")
    if title:
        fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout()
    return fig


def _title_context(df: pd.DataFrame, title: str = "") -> str:
    """"profile X, protocol Y (what it means)" for the runs behind `df`, leaving out what
    `title` already names."""
    parts = []
    if "profile" in df and df["profile"].nunique():
        profiles = ", ".join(sorted(map(str, df["profile"].dropna().unique())))
        if not all(re.search(rf"\b{re.escape(p)}\b", title) for p in profiles.split(", ")):
            parts.append(f"profile {profiles}")
    protocols = sorted(map(str, df["protocol"].dropna().unique())) if "protocol" in df else ["val"]
    parts.append("protocol " + ", ".join(f"{p} ({PROTOCOLS.get(p, '?')})" for p in protocols))
    if "overrides" in df and set(df["overrides"].dropna()) - {"none"}:
        over = "; ".join(sorted(set(df["overrides"].dropna()) - {"none"}))
        parts.append("overrides " + (over if len(over) <= 60 else over[:59] + "…"))
    return ", ".join(parts)


def _main_group(t: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The rows of one (protocol, overrides) group: ("val", "none") when present, else the
    first; and whether there were others."""
    keys = [k for k in ("protocol", "overrides") if k in t]
    if not keys or t.empty:
        return t, False
    groups = list(t.groupby(keys, sort=False, dropna=False).groups)
    pick = next((g for g in groups if tuple(np.atleast_1d(g)) == ("val", "none")[:len(keys)]),
                groups[0])
    mask = np.logical_and.reduce([t[k] == v for k, v in zip(keys, np.atleast_1d(pick))])
    return t[mask], len(groups) > 1


def method_colours(methods: Sequence[str] = ()) -> dict[str, str]:
    """One colour per method, the same in every figure: the registered methods take the colour
    cycle in their display order (:func:`fgvc.methods.list_methods`), any other method (sorted)
    the colours after them, so a method's dots, bars and lines never wear another's colour."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    registered = list_methods()
    names = registered + sorted(set(methods) - set(registered))
    return {m: cycle[i % len(cycle)] for i, m in enumerate(names)}


PAPER_COLOUR = "0.55"   # the paper's numbers: grey in every figure


def _signed(v: float) -> str:
    return f"{v:+.1f}".replace("-", "\u2212")


def ablation_chart(table: pd.DataFrame, method: str, dataset: str):
    """What a method's ablation measures on one dataset: for each row with a reference, the row
    minus its reference in test top-1 points; ours paired by seed with its 95 % t interval
    (columns diff_mean / diff_ci_low / diff_ci_high / n_pairs of
    :func:`fgvc.study.results.arm_table`) beside the paper's (paper_diff: the paper's row minus
    the paper's reference row; CUB's on SynthBirds). The first row is the method's `full` minus
    the baseline's `full`, then each ablation row minus the method's `full` (file order).

    `table` is `fgvc.study.results.ablation_table(runs, method)`. With several protocols or
    override sets, the chart shows protocol "val" without overrides (else the first) and its
    title says which. The difference axis is symmetric about 0, so a gap reads at its size.
    Returns None when fewer than two rows have a reference (the baseline's table, whose only
    row is the reference of every method's `full`, shown in each method's chart; or a method
    with only `full` run): one bar pair is not a chart. :func:`save` writes nothing for None.
    """
    t, more = _main_group(table[table["dataset"] == dataset])
    t = t[t["ref"].fillna("").astype(str) != ""].reset_index(drop=True) if "ref" in t else t[:0]
    if len(t) < 2:
        return None
    num = {c: pd.to_numeric(t[c], errors="coerce")
           for c in ("diff_mean", "diff_ci_low", "diff_ci_high", "paper_diff")}
    n_pairs = pd.to_numeric(t["n_pairs"], errors="coerce").fillna(0).astype(int)
    colour = method_colours([method])[method]
    pds = str(t["paper_dataset"].dropna().iloc[0]) if t["paper_dataset"].notna().any() else dataset
    paper_name = display_name(pds)
    k = len(t)
    fig, ax = plt.subplots(figsize=(8.2, 0.95 * k + 1.9))
    y = np.arange(k)[::-1].astype(float)          # first row on top
    h = 0.36
    ours_y, paper_y = y + h / 2, y - h / 2
    ax.barh(ours_y, num["diff_mean"].fillna(0), h, color=colour,
            label=f"ours ({display_name(dataset)}), paired by seed, 95 % CI")
    ax.barh(paper_y, num["paper_diff"].fillna(0), h, color=PAPER_COLOUR,
            label=f"paper ({paper_name}), as reported")
    ci = num["diff_ci_low"].notna() & num["diff_ci_high"].notna()
    if ci.any():
        lo, hi = num["diff_ci_low"][ci], num["diff_ci_high"][ci]
        ax.errorbar(num["diff_mean"][ci], ours_y[ci.to_numpy()],
                    xerr=[num["diff_mean"][ci] - lo, hi - num["diff_mean"][ci]], fmt="none",
                    ecolor="black", capsize=3, lw=1)
    ax.scatter(num["diff_mean"], ours_y, s=10, color="black", zorder=3)   # a tiny gap shows too
    ax.axvline(0, color="black", lw=0.8)
    extent = pd.concat([num[c].abs() for c in num]).max()
    limit = max(1.0, float(extent) if pd.notna(extent) else 1.0) * 1.12
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-0.6, k - 0.4)
    names = [f"{v} \u2212 " + (str(r).split("/")[-1] if str(r).startswith(method + "/")
                                else str(r).replace("/", " "))
             for v, r in zip(t["variant"], t["ref"])]
    ax.set_yticks(y, names, fontsize=8)
    for i in range(k):                             # the numbers, in a column right of the axes
        d, lo, hi, n = (num["diff_mean"][i], num["diff_ci_low"][i], num["diff_ci_high"][i],
                        n_pairs[i])
        if pd.isna(d):
            ours = "ours: no paired seeds"
        elif pd.isna(lo):
            ours = f"ours {_signed(d)}, n={n}: no CI"
        else:
            ours = f"ours {_signed(d)} [{_signed(lo)}, {_signed(hi)}], n={n}"
        paper = num["paper_diff"][i]
        theirs = "paper: no number" if pd.isna(paper) else f"paper {_signed(paper)}"
        for yy, text in ((ours_y[i], ours), (paper_y[i], theirs)):
            ax.annotate(text, (1.0, yy), xycoords=("axes fraction", "data"), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=7)
    if t["ref"].iloc[0] == "baseline/full" and t["ref"].iloc[1] != "baseline/full":
        ax.axhline((y[0] + y[1]) / 2, color="0.6", lw=0.6, ls="--")   # vs baseline | vs full
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("row \u2212 its reference, test top-1 (percentage points); "
                  "< 0: the row is below its reference", fontsize=8)
    context = _title_context(t) + (" (other protocols / overrides: see the tables)" if more else "")
    ax.set_title(f"{method}: each row minus its reference (ours paired over seeds; the paper's "
                 f"on {paper_name})\n{context}", fontsize=8)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=2,
               frameon=False)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))   # room for the legend
    return fig


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _distance(point, box) -> float:
    """Display-space distance from `point` (x, y) to the nearest edge of `box` (0 inside)."""
    dx = max(box.x0 - point[0], 0.0, point[0] - box.x1)
    dy = max(box.y0 - point[1], 0.0, point[1] - box.y1)
    return float(np.hypot(dx, dy))


def _segments_cross(p, q, r, s) -> bool:
    """Whether the segments p-q and r-s (display space) cross (strictly)."""
    def side(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def _crosses(a, b, box, skip: float = 0.0) -> bool:
    """Whether the segment a -> b (display space), less its first `skip` pixels, passes
    through `box`."""
    length = float(np.hypot(b[0] - a[0], b[1] - a[1]))
    if length <= skip:
        return False
    f = skip / length
    a = (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)
    if any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for x, y in (a, b)):
        return True
    corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
    return any(_segments_cross(a, b, corners[k], corners[(k + 1) % 4]) for k in range(4))


def _centre(box) -> tuple[float, float]:
    return ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)   # a leader line aims at it


def place_labels(ax, xs, ys, texts, colors=None, fontsize: float = 6.5) -> list:
    """Annotate points (xs, ys) with `texts` so that no label overlaps another label or a
    marker, and a label set beside a point (no leader line) sits clearly nearer its own point
    than any other (by 6 points).

    Deterministic: the most crowded points are labelled first; each label takes the first
    offset of a ring around its point (nearest ring first) that collides with nothing placed,
    else the least bad. A label moved away from its point (more than 8 points) gets a leader
    line in its own colour, which then says whose it is, and which crosses no other label,
    marker or leader line where it can. Call it when the axes' limits and the figure layout
    are final (offsets are in points, so saving at another dpi keeps the layout).
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    px = fig.dpi / 72.0
    markers = [Bbox.from_bounds(x - 5 * px, y - 5 * px, 10 * px, 10 * px) for x, y in pts]
    frame = ax.get_window_extent(renderer)
    angles = np.deg2rad(np.arange(45, 405, 22.5))     # 16 directions, diagonals first
    dirs = [(round(float(np.cos(a)), 3), round(float(np.sin(a)), 3)) for a in angles]
    rings = [3, 8, 14, 22, 32, 45, 60, 80]
    colors = list(colors) if colors is not None else [None] * len(pts)
    gaps = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    crowd = (gaps < 40 * px).sum(axis=1)
    order = sorted(range(len(pts)), key=lambda i: (-crowd[i], i))
    placed, leaders, out = [], [], [None] * len(pts)
    for i in order:
        (x, y), text, c = (xs[i], ys[i]), texts[i], colors[i]
        probe = ax.annotate(text, (x, y), fontsize=fontsize)
        size = probe.get_window_extent(renderer)          # the text's box, measured once
        probe.remove()
        best = None
        for r in rings:
            for dx, dy in dirs:
                ha = "left" if dx > 0.3 else "right" if dx < -0.3 else "center"
                va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
                kw = dict(xytext=(dx * r, dy * r), textcoords="offset points", fontsize=fontsize,
                          ha=ha, va=va)
                share = {"left": 0, "bottom": 0, "center": 0.5, "right": 1, "top": 1}
                bb = Bbox.from_bounds(pts[i][0] + dx * r * px - share[ha] * size.width,
                                      pts[i][1] + dy * r * px - share[va] * size.height,
                                      size.width, size.height)
                score = sum(_overlap(bb, b) for b in placed + markers)
                score += bb.width * bb.height - _overlap(bb, frame)   # outside the axes counts
                if r > 8:    # a leader line: it crosses no label or marker, no label it;
                    # when all collide, a line across a line is the least bad
                    seg = (pts[i], _centre(bb))
                    score += bb.width * bb.height * (
                        sum(_crosses(*seg, b) for b in placed)
                        + sum(_crosses(*s, bb) for s in leaders)
                        + 0.5 * sum(_crosses(*seg, m, skip=6 * px)   # not a marker on its own
                                    for j, m in enumerate(markers) if j != i)
                        + 0.25 * sum(_segments_cross(*seg, *s) for s in leaders))
                else:        # no leader line: its own point must be clearly the nearest
                    own = _distance(pts[i], bb) + 6 * px
                    if any(_distance(p, bb) < own for j, p in enumerate(pts) if j != i):
                        score += bb.width * bb.height
                if best is None or score < best[0]:
                    best = (score, r, kw, bb)
                if score == 0:
                    break
            if best[0] == 0:
                break
        _, r, kw, bb = best
        if r > 8:
            kw["arrowprops"] = dict(arrowstyle="-", lw=0.6, color=c or "0.45", shrinkA=0,
                                    shrinkB=3)
            leaders.append((pts[i], _centre(bb)))
        out[i] = ax.annotate(text, (x, y), color=c, **kw)
        placed.append(bb)
    return out


def cost_accuracy(points: pd.DataFrame, title: str = ""):
    """Scatter of inference GMACs (x) vs test top-1 mean ± std (y), one point per (method,
    variant). `points` has columns method, variant, infer_GMACs, mean, std (and profile,
    protocol where known: the title names them). A method's `full` point (a dot) is labelled
    with the method's name, an ablation row (a cross) with the variant's, both in the
    method's colour (:func:`method_colours`); labels are placed so that none overlaps another
    (:func:`place_labels`); the methods' legend sits outside the axes."""
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    colours = method_colours(points["method"].unique())
    several = "protocol" in points and points["protocol"].nunique() > 1
    labels = []
    methods = sorted(points["method"].unique(), key=lambda m: (list(colours).index(m), m))
    for method in methods:
        g = points[points["method"] == method]
        full = g["variant"] == "full"
        c = colours[method]
        std = pd.to_numeric(g["std"], errors="coerce").fillna(0.0)
        ax.errorbar(g["infer_GMACs"], g["mean"], yerr=std, fmt="none", ecolor=c, alpha=0.6)
        ax.scatter(g.loc[full, "infer_GMACs"], g.loc[full, "mean"], color=c, marker="o", s=50,
                   label=method)
        ax.scatter(g.loc[~full, "infer_GMACs"], g.loc[~full, "mean"], color=c, marker="x", s=35)
        for _, r in g.iterrows():
            text = (method if r["variant"] == "full" else r["variant"]) + (
                f" ({r['protocol']})" if several else "")
            labels.append((r["infer_GMACs"], r["mean"], text, c))
    ax.set_xlabel("inference cost (GMACs per image)")
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    head = title or "cost vs accuracy"
    ax.set_title(f"{head}\n{_title_context(points, head)}; o: a method's full variant (labelled "
                 "with the method), x: its ablation rows", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method",
              title_fontsize=7)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    ax.autoscale_view()
    fig.tight_layout()
    ax.set_xlim(ax.get_xlim()), ax.set_ylim(ax.get_ylim())   # frozen: labels are placed in them
    if labels:
        xs, ys, texts, cs = zip(*labels)
        place_labels(ax, xs, ys, texts, cs)
    return fig


def learning_curves(history: pd.DataFrame, title: str = ""):
    """Train loss and val top-1 by epoch of each method in `history` (one dataset, profile,
    protocol and variant: `fgvc.study.results.load_histories` rows): the line is the mean over seeds,
    the band their min-max. Without val columns (protocol "paper": no held-out split) the
    right panel shows train top-1 and says so."""
    has_val = "val_top1" in history and history["val_top1"].notna().any()
    right = "val_top1" if has_val else "train_top1"
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9))
    colours = method_colours(history["method"].unique())
    methods = sorted(history["method"].unique(), key=lambda m: list(colours).index(m))
    for method in methods:
        g = history[history["method"] == method]
        n = g["seed"].nunique() if "seed" in g else 1
        for ax, col in zip(axes, ("train_loss", right)):
            if col not in g or g[col].isna().all():
                continue
            s = g.groupby("epoch")[col].agg(["mean", "min", "max"]).sort_index()
            line, = ax.plot(s.index, s["mean"], marker="o", ms=3, lw=1.4,
                            color=colours.get(method), label=f"{method} (n={n} seeds)")
            ax.fill_between(s.index, s["min"], s["max"], color=line.get_color(), alpha=0.15, lw=0)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("train loss (per image, mean over the epoch)")
    axes[0].set_title("train loss", fontsize=9)
    if has_val:
        axes[1].set_ylabel("val top-1 (%)")
        axes[1].set_title("val top-1 (held-out split, after each epoch)", fontsize=9)
    else:
        axes[1].set_ylabel("train top-1 (%)")
        axes[1].set_title("train top-1 (no val split under this protocol: train shown)",
                          fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
                   title="method", title_fontsize=7)
    head = title or "learning curves"
    fig.suptitle(f"{head}\n{_title_context(history, head)}; line: mean over seeds, band: min-max",
                 fontsize=9)
    fig.tight_layout()
    return fig


def no_data(message: str):
    """A small figure that says why there is nothing to show."""
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return fig
