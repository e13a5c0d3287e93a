"""Train one run from the command line, on one process or many (DDP through torchrun).

    python -m fgvc.study.train --method baseline [--variant full] [--dataset cub] [--profile paper]
                         [--seed 0] [--data-root R] [--run-id ID] [--set train.epochs=2 ...]
    python -m fgvc.study.train --config results/runs/<run_id>/config.json   # a resolved config, as given

    # one node, 4 GPUs (one process per GPU; train.batch_size is the global batch):
    torchrun --standalone --nproc-per-node 4 -m fgvc.study.train --method lafe --profile paper ...
    # two nodes of 8 GPUs:
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
             -m fgvc.study.train --method lafe --profile paper ...

A thin CLI over :func:`fgvc.study.run.run`. Under torchrun (env WORLD_SIZE > 1) it initialises
torch.distributed from the environment (NCCL on CUDA, gloo on CPU), pins the process to the
GPU of its LOCAL_RANK, runs, and tears the process group down. The global batch
`train.batch_size` is split evenly across the processes; samplers are sharded; metrics are
summed over ranks; only rank 0 writes the run records and checkpoints. A run restarted with
the same arguments (any number of processes) resumes from its last checkpoint.
A run id already complete with these settings trains nothing (its result is shown);
one holding a finished run or checkpoint of other settings is refused before anything is
written; `--replace` archives what the run id holds and trains anew.
The last lines say what was trained, its test top-1 and where its records are (the full
numbers are in metrics.json).
Exit status: 0 when the run completes, 1 on a configuration error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def parse_overrides(items: list[str]) -> dict:
    """["train.epochs=2", "data.synth={\\"n_genera\\": 2}"] -> {"train.epochs": 2, ...}."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=JSON, got {item!r}")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val  # a bare string
    return out


def init_distributed(timeout_s: float = 1800) -> tuple[int, int, int]:
    """Initialise torch.distributed from torchrun's env when WORLD_SIZE > 1.

    Returns (rank, local rank, world size); (0, 0, 1) for a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), local_rank, dist.get_world_size()


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m fgvc.study.train` (every option with its help)."""
    from fgvc.data.registry import list_datasets
    from fgvc.methods import list_methods

    p = argparse.ArgumentParser(prog="python -m fgvc.study.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=list_methods(),
                   help="the method to train (fgvc.methods.list_methods)")
    p.add_argument("--config", default=None,
                   help="a resolved configuration (JSON text, or a file such as a run's "
                        "config.json), used as given instead of the settings below")
    p.add_argument("--variant", default="full",
                   help="the method's named variant, an ablation row of its paper "
                        "(configs/variants/; default: full)")
    p.add_argument("--dataset", default=None, choices=list_datasets(),
                   help="default: the profile's dataset")
    p.add_argument("--profile", default="transfer",
                   help="the settings profile (configs/profiles/): transfer (the CPU study on "
                        "SynthBirds, default), scratch (a fast pipeline check), paper (real "
                        "datasets, ResNet-50 at 448)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    p.add_argument("--data-root", default=None,
                   help="the dataset's folder (default: data/<dataset>, or $FGVC_DATA)")
    p.add_argument("--run-id", default=None,
                   help="the run's name, its folder under results/runs/ (default: "
                        "<profile>-<dataset>-<method>-<variant>-s<seed>[-<hash of overrides>])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override, e.g. --set train.epochs=2 (value parsed as JSON)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--replace", action="store_true",
                   help="train anew even if the run id holds a finished run or a checkpoint "
                        "(of these or other settings): its record is moved to "
                        "results/runs/.replaced/ and its checkpoints deleted")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars and no per-epoch lines (TQDM_DISABLE=1 turns off "
                        "the bars alone)")
    return p


def pct(value: float | None) -> str:
    """An accuracy for reading: 74.25 %, or "n/a"."""
    return "n/a" if value is None else f"{value:.2f} %"


def shown(path: Path) -> str:
    """A path for the terminal: relative to the repository when inside it, else absolute."""
    from fgvc.paths import ROOT

    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def summary(metrics: dict, already: bool = False) -> list[str]:
    """The final lines of a run, in words: what was trained, its test top-1 and where its
    records are (or that it was complete already, and how to replace it)."""
    from fgvc.paths import checkpoints_dir, results_dir

    rid = metrics["run_id"]
    where = shown(results_dir() / "runs" / rid) + "/"
    what = (f"{metrics['method']} ({metrics['variant']}) on {metrics['dataset']}, profile "
            f"{metrics['profile']}, seed {metrics['seed']}")
    val = ("" if metrics.get("val_top1") is None else
           f" (val {pct(metrics['val_top1'])}, epoch {metrics['best_epoch']} selected on it)")
    result = f"test top-1 {pct(metrics['test_top1'])}{val}"
    if already:
        return [f"already complete: {what}, run {rid}, nothing trained.",
                f"{result}; records in {where}",
                "to train it anew, add --replace (the old record is archived in "
                f"{shown(results_dir() / 'runs' / '.replaced')}/)."]
    secs = metrics["wall_time_s"]
    took = f"{secs / 60:.1f} min" if secs >= 90 else f"{secs:.0f} s"
    return [f"trained {what}: {metrics['epochs']} epochs in {took} "
            f"({metrics['train_images_per_s']:.0f} images/s, {metrics['world_size']} process(es)).",
            result,
            f"records: {where} (config.json, metrics.json, history.csv, predictions.json); "
            f"checkpoints: {shown(checkpoints_dir() / rid)}/"]


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    from fgvc.study.config import from_json, resolve
    from fgvc.study.run import is_complete, run

    try:
        if a.config:
            text = a.config if a.config.lstrip().startswith("{") else Path(a.config).read_text()
            cfg = from_json(text)
            cfg.pop("machine", None)  # a run's config.json: its machine section is made anew
        elif a.method:
            cfg = resolve(a.method, a.variant, a.dataset, a.profile, a.seed,
                          data_root=a.data_root, overrides=parse_overrides(a.set),
                          run_id=a.run_id)
        else:
            raise ValueError("give --method (and its settings) or --config")
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.threads:
        torch.set_num_threads(a.threads)
    already = not a.replace and is_complete(cfg)
    rank, _, world = init_distributed()
    quiet = a.no_progress and "TQDM_DISABLE" not in os.environ
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # also the bar of a SynthBirds set generated first
    try:
        metrics = run(cfg, progress=not a.no_progress, replace=a.replace)
    finally:
        if quiet:
            os.environ.pop("TQDM_DISABLE", None)
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print("\n".join(summary(metrics, already)), flush=True)
    return 0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
