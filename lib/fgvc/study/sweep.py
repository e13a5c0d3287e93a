"""The learning-rate sweep that chooses each method's lr for the default study, on validation.

    python -m fgvc.study.sweep --run [--profile transfer]     # train the sweep's runs (make sweep)
    python -m fgvc.study.sweep [--profile transfer]           # table and choice from the records

Every method's `full` variant is trained once per value of `LRS` (seed 0, the profile's
budget: same epochs, images and input size for every method) with the grid `sweep` of the
profile, into results/sweep/ (its own records, not counted in the study's time). Where a
method's best lr lies at the edge of what it has tried, the sweep extends that method's range
by a factor of 2 in that direction (within `LR_LIMITS`) and trains again, until its best lr has
a tried neighbour on both sides or the limit is reached: the grid is the same for every method
and each method is tried where its optimum lies, not only where the baseline's does. A method
whose val top-1 at some lr is at most twice chance (it did not learn) is not tried above that
lr. The choice
per method is the lr with the best validation top-1 (best epoch); the test split is never
read. A tie, or a gain of no more than one validation image over the profile's lr, keeps the
profile's lr, because one image of 120 is within the split's noise. The chosen values are
copied by hand into the profile's per-method overrides (`methods.<m>.train.lr`), which
tests/test_sweep.py checks against the committed records once every method is swept (the
choices are applied together: tuning some methods and not others would bias the comparison).

`--param train.head_lr` sweeps the lr of the methods' new modules instead, each method's
backbone fixed at its profile's train.lr x backbone_lr_mult (the values and limits of
`PARAMS`), into the folder given by --out, else <results root>/sweep_head_lr (the git-ignored
scratch folder by default); never into results/sweep/, the records of the study's lrs.
In its tables and files the column `lr` holds the swept parameter's value.
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

LRS = (0.01, 0.02, 0.04)
LR_LIMITS = (0.00125, 0.16)     # the extension never leaves this range (factors of 2 from 0.01)
# Swept parameter -> (values tried first, limits of the extension). head_lr: the new modules
# around the baseline's 0.08, down to 2^-9 x 0.08 (pcanet's BAP head, x100 into its FC, was
# best at 0.000625 on transfer_next; factors of 2).
PARAMS: dict[str, tuple[tuple[float, ...], tuple[float, float]]] = {
    "train.lr": (LRS, LR_LIMITS),
    "train.head_lr": ((0.02, 0.04, 0.08, 0.16), (0.08 / 2 ** 9, 0.64)),
}


def sweep_root(param: str = "train.lr", out: str | Path | None = None) -> Path:
    """The folder of a sweep's records: --out, else results/sweep/ for train.lr (the study's
    lrs, under the results root: the scratch folder unless FGVC_RESULTS says otherwise, as
    `make sweep` does) and <results root>/sweep_<name> for another parameter, which never
    writes into the committed results/sweep/."""
    if param not in PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}; valid: {list(PARAMS)}")
    name = param.split(".")[-1]
    if out is not None:
        root = Path(out).expanduser()
        root = root if root.is_absolute() else ROOT / root
    elif param == "train.lr":
        return results_dir() / "sweep"
    else:
        root = results_dir() / f"sweep_{name}"
    if param != "train.lr" and root.resolve() == (ROOT / "results" / "sweep").resolve():
        raise ValueError(f"a sweep of {param} never writes into results/sweep/ (the records of "
                         "the study's lrs); give another --out")
    return root


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
    """Per method: the lr chosen by the rule of the module docstring, with the margin.
    `default_lr`: the profile's value, one for every method or per method (head_lr: each
    method's own section sets its own)."""
    out = []
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("lr")
        best = g.loc[g["val_top1"].idxmax()]
        own = default_lr.get(method) if isinstance(default_lr, dict) else default_lr
        base = g[np.isclose(g["lr"], own)] if own is not None else g.iloc[:0]
        one_image = 100.0 / max(int(g["n_val"].max()), 1)
        keep = not base.empty and best["val_top1"] - base["val_top1"].iloc[0] <= one_image + 1e-9
        chosen = own if keep else float(best["lr"])
        out.append({"method": method, "profile_lr": own, "chosen_lr": chosen,
                    "best_val_top1": float(best["val_top1"]),
                    "val_top1_at_default": float(base["val_top1"].iloc[0]) if not base.empty else None,
                    "lrs_tried": len(g)})
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
    md = (f"Validation top-1 (%) of each method's full model by {what}, profile "
          f"{profile}, seed 0, protocol val (best epoch; {int(table['n_val'].max())} val images, "
          f"one image = {100 / table['n_val'].max():.2f} points). Test is not read.\n\n"
          + _blank(wide(table)).to_markdown() + "\n\nChosen by the rule (a gain of one val image or less keeps "
          "profile_lr, the profile's value); applied to the profile once every "
          "method is swept:\n\n" + chosen.to_markdown(index=False) + "\n")
    io.write_text(root / "sweep.md", md)
    print(md)
    return chosen


def extensions(table: pd.DataFrame, limits: tuple[float, float] = LR_LIMITS) -> dict[str, float]:
    """Per method whose best val top-1 lies at an edge of its tried lrs: the next lr (x2 or /2)."""
    out = {}
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("lr")              # a tie goes to the lower lr
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
                   help="the swept setting: train.lr (the study's lrs, into results/sweep/) or "
                        "train.head_lr (the new modules' lr, each backbone at its profile's)")
    p.add_argument("--out", help="folder of the sweep's records (default: <results root>/sweep "
                                 "for train.lr, <results root>/sweep_head_lr for train.head_lr; "
                                 "the results root is scratch/results unless $FGVC_RESULTS)")
    p.add_argument("--lrs", help="comma-separated values of --param (with --run; default: "
                                 + "; ".join(f"{k}: {','.join(f'{x:g}' for x in v[0])}"
                                             for k, v in PARAMS.items()) + ")")
    p.add_argument("--no-extend", action="store_true",
                   help="train only --lrs, do not extend a range whose best lies at its edge")
    a = p.parse_args(argv)
    lrs = tuple(float(x) for x in a.lrs.split(",")) if a.lrs else None
    try:
        root = sweep_root(a.param, a.out)
    except ValueError as e:
        p.error(str(e))
    rc = run_sweep(a.profile, a.methods, lrs, not a.no_extend, a.param, root) if a.run else 0
    report(a.profile, root, a.param)
    return rc


if __name__ == "__main__":
    sys.exit(main())
