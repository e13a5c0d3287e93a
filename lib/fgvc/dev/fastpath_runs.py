"""The CPU fast path in the transfer study, measured with real training runs (issue 17).

    python -m fgvc.dev.fastpath_runs parity    # bf16 vs fp32: baseline + lafe full, seeds 0-2
    python -m fgvc.dev.fastpath_runs speed     # each method's full model: fast path vs fp32 contiguous
    python -m fgvc.dev.fastpath_runs threads   # 2 runs x 1 thread vs 1 run x 2 threads
    python -m fgvc.dev.fastpath_runs report    # -> results/fastpath/fastpath.md (+ .csv)

Every run goes through fgvc.study.grid (papermill, the study's own path) into its own results root
under results/fastpath/ (records only; checkpoints stay in the git-ignored .checkpoints/):

- parity: the transfer profile's baseline and lafe `full`, seeds 0-2, with train.amp=bf16 and
  channels_last (the committed study's layout), paired by seed with the committed fp32 runs
  of results/runs/. Only where the CPU has native bf16.
- speed: each method's `full` variant, one epoch, fp32 channels_last and fp32 contiguous, run
  two at a time (the study's load) with each method's two layouts side by side, so both meet
  the same machine. The speed-up is the ratio of training images/s; the projected study time
  scales each committed run's wall time by its method's ratio.
- threads: baseline and focus `full`, seeds 0 and 1, one epoch, fp32 channels_last, once as 2
  runs at a time with 1 thread each and once one at a time with 2 threads (runs of equal
  length side by side, so neither core idles); the grid's wall time decides.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from fgvc.paths import STUDY
from fgvc.study.grid import run_into  # runs a grid into a root of its own

# A maintainers' command: its runs and report are part of the committed study.
OUT = STUDY / "fastpath"

ONE_EPOCH = {"train.epochs": 1, "train.warmup_epochs": 0}


def _plan(methods, seeds, overrides: dict) -> list:
    from fgvc.study.grid import plan

    return plan("transfer", methods=methods, variants=["full"], seeds=seeds, overrides=overrides)


def _runs(root: Path) -> pd.DataFrame:
    from fgvc.study.results import load_runs

    return load_runs(root)


def parity() -> None:
    from fgvc.study import fastpath

    if not fastpath.native_bf16():
        sys.exit("this CPU has no native bf16: the fast path stays fp32 here (see README)")
    run_into(OUT / "parity", _plan(["baseline", "lafe"], [0, 1, 2],
                                {"train.amp": "bf16", "train.channels_last": True}), 2, 1)


def speed() -> None:
    from fgvc.methods import list_methods

    specs = []
    for m in list_methods():  # each method's two layouts next to each other: they run side by side
        for layout in (True, False):
            specs += _plan([m], [0], {**ONE_EPOCH, "train.amp": "off", "train.channels_last": layout})
    run_into(OUT / "speed", specs, 2, 1)


def threads() -> None:
    specs = _plan(["baseline", "focus"], [0, 1], {**ONE_EPOCH, "train.amp": "off",
                                                   "train.channels_last": True})
    walls = {"2 runs x 1 thread": run_into(OUT / "threads_2x1", specs, 2, 1),
             "1 run x 2 threads": run_into(OUT / "threads_1x2", specs, 1, 2)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "threads.json").write_text(json.dumps(walls, indent=1) + "\n")


def _machine(root: Path, runs: pd.DataFrame) -> str:
    cfg = json.loads((root / runs["run_dir"].iloc[0] / "config.json").read_text())["machine"]
    return f"{cfg['cpu_model']} ({cfg['cpu_kind']}), torch {cfg['torch']}"


def report() -> None:
    from fgvc.study.stats import paired_difference

    lines = ["# The CPU fast path in the transfer study", "",
             "Made by `python -m fgvc.dev.fastpath_runs parity|speed|threads|report` "
             "(runs under `results/fastpath/*/runs/`).", ""]
    rows = []
    if (OUT / "parity").exists():
        bf16, fp32 = _runs(OUT / "parity"), _runs(STUDY)
        fp32 = fp32[(fp32.profile == "transfer") & (fp32.variant == "full") & (fp32.overrides == "none")]
        lines += ["## Accuracy: bf16 autocast vs fp32 (both channels_last), paired by seed", "",
                  f"bf16 runs on {_machine(OUT / 'parity', bf16)}; fp32 runs: the committed study "
                  f"(`results/runs/`, {_machine(STUDY, fp32)}).", "",
                  "| method | metric | fp32 by seed | bf16 by seed | mean bf16 - fp32 | 95 % CI |",
                  "|---|---|---|---|---|---|"]
        for m in ("baseline", "lafe"):
            for metric in ("test_top1", "val_top1"):
                a = dict(zip(bf16[bf16.method == m].seed, bf16[bf16.method == m][metric]))
                b = dict(zip(fp32[fp32.method == m].seed, fp32[fp32.method == m][metric]))
                iv = paired_difference(a, b)
                seeds = sorted(set(a) & set(b))
                lines.append(f"| {m} | {metric} | {', '.join(f'{b[s]:.2f}' for s in seeds)} | "
                             f"{', '.join(f'{a[s]:.2f}' for s in seeds)} | {iv.mean:+.2f} | "
                             f"[{iv.lo:+.2f}, {iv.hi:+.2f}] |")
                rows.append({"part": "parity", "method": m, "metric": metric, "mean": iv.mean,
                             "lo": iv.lo, "hi": iv.hi, "n": iv.n})
        secs = {arm: df[df.method.isin(["baseline", "lafe"])].groupby("method").train_time_s.mean()
                for arm, df in (("bf16", bf16), ("fp32", fp32))}
        lines += ["", "Training seconds per run, mean of seeds, two runs at a time (the arms ran "
                  "on different days, so this is indicative; `results/bench.md` times them side "
                  "by side): " + "; ".join(f"{m} bf16 {secs['bf16'][m]:.0f} s, fp32 "
                                          f"{secs['fp32'][m]:.0f} s" for m in secs["bf16"].index), ""]
    if (OUT / "speed").exists():
        sp = _runs(OUT / "speed")
        sp["layout"] = sp.overrides.str.contains("channels_last=true").map(
            {True: "channels_last", False: "contiguous"})
        tab = sp.pivot_table(index="method", columns="layout", values="train_images_per_s")
        tab["speed-up"] = tab["channels_last"] / tab["contiguous"]
        study = _runs(STUDY)
        study = study[study.profile == "transfer"]
        walls = study.wall_time_s
        projected = (walls * study.method.map(tab["speed-up"])).sum(skipna=False)  # NaN if one is missing
        lines += ["## Speed: the fast path vs fp32 contiguous, per method", "",
                  f"One epoch of each method's `full` model (fp32), two runs at a time, each "
                  f"method's two layouts side by side, on {_machine(OUT / 'speed', sp)}. Training images/s:", "",
                  tab.reset_index().to_markdown(index=False, floatfmt=".2f"), "",
                  f"The committed study's {len(study)} runs took {walls.sum() / 60:.1f} run-minutes "
                  f"on the fast path (wall time per run, summed); scaled by each method's ratio, "
                  f"fp32 contiguous would take {projected / 60:.1f} run-minutes (the whole run's time "
                  f"scaled by the training speed-up, so eval and start-up are assumed to scale alike): "
                  f"{walls.sum() / 2 / 60:.1f} against {projected / 2 / 60:.1f} minutes of grid "
                  f"time with two runs at a time.", ""]
        rows += [{"part": "speed", "method": m, "metric": "speed-up", "mean": r["speed-up"]}
                 for m, r in tab.iterrows()]
    if (OUT / "threads.json").exists():
        walls = json.loads((OUT / "threads.json").read_text())
        lines += ["## Threads: 2 runs x 1 thread or 1 run x 2 threads", "",
                  "baseline and focus `full`, seeds 0 and 1, one epoch each, fp32 channels_last; the grid's wall "
                  f"time ({_machine(OUT / 'threads_2x1', _runs(OUT / 'threads_2x1'))}):", "",
                  "| how | grid wall time (s) |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in walls.items()]
        rows += [{"part": "threads", "method": k, "metric": "wall_s", "mean": v} for k, v in walls.items()]
        lines.append("")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fastpath.md").write_text("\n".join(lines))
    pd.DataFrame(rows).to_csv(OUT / "fastpath.csv", index=False)
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["parity", "speed", "threads", "report"])
    {"parity": parity, "speed": speed, "threads": threads, "report": report}[p.parse_args().what]()


if __name__ == "__main__":
    main()
