"""Train to the plateau: each method's validation top-1 at two training lengths, and what each
evaluation split costs (issue "the study's regime"; docs/lab-record.md "The regime").

    python -m fgvc.study.plateau --records DIR [--records DIR ...] [--profile transfer_regime]
                                 [--out DIR]

For every method's `full` variant of one profile and dataset, the runs are grouped by their
setting (everything of the resolved config but the length and the seed: runs of another
SynthBirds spec or lr are another setting, labelled by what differs from the profile's config
today, "profile" where nothing does), their length (train.epochs; a run's override of it
counts) and seed. The table gives, per method and
length, the mean over seeds of the best-epoch validation top-1 (what a run is selected on) and
of the test top-1, the last epoch's training top-1 (of the predicting head), and the seconds one epoch's training and one
validation pass took (history.csv; the machine may be shared: see the run records), then the
gain of each doubling of the length on the seeds both lengths have. A method is at its plateau
at a length when doubling it raises the mean validation top-1 by at most `TOL` points (the
issue's rule; a cosine schedule makes the last epochs of any one run flat, so the lengths are
compared, not the last epochs). The figure draws validation top-1 against the epoch for each
length, one panel per method.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fgvc.paths import SCRATCH, portable
from fgvc.study.results import attach_settings, load_histories, load_runs

TOL = 1.0                     # points of mean validation top-1 a doubling may add at the plateau
DEFAULT_OUT = SCRATCH / "plateau"


def load(roots: list[Path], profile: str, dataset: str = "synthbirds") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, histories) of the `full` runs of `profile` on `dataset` under the roots, each run
    with its `setting` and `setting_label` (fgvc.study.results.attach_settings, the length
    left out)."""
    runs, hists = [], []
    for root in roots:
        r = load_runs(root)
        if r.empty:
            continue
        r = r[(r["profile"] == profile) & (r["dataset"] == dataset) & (r["variant"] == "full")]
        if r.empty:
            continue
        r = attach_settings(r, root, length=False)
        runs.append(r)
        hists.append(load_histories(r, root))
    if not runs:
        return pd.DataFrame(), pd.DataFrame()
    runs = pd.concat(runs, ignore_index=True).drop_duplicates("run_id")
    runs["length"] = runs["epochs_cfg"].astype(int)
    hists = pd.concat(hists, ignore_index=True).drop_duplicates(["run_id", "epoch"])
    hists = hists.merge(runs[["run_id", "length", "setting", "setting_label"]], on="run_id")
    return runs, hists


def table(runs: pd.DataFrame, hists: pd.DataFrame, tol: float = TOL) -> pd.DataFrame:
    """One row per (method, setting, length); `gain`: mean val top-1 at this length minus at
    half of it in the same setting, over the seeds both have (NaN where the half length was not
    run)."""
    rows = []
    if "val_seconds" not in hists:      # records from before history.csv timed validation
        hists = hists.assign(val_seconds=np.nan)
    per_epoch = hists.groupby("run_id").agg(train_s=("train_seconds", "mean"),
                                            val_s=("val_seconds", "mean"),
                                            final_top1=("train_top1", "last"))
    runs = runs.join(per_epoch, on="run_id")
    if "setting" not in runs:
        runs = runs.assign(setting="", setting_label="profile")
    for (method, sett, length), g in runs.groupby(["method", "setting", "length"], sort=False):
        half = runs[(runs["method"] == method) & (runs["setting"] == sett)
                    & (runs["length"] * 2 == length)]
        seeds = sorted(set(g["seed"]) & set(half["seed"]))
        gain = (g.set_index("seed").loc[seeds, "val_top1"].mean()
                - half.set_index("seed").loc[seeds, "val_top1"].mean()) if seeds else np.nan
        rows.append({"method": method, "setting": g["setting_label"].iloc[0],
                     "epochs": int(length), "seeds": len(g),
                     "val_top1": g["val_top1"].mean(), "test_top1": g["test_top1"].mean(),
                     "final_train_top1": g["final_top1"].mean(), "n_val": int(g["n_val"].iloc[0]),
                     "n_test": int(g["n_test"].iloc[0]),
                     "train_s_per_epoch": g["train_s"].mean(), "val_s_per_epoch": g["val_s"].mean(),
                     "gain_over_half": gain, "paired_seeds": len(seeds),
                     "plateau_at_half": (gain <= tol) if seeds else None})
    return (pd.DataFrame(rows).sort_values(["method", "setting", "epochs"], kind="stable")
            .reset_index(drop=True))


