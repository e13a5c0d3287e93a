"""Evaluation noise against training noise, from the runs' per-image predictions.

    python -m fgvc.study.noise --records DIR [--records DIR ...] [--split test] [--out DIR]
    python -m fgvc.study.noise backfill --runs DIR [--checkpoints DIR]

A run's top-1 on a split of n images moves for two reasons: which images the split holds
(evaluation noise: another draw of n images from the same distribution would score the same
model differently) and what the run learned (training noise: another seed trains another
model). The seeds' spread holds both; a bootstrap over the images of one run holds only the
first. For every arm (dataset, profile, method, variant, overrides) with predictions for at
least two seeds, and for its paired difference with the baseline's arm on the same dataset
(the `baseline` `full` arm with the most seeds), the table gives:

- sd_seeds: the standard deviation across seeds (of top-1, or of the per-seed difference);
- sd_eval: the evaluation part, sqrt of the mean over seeds of the bootstrap variance over
  images (for a difference, both runs of a seed resampled with the same images, so what the
  two arms share cancels as it does in the paired comparison);
- sd_train: sqrt(max(sd_seeds^2 - sd_eval^2, 0)), the part a larger split would not remove;
- for differences: the minimum detectable difference at the arm's seeds and the seeds that
  would detect 2 and 3 points (fgvc.study.stats.mdd, two-sided paired t-test, alpha 0.05,
  power 0.8, from sd_seeds), and a paired bootstrap interval over seeds and images
  (seeds resampled with replacement, then each drawn seed's images).

`backfill` writes predictions.json for finished runs recorded before predictions were kept,
by evaluating their best.pt (found beside the record or under the checkpoint root) exactly as
the run tested it; it refuses to write when the recomputed test top-1 differs from
metrics.json's.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fgvc.paths import SCRATCH, portable
from fgvc.study import predictions, stats
from fgvc.study.results import attach_correct, attach_settings, load_runs
from fgvc.study.stats import paired_bootstrap

BOOT = stats.BOOT                   # bootstrap draws
# An arm: one configuration up to the seed (fgvc.study.results.setting_key), named by what of
# its SynthBirds spec and lrs differs from its profile today (setting_label); a difference pairs
# it with the baseline arm of the same data and length (data_key).
ARM = ["dataset", "profile", "method", "variant", "setting", "setting_label", "data_key"]
DEFAULT_OUT = SCRATCH / "noise"


def bootstrap_var(correct: np.ndarray, draws: int = BOOT, seed: int = 0) -> float:
    """Variance (points^2) of the mean of `correct` x 100 over `draws` resamples of its rows
    (images, with replacement); `correct` (n,) or (n, k): a (n, k) array gives the variance of
    the mean of column 0 minus column 1 with shared rows when k = 2."""
    rng = np.random.default_rng(seed)
    c = np.asarray(correct, dtype=float)
    v = c if c.ndim == 1 else c[:, 0] - c[:, 1]
    idx = rng.integers(0, len(v), size=(draws, len(v)))
    return float((100.0 * v[idx].mean(1)).var(ddof=1))


def _parts(values: list[float], eval_vars: list[float]) -> dict:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    sd_eval = math.sqrt(float(np.mean(eval_vars)))
    return {"mean": float(np.mean(values)), "sd_seeds": sd, "sd_eval": sd_eval,
            "sd_train": math.sqrt(max(sd * sd - sd_eval * sd_eval, 0.0)) if sd == sd else math.nan}


def _load(roots: list[Path], split: str) -> pd.DataFrame:
    frames = [attach_settings(attach_correct(runs, root, split), root) for root in roots
              if not (runs := load_runs(root)).empty]
    if not frames:
        return pd.DataFrame()
    runs = pd.concat(frames, ignore_index=True)
    return runs[runs["correct"].notna()].reset_index(drop=True)


def decompose(roots: list[Path], split: str = "test", draws: int = BOOT) -> pd.DataFrame:
    """One row per arm (kind "arm") and per arm's paired difference with its dataset's
    baseline (kind "difference"); see the module's docstring."""
    runs = _load(roots, split)
    if runs.empty:
        return pd.DataFrame()
    rows = []
    arms = {k: g.drop_duplicates("seed").set_index("seed")
            for k, g in runs.groupby(ARM, dropna=False, sort=False)}
    for key, g in arms.items():
        if len(g) < 2:
            continue
        arm = dict(zip(ARM, key))
        n_img = len(g["correct"].iloc[0])
        rows.append({"kind": "arm", **arm, "seeds": len(g), "images": n_img,
                     **_parts([100.0 * c.mean() for c in g["correct"]],
                              [bootstrap_var(c, draws) for c in g["correct"]])})
        if arm["method"] == "baseline":
            continue
        bases = [b for k, b in arms.items() if k[2] == "baseline" and k[6] == arm["data_key"]
                 and len(set(b.index) & set(g.index)) >= 2]
        if not bases:
            continue
        base = max(bases, key=lambda b: len(set(b.index) & set(g.index)))
        seeds = sorted(set(base.index) & set(g.index))
        pairs = [np.stack([g.loc[s, "correct"], base.loc[s, "correct"]], 1) for s in seeds]
        parts = _parts([100.0 * (p[:, 0] - p[:, 1]).mean() for p in pairs],
                       [bootstrap_var(p, draws) for p in pairs])
        lo, hi = paired_bootstrap(pairs, draws)
        rows.append({"kind": "difference", **arm, "against": base["run_id"].iloc[0].rsplit("-s", 1)[0],
                     "seeds": len(seeds), "images": n_img, **parts,
                     "mdd": stats.mdd(parts["sd_seeds"], len(seeds)),
                     "seeds_for_2": stats.seeds_to_detect(parts["sd_seeds"], 2.0),
                     "seeds_for_3": stats.seeds_to_detect(parts["sd_seeds"], 3.0),
                     "boot_lo": lo, "boot_hi": hi})
    return pd.DataFrame(rows)


