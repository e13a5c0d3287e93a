"""The learning-rate sweeps that choose the default study's lrs, on validation.

    python -m fgvc.study.sweep --run [--profile transfer] [--param train.lr] [--methods baseline]
    python -m fgvc.study.sweep --run --param train.head_lr --methods ma_ea,lafe,pcanet,focus
    python -m fgvc.study.sweep [--profile transfer] [--param ...]   # table and choice from the records

One backbone recipe (the profile's train.lr x backbone_lr_mult for every method's pretrained
layers) and each method's own new modules at its train.head_lr: `make sweep` sweeps train.lr
on the baseline into results/sweep/lr/, then each method's head_lr into results/sweep/head_lr/.
Each value is one run of the method's `full` variant (seed 0, the profile's budget: same
epochs, images and input size for every method) with the grid `sweep` of the profile (its own
records, not counted in the study's time). Where a method's best value lies at the edge of what
it has tried, the sweep extends that method's range by a factor of 2 in that direction (within
the limits of `PARAMS`) and trains again, until its best has a tried neighbour on both sides or
the limit is reached: each method is tried where its optimum lies, not only where the
baseline's does. A method whose val top-1 at some value is at most twice chance (it did not
learn) is not tried above it. The choice per method is the value with the best validation top-1
(best epoch; the mean over seeds where a value was also trained on other seeds, by hand:
`python -m fgvc.study.train --seed S --set <param>=<v>` into the same folder); the test split is
never read. A tie, or a gain of no more than one validation image over the profile's value,
keeps the profile's, because one image is within the split's noise. The chosen values are
copied by hand into the profile (`train.lr`, `methods.<m>.train.head_lr`), which
tests/test_sweep.py checks against the committed chosen.csv files (the choices are applied
together: tuning some methods and not others would bias the comparison).

The folder is --out, else <results root>/sweep/lr or <results root>/sweep/head_lr (the results
root is the git-ignored scratch/results unless FGVC_RESULTS says otherwise, as `make sweep`
does). In its tables and files the column `lr` holds the swept parameter's value.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fgvc import io
from fgvc.study.config import load_profile
from fgvc.methods import list_methods
from fgvc.paths import ROOT, checkpoints_dir, results_dir
from fgvc.study.results import did_not_learn

LRS = (0.04, 0.08, 0.16)        # train.lr: around the baseline's 0.08 (x 0.1 for the backbone)
LR_LIMITS = (0.00125, 0.32)     # the extension never leaves this range (factors of 2 from 0.01)
# Swept parameter -> (values tried first, limits of the extension). head_lr: the new modules
# around the baseline's 0.08, down to 2^-9 x 0.08 (pcanet's BAP head, x100 into its FC, was
# best at 0.000625 on transfer_next; factors of 2).
PARAMS: dict[str, tuple[tuple[float, ...], tuple[float, float]]] = {
    "train.lr": (LRS, LR_LIMITS),
    "train.head_lr": ((0.02, 0.04, 0.08, 0.16), (0.08 / 2 ** 9, 0.64)),
}


def sweep_root(param: str = "train.lr", out: str | Path | None = None) -> Path:
    """The folder of a sweep's records: --out, else <results root>/sweep/<lr | head_lr>."""
    if param not in PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}; valid: {list(PARAMS)}")
    if out is None:
        return results_dir() / "sweep" / param.split(".")[-1]
    root = Path(out).expanduser()
    return root if root.is_absolute() else ROOT / root


def _value(train: dict, param: str) -> float:
    """The swept parameter's value in a record's train settings (head_lr null: train.lr)."""
    value = train.get(param.split(".")[-1])
    return train["lr"] if value is None else value


def load_sweep(root: Path | None = None, profile: str = "transfer",
               param: str = "train.lr") -> pd.DataFrame:
    """One row per finished sweep run: method, lr (the value of `param`), val top-1 (best
    epoch), epochs, seconds."""
    root = root or sweep_root()
    rows = []
    for mpath in sorted((root / "runs").glob("*/metrics.json")):
        m, cfg = io.read_json(mpath), io.read_json(mpath.parent / "config.json")
        if cfg["profile"] != profile:
            continue
        rows.append({"method": m["method"], "variant": m["variant"], "seed": m["seed"],
                     "lr": _value(cfg["train"], param), "val_top1": m["val_top1"],
                     "best_epoch": m["best_epoch"], "n_val": m["n_val"],
                     "wall_time_s": m["wall_time_s"], "run_id": m["run_id"],
                     "num_classes": m.get("num_classes"),
                     "finished_at": m.get("finished_at", "")})
    table = pd.DataFrame(rows, columns=["method", "variant", "seed", "lr", "val_top1",
                                        "best_epoch", "n_val", "wall_time_s", "run_id",
                                        "num_classes", "finished_at"])
    # a record of older code (another config hash) for the same point is superseded by the newer
    table = table.sort_values("finished_at", kind="stable")
    return table.drop_duplicates(["method", "variant", "seed", "lr"], keep="last").reset_index(drop=True)


