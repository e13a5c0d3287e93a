"""ma_ea's test-time reading measured on the committed study's checkpoints (issue 18).

    python -m fgvc.study.ma_ea_test_logits [--variant full] [--seeds 0 1 2]

Each finished ma_ea run's best checkpoint is evaluated twice on its validation and test
splits: stage-1 logits only (`test_logits: first`, the default) and the mean of both passes
(`mean`, the erased image's second pass). Same weights, so the pairs differ only in the
reading. Prints one row per seed and the paired mean difference with its t-interval.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from fgvc.study.cam_scores import load_run_model
from fgvc.engine import evaluate
from fgvc.paths import results_dir
from fgvc.study.stats import t_interval
from fgvc.study.run import build_data_for, make_loaders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="transfer")
    p.add_argument("--variant", default="full")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in a.seeds:
        run_dir = results_dir() / "runs" / f"{a.profile}-synthbirds-ma_ea-{a.variant}-s{seed}"
        cfg, model = load_run_model(run_dir)
        _, val, test = make_loaders(build_data_for(cfg), cfg, None)
        row = {"seed": seed}
        for reading in ("first", "mean"):
            model.cfg = dataclasses.replace(model.cfg, test_logits=reading)
            for split, loader in (("val", val), ("test", test)):
                row[f"{split}_{reading}"] = evaluate(model, loader, torch.device("cpu"))["top1"]
        rows.append(row)
        print(row, flush=True)
    for split in ("val", "test"):
        diffs = [r[f"{split}_mean"] - r[f"{split}_first"] for r in rows]
        iv = t_interval(diffs, 0.95)
        print(f"{split} mean - first: {iv.mean:+.2f} [{iv.lo:+.2f}, {iv.hi:+.2f}] (n={iv.n})")


if __name__ == "__main__":
    main()