def _seeds(n) -> str:
    return ">100" if n is None or n != n else str(int(n))


def markdown(df: pd.DataFrame, command: str, split: str) -> str:
    head = [f"# Evaluation noise against training noise ({split} split)\n", f"`{command}`\n",
            "sd_seeds: standard deviation across seeds (points); sd_eval: from a bootstrap over "
            f"the split's images within each run ({BOOT} draws; for a difference, both arms' "
            "runs of a seed resampled with the same images); sd_train = sqrt(sd_seeds^2 - "
            "sd_eval^2). mdd: minimum detectable difference of a paired t-test over the seeds "
            "(alpha 0.05, power 0.8); seeds for 2 / 3: seeds whose mdd reaches 2 / 3 points at "
            "this sd_seeds; bootstrap: paired, over seeds then images, 95 %. setting: what of the "
            "arm's SynthBirds spec and lrs differs from its profile today (\"profile\": "
            "nothing); a difference pairs an arm with the baseline trained on the same data "
            "for as long.\n"]
    if df.empty:
        return "\n".join(head) + "\nNo arm has predictions for two seeds.\n"
    lines = ["| dataset | profile | setting | method | variant | seeds | images | mean | sd_seeds "
             "| sd_eval | sd_train | mdd | seeds for 2 / 3 | bootstrap 95 % |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in df.to_dict("records"):
        diff = r["kind"] == "difference"
        name = f"{r['variant']}" + (" - baseline" if diff else "")
        extra = (f"{r['mdd']:.1f} | {_seeds(r['seeds_for_2'])} / {_seeds(r['seeds_for_3'])} | "
                 f"[{r['boot_lo']:+.1f}, {r['boot_hi']:+.1f}]" if diff else " | | ")
        mean = f"{r['mean']:+.1f}" if diff else f"{r['mean']:.1f}"
        lines.append(f"| {r['dataset']} | {r['profile']} | {r['setting_label']} | {r['method']} | "
                     f"{name} | {r['seeds']} | "
                     f"{r['images']} | {mean} | {r['sd_seeds']:.2f} | {r['sd_eval']:.2f} | "
                     f"{r['sd_train']:.2f} | {extra} |")
    return "\n".join(head + lines) + "\n"


# ----------------------------------------------------------------------------- backfill
def backfill(runs_root: Path, checkpoints: Path | None = None, log=None) -> list[str]:
    """Write predictions.json for finished runs under runs_root/runs lacking one (see the
    module's docstring); returns the run ids written."""
    import torch

    from fgvc.methods import method_class
    from fgvc.study.run import evaluate_best, load_trained, make_loaders

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    done = []
    for _, r in load_runs(runs_root).iterrows():
        run_dir = Path(runs_root) / r["run_dir"]
        if predictions.read(run_dir) is not None:
            continue
        trained = load_trained(run_dir, checkpoints)
        if trained is None:
            log(f"{r['run_id']}: no best.pt, left without predictions")
            continue
        cfg, bundle, model = trained
        machine = cfg.get("machine", {})
        amp, cl = machine.get("amp", "fp32"), machine.get("channels_last", False)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        _, val_loader, test_loader = make_loaders(bundle, cfg, method_class(cfg["method"]).pair_mode)
        val, test = evaluate_best(model, val_loader, test_loader, torch.device("cpu"), cfg, amp, cl)
        if not math.isclose(test["top1"], r["test_top1"], abs_tol=1e-9):
            log(f"{cfg['run_id']}: recomputed test top-1 {test['top1']:.2f} != recorded "
                f"{r['test_top1']:.2f}; not written")
            continue
        predictions.write(run_dir, cfg["config_hash"], {"test": test, "val": val})
        done.append(cfg["run_id"])
        log(f"{cfg['run_id']}: predictions written (test top-1 {test['top1']:.2f} as recorded)")
    return done


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m fgvc.study.noise " + " ".join(argv)
    if argv[:1] == ["backfill"]:
        p = argparse.ArgumentParser(prog="python -m fgvc.study.noise backfill")
        p.add_argument("--runs", type=Path, required=True, help="a results root (holding runs/)")
        p.add_argument("--checkpoints", type=Path, default=None)
        p.add_argument("--threads", type=int, default=1)
        a = p.parse_args(argv[1:])
        import torch
        torch.set_num_threads(a.threads)
        done = backfill(a.runs, a.checkpoints)
        print(f"backfill: predictions written for {len(done)} run(s)")
        return 0
    p = argparse.ArgumentParser(prog="python -m fgvc.study.noise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, action="append", required=True,
                   help="a results root holding runs/ (repeatable)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    a = p.parse_args(argv)
    df = decompose(a.records, a.split)
    md = markdown(df, portable(command), a.split)
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / f"noise_{a.split}.csv", index=False)
    (a.out / f"noise_{a.split}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