def markdown(df: pd.DataFrame, command: str, tol: float = TOL) -> str:
    head = [f"# Validation top-1 at two training lengths\n", f"`{command}`\n",
            "val / test: mean over seeds of the best-epoch validation top-1 and the test top-1 (%); "
            "gain: this length's mean val top-1 minus half this length's, on the seeds both have; "
            f"plateau at half: the gain is at most {tol:g} point(s). Seconds per epoch of training and of "
            "one validation pass, from history.csv (one torch thread per run, two runs at once on "
            "2 cores). setting: what of the run's SynthBirds spec and lrs differs from the "
            "profile's config today (\"profile\": nothing).\n"]
    lines = ["| method | setting | epochs | seeds | val top-1 | test top-1 | last epoch's train top-1 "
             "| gain over half | plateau at half | train s / epoch | val s / epoch (images) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in df.to_dict("records"):
        gain = "" if r["gain_over_half"] != r["gain_over_half"] else f"{r['gain_over_half']:+.1f}"
        plat = {True: "yes", False: "no"}.get(r["plateau_at_half"], "")
        lines.append(f"| {r['method']} | {r['setting']} | {r['epochs']} | {r['seeds']} | {r['val_top1']:.1f} | "
                     f"{r['test_top1']:.1f} | {r['final_train_top1']:.1f} | {gain} | {plat} | "
                     f"{r['train_s_per_epoch']:.0f} | {r['val_s_per_epoch']:.1f} ({r['n_val']}) |")
    return "\n".join(head + lines) + "\n"


def figure(hists: pd.DataFrame, title: str = ""):
    """Validation top-1 against the epoch, one line per (length, seed), a panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(hists["method"]))
    if "setting_label" not in hists:
        hists = hists.assign(setting_label="profile")
    fig, axes = plt.subplots(1, len(methods), figsize=(2.8 * len(methods), 2.8), sharey=True,
                             squeeze=False)
    lengths = sorted(hists["length"].unique())
    styles = dict(zip(lengths, ["-", "--", ":", "-."]))
    curves = sorted(set(zip(hists["setting_label"], hists["length"])))
    colours = {c: f"C{i % 10}" for i, c in enumerate(curves)}   # one colour per setting and length
    several = hists["setting_label"].nunique() > 1
    markers = dict(zip(sorted(hists["seed"].unique()), ".ox^sv"))
    for ax, m in zip(axes[0], methods):
        for (label, length, seed), h in hists[hists["method"] == m].groupby(
                ["setting_label", "length", "seed"]):
            ax.plot(h["epoch"], h["val_top1"], styles.get(length, "-"),
                    color=colours[(label, length)], marker=markers.get(seed, "."), ms=3, lw=1,
                    label=(f"{label}: " if several else "") + f"{length} epochs"
                    + (f", s{seed}" if hists["seed"].nunique() > 1 else ""))
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("val top-1 (%)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m fgvc.study.plateau", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, action="append", required=True,
                   help="a results root holding runs/ (repeatable)")
    p.add_argument("--profile", default="transfer_regime")
    p.add_argument("--dataset", default="synthbirds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    p.add_argument("--only-profile", action="store_true",
                   help="only the runs of the profile's settings today (setting \"profile\")")
    a = p.parse_args(argv)
    runs, hists = load(a.records, a.profile, a.dataset)
    if a.only_profile and not runs.empty:
        runs = runs[runs["setting_label"] == "profile"]
        hists = hists[hists["setting_label"] == "profile"]
    if runs.empty:
        print(f"plateau: no full runs of profile {a.profile} on {a.dataset}")
        return 1
    df = table(runs, hists)
    md = markdown(df, portable("python -m fgvc.study.plateau " + " ".join(argv)))
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "plateau.csv", index=False)
    (a.out / "plateau.md").write_text(md)
    from fgvc.study.figures import save

    save(figure(hists, f"{a.profile}, {a.dataset}: validation top-1 by epoch"), a.out / "plateau.png")
    print(md)
    return 0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