def diverged(table: pd.DataFrame) -> dict[str, float]:
    """Per method: the lowest lr at which its val top-1 is at most twice chance (did not learn)."""
    bad = table[did_not_learn(table["val_top1"], table["num_classes"])]
    return bad.groupby("method")["lr"].min().to_dict()


def below_divergence(table: pd.DataFrame, wanted: dict[str, float]) -> dict[str, float]:
    """The (method -> lr) pairs of `wanted` not above the lr where that method did not learn."""
    stop = diverged(table)
    return {m: lr for m, lr in wanted.items() if not lr > stop.get(m, float("inf"))}


def choose(table: pd.DataFrame, default_lr: float | dict[str, float]) -> pd.DataFrame:
    """Per method: the lr chosen by the rule of the module docstring, with the margin, on the
    mean val top-1 over the seeds each lr was trained with. `default_lr`: the profile's value,
    one for every method or per method (head_lr: each method's own section sets its own)."""
    out = []
    for method, runs in table.groupby("method", sort=False):
        g = runs.groupby("lr", as_index=False).agg(val_top1=("val_top1", "mean"),
                                                    n_val=("n_val", "max"), seeds=("val_top1", "size"))
        best = g.loc[g["val_top1"].idxmax()]                   # a tie goes to the lower lr
        own = default_lr.get(method) if isinstance(default_lr, dict) else default_lr
        base = g[np.isclose(g["lr"], own)] if own is not None else g.iloc[:0]
        one_image = 100.0 / max(int(g["n_val"].max()), 1)
        keep = not base.empty and best["val_top1"] - base["val_top1"].iloc[0] <= one_image + 1e-9
        chosen = own if keep else float(best["lr"])
        out.append({"method": method, "profile_lr": own, "chosen_lr": chosen,
                    "best_val_top1": float(best["val_top1"]),
                    "val_top1_at_default": float(base["val_top1"].iloc[0]) if not base.empty else None,
                    "lrs_tried": len(g),
                    "seeds_at_chosen": int(g.loc[np.isclose(g["lr"], chosen), "seeds"].sum())})
    return pd.DataFrame(out)


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """Methods x lr of val top-1 (the README's sweep table)."""
    w = table.pivot_table(index="method", columns="lr", values="val_top1", aggfunc="mean")
    w.columns = [f"lr {c:g}" for c in w.columns]
    return w.round(1)


def _blank(w: pd.DataFrame) -> pd.DataFrame:
    """Untried cells blank rather than nan, for the markdown table."""
    return w.astype(object).where(w.notna(), "")


def report(profile: str = "transfer", root: Path | None = None,
           param: str = "train.lr") -> pd.DataFrame:
    root = root or sweep_root(param)
    table = load_sweep(root, profile, param)
    if table.empty:
        print(f"sweep: no finished runs under {root}/runs")
        return table
    from fgvc.study.config import resolve

    # train.lr: the profile's one lr, the value the sweep started from; head_lr: each method's
    # own, which its section of the profile sets apart (the baseline's backbone recipe is shared)
    default_lr = (_value(load_profile(profile)["train"], param) if param == "train.lr" else
                  {m: _value(resolve(m, profile=profile)["train"], param)
                   for m in table["method"].unique()})
    chosen = choose(table, default_lr)
    io.write_text(root / "sweep.csv", table.to_csv(index=False))
    io.write_text(root / "chosen.csv", chosen.to_csv(index=False))
    what = "learning rate" if param == "train.lr" else f"{param} (column lr)"
    seeds = ", ".join(str(x) for x in sorted(table["seed"].unique()))
    md = (f"Validation top-1 (%) of each method's full model by {what}, profile "
          f"{profile}, seeds {seeds} (the mean where a value has more than one), protocol val (best epoch; {int(table['n_val'].max())} val images, "
          f"one image = {100 / table['n_val'].max():.2f} points). Test is not read.\n\n"
          + _blank(wide(table)).to_markdown() + "\n\nChosen by the rule (a gain of one val image or less keeps "
          "profile_lr, the profile's value when the table was written); the profile takes "
          "each choice but those tests/test_sweep.py lists in NOT_TAKEN, with the reason:\n\n" + chosen.to_markdown(index=False) + "\n")
    io.write_text(root / "sweep.md", md)
    print(md)
    return chosen


def extensions(table: pd.DataFrame, limits: tuple[float, float] = LR_LIMITS) -> dict[str, float]:
    """Per method whose best (mean) val top-1 lies at an edge of its tried lrs: the next lr (x2 or /2)."""
    out = {}
    for method, runs in table.groupby("method", sort=False):
        g = runs.groupby("lr", as_index=False)["val_top1"].mean()  # by lr, as choose(); a tie: the lower
        lrs = list(g["lr"])
        best = float(g.loc[g["val_top1"].idxmax(), "lr"])
        if best == lrs[-1] and best * 2 <= limits[1] * (1 + 1e-9):
            out[method] = best * 2
        elif best == lrs[0] and best / 2 >= limits[0] * (1 - 1e-9):
            out[method] = best / 2
    return out


def _train(profile: str, lr: float, methods: list[str] | None, param: str = "train.lr",
           root: Path | None = None) -> int:
    root = root or sweep_root(param)
    env = {**os.environ, "FGVC_RESULTS": str(root),
           "FGVC_CHECKPOINTS": str(checkpoints_dir() / root.name)}
    cmd = [sys.executable, "-m", "fgvc.study.grid", "--profile", profile, "--grid", "sweep",
           "--set", f"{param}={lr:g}"] + (["--methods", ",".join(methods)] if methods else [])
    return subprocess.call(cmd, env=env, cwd=ROOT)


def run_sweep(profile: str = "transfer", methods: str | None = None,
              lrs: tuple[float, ...] | None = None, extend: bool = True,
              param: str = "train.lr", root: Path | None = None) -> int:
    """Train every sweep run, then extend at the edges (resumable: the grid skips finished runs)."""
    root = root or sweep_root(param)
    values, limits = PARAMS[param]
    only = methods.split(",") if methods else None
    rc = 0
    for lr in sorted(lrs or values):  # ascending: a method that did not learn at an lr skips higher ones
        wanted = {m: lr for m in only or list_methods()}
        names = list(below_divergence(load_sweep(root, profile, param), wanted))
        if names:
            rc |= _train(profile, lr, names, param, root)
    while extend and rc == 0:
        table = load_sweep(root, profile, param)
        if only:
            table = table[table["method"].isin(only)]
        todo = below_divergence(table, extensions(table, limits))
        if not todo:
            break
        for lr in sorted(set(todo.values())):
            rc |= _train(profile, lr, [m for m, x in todo.items() if x == lr], param, root)
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="transfer")
    p.add_argument("--run", action="store_true", help="train the sweep's runs first")
    p.add_argument("--methods", help="comma-separated methods (with --run)")
    p.add_argument("--param", default="train.lr", choices=list(PARAMS),
                   help="the swept setting: train.lr (the backbone recipe and the baseline's head) "
                        "or train.head_lr (a method's new modules, its backbone at the profile's)")
    p.add_argument("--out", help="folder of the sweep's records (default: <results root>/sweep/lr "
                                 "or <results root>/sweep/head_lr; the results root is "
                                 "scratch/results unless $FGVC_RESULTS)")
    p.add_argument("--lrs", help="comma-separated values of --param (with --run; default: "
                                 + "; ".join(f"{k}: {','.join(f'{x:g}' for x in v[0])}"
                                             for k, v in PARAMS.items()) + ")")
    p.add_argument("--no-extend", action="store_true",
                   help="train only --lrs, do not extend a range whose best lies at its edge")
    a = p.parse_args(argv)
    lrs = tuple(float(x) for x in a.lrs.split(",")) if a.lrs else None
    root = sweep_root(a.param, a.out)
    rc = run_sweep(a.profile, a.methods, lrs, not a.no_extend, a.param, root) if a.run else 0
    report(a.profile, root, a.param)
    return rc


if __name__ == "__main__":
    sys.exit(main())
