"""One run of the study: config -> data -> method -> fit -> test once -> run records.

Writes `results/runs/<run_id>/config.json`, `history.csv` (after every epoch) and, when the
run is complete, `predictions.json` (each test and validation image's top-1, fgvc.study.predictions)
then `metrics.json`; checkpoints go to `checkpoints_dir()/<run_id>/`. A run restarted
with the same run id and settings resumes from its last checkpoint.

A record never lies: config.json and metrics.json carry the config hash, and a run is complete
only when both hold this run's (:func:`is_complete`); config.json is written only when a run
starts with settings it does not already hold, and metrics.json last. A run id whose finished
run (metrics.json) or checkpoint (last.pt) has other settings is refused, in one line and before
anything is written (:class:`RunIdTaken`), unless `replace=True`, which moves the old record to
`results/runs/.replaced/<run_id>-<UTC time>/` (git-ignored) and deletes its checkpoints first
(:func:`archive_run`). `wall_time_s` adds up every process that worked on the run.

The configuration comes resolved (fgvc.study.config.resolve) and is used as given; only the choices
that depend on the machine the run executes on are made here, by :func:`resolve_machine`, and
recorded under their own key, `machine`, in config.json and metrics.json (outside the config
hash): the device, the amp dtype and memory layout (fgvc.study.fastpath: train.amp and
train.channels_last "auto" become what this device and CPU run fastest, from a measured
table), and the torch thread count. The engine trains and evaluates with exactly these, and
refuses to resume a checkpoint made under another dtype or layout.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from fgvc import io
from fgvc.cli import UserError
from fgvc.study import fastpath, predictions
from fgvc.study.config import resolve
from fgvc.engine import (FitState, dist_info, epoch_seed, evaluate, fit, load_model_state,
                     peak_memory_mb, seed_everything)
from fgvc.methods import create_method, method_class
from fgvc.paths import checkpoints_dir, portable, resolve as resolve_path, results_dir

REPLACED = ".replaced"   # results/runs/.replaced/<run_id>-<time>/: records replaced (git-ignored)


class RunIdTaken(UserError, ValueError):
    """The run id holds a finished or checkpointed run of other settings."""


def run_dir_of(run_id: str) -> Path:
    """The record folder of a run: results/runs/<run_id>/."""
    return results_dir() / "runs" / run_id


def _json_hash(path: Path) -> str | None:
    """The `config_hash` of a JSON record; None when the file is missing or unreadable."""
    try:
        return io.read_json(path).get("config_hash")
    except (OSError, ValueError):
        return None


def checkpoint_hash(path: Path) -> str | None:
    """The config hash a checkpoint was written under (None: no checkpoint). Memory-mapped: the
    weights are not read."""
    if not path.is_file():
        return None
    for mmap in (True, False):  # mmap needs torch's zip format (torch.save's default)
        try:
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=mmap).get("config_hash")
        except Exception:  # noqa: BLE001 - a foreign or unreadable file: it resumes nothing
            continue
    return "unreadable"


def stored_hashes(run_id: str) -> dict[str, str | None]:
    """The config hashes of what a run id holds: its metrics.json, config.json and last.pt."""
    run_dir = run_dir_of(run_id)
    return {"metrics": _json_hash(run_dir / "metrics.json"),
            "config": _json_hash(run_dir / "config.json"),
            "checkpoint": checkpoint_hash(checkpoints_dir() / run_id / "last.pt")}


def is_complete(cfg: dict) -> bool:
    """True when the run's metrics.json and config.json both exist and hold this config's hash."""
    run_dir = run_dir_of(cfg["run_id"])
    return (_json_hash(run_dir / "metrics.json") == cfg["config_hash"]
            and _json_hash(run_dir / "config.json") == cfg["config_hash"])


def conflict(cfg: dict) -> str | None:
    """Why the run id of `cfg` cannot take this config (its finished run or its checkpoint has
    other settings), as the one-line message of :class:`RunIdTaken`; None when it can."""
    rid, h = cfg["run_id"], cfg["config_hash"]
    held = stored_hashes(rid)
    for key, what, path in (("metrics", "a finished run", run_dir_of(rid) / "metrics.json"),
                            ("checkpoint", "a checkpoint",
                             checkpoints_dir() / rid / "last.pt")):
        if held[key] is not None and held[key] != h:
            return (f"run id {rid!r} holds {what} of other settings (config {held[key]} in "
                    f"{portable(str(path))}; these settings are config {h}): nothing was "
                    f"written. Give another run id (--run-id), or replace that run "
                    f"(--replace; run(..., replace=True)), which archives its record in "
                    f"{portable(str(results_dir() / 'runs' / REPLACED))}/ and deletes its "
                    f"checkpoints.")
    return None


def record_state(cfg: dict) -> str:
    """What the run id of `cfg` holds for it: "done" (complete with this config), "stale" (a
    finished run or checkpoint of other settings: :func:`conflict`) or "new" (nothing, or a
    run of this config to resume)."""
    if is_complete(cfg):
        return "done"
    return "stale" if conflict(cfg) else "new"


def archive_run(run_id: str) -> Path | None:
    """Move a run's record to results/runs/.replaced/<run_id>-<UTC time>/ and delete its
    checkpoint folder; return the archive (None: there was no record). The record moves first,
    in one rename: an interrupted archive leaves either the whole old record or none of it."""
    run_dir, ckpt = run_dir_of(run_id), checkpoints_dir() / run_id
    dest = None
    if run_dir.is_dir():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = results_dir() / "runs" / REPLACED / f"{run_id}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(run_dir, dest)
    if ckpt.is_dir():
        shutil.rmtree(ckpt)
    return dest


def pick_device(name: str) -> torch.device:
    """"auto" = CUDA if available; under DDP a CUDA device is the one of this process's local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and dist_info()[1] > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def resolve_machine(cfg: dict) -> dict:
    """The machine-dependent choices of a run, made where it executes (also on a Slurm node),
    never "auto":

    - device: `train.device` ("auto" = CUDA if available);
    - amp: "fp32" | "fp16" | "bf16" and channels_last: a bool, from `train.amp` and
      `train.channels_last` by fgvc.study.fastpath.resolve (CUDA: fp16 and channels_last; CPU: the
      measured table's choice for this CPU kind and backbone, else fp32 contiguous);
      `fastpath` says where the choice came from;
    - torch_threads: torch's CPU thread count (set by the launcher, e.g. --threads).

    Also recorded: the CPU capability (torch's string), the CPU kind (the table's key), the
    CPU model (/proc/cpuinfo's name: two CPUs of one kind, an AMD EPYC and an Intel Xeon both
    AVX512 + avx512_bf16, gave different results for the same run), whether it has native
    bf16, torch and library versions. Nothing that identifies the machine (no host name, user
    or path).
    """
    t = cfg["train"]
    device = pick_device(t["device"])
    fast = fastpath.resolve(t["amp"], t["channels_last"], str(device), cfg["model"]["backbone"])
    return {"device": str(device), "amp": fast["amp"], "channels_last": fast["channels_last"],
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": fastpath.cpu_capability(),
            "cpu_kind": fast["cpu_kind"], "cpu_model": fastpath.cpu_model(),
            "native_bf16": fast["native_bf16"],
            "fastpath": fast["fastpath"],
            "torch": torch.__version__, "torchvision": _version("torchvision"),
            "numpy": _version("numpy"), "pillow": _version("pillow"),
            "python": platform.python_version()}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _seed_worker(worker_id: int) -> None:
    seed_everything(torch.initial_seed() % 2**31)


def build_data_for(cfg: dict):
    """The DataBundle of a resolved config."""
    from fgvc.data import build_data

    d = cfg["data"]
    return build_data(cfg["dataset"], cfg["data_root"], resize=d["resize"], crop=d["crop"],
                      val_fraction=d["val_fraction"], seed=cfg["seed"], rotation=d["rotation"],
                      vflip=d["vflip"], remove_banner=d["remove_banner"],
                      skip_bad_images=d["skip_bad_images"], synth=d["synth"])


def make_loaders(bundle, cfg: dict, pair_mode: str | None):
    """(train_loader_fn(epoch), val_loader, test_loader); train batches are global-size / world."""
    from fgvc.data.samplers import PairedBatchSampler

    t, seed = cfg["train"], cfg["seed"]
    rank, world = dist_info()
    if t["batch_size"] % world:
        raise ValueError(f"train.batch_size {t['batch_size']} is not divisible by the "
                         f"{world} processes")
    per_rank = t["batch_size"] // world
    pin = torch.cuda.is_available()
    common = dict(num_workers=t["num_workers"], pin_memory=pin, worker_init_fn=_seed_worker)

    def train_loader(epoch: int) -> DataLoader:
        if pair_mode:
            batches = PairedBatchSampler(bundle.train.targets, per_rank, mode=pair_mode,
                                         seed=seed, num_replicas=world, rank=rank)
        else:
            sampler = DistributedSampler(bundle.train, world, rank, shuffle=True, seed=seed,
                                         drop_last=True)
            sampler.set_epoch(epoch)
            batches = BatchSampler(sampler, per_rank, drop_last=True)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return DataLoader(bundle.train, batch_sampler=batches, generator=g, **common)

    def eval_loader(ds) -> DataLoader:
        shard = torch.utils.data.Subset(ds, range(rank, len(ds), world)) if world > 1 else ds
        return DataLoader(shard, batch_size=t["eval_batch_size"], shuffle=False, **common)

    val = eval_loader(bundle.val) if len(bundle.val) else None   # protocol "paper": no split
    return train_loader, val, eval_loader(bundle.test)


def _images(loader: DataLoader, device: torch.device, channels_last: bool):
    """The loader's images (B, 3, H, W) on `device`, drawn lazily: a method whose `calibrate`
    asks for none draws none (and consumes no random number)."""
    for images, _ in loader:
        images = images.to(device)
        yield images.contiguous(memory_format=torch.channels_last) if channels_last else images


def run(cfg: dict | None = None, *, on_epoch: Callable[[FitState], None] | None = None,
        progress: bool = True, replace: bool = False, **resolve_kwargs) -> dict:
    """Run one configuration to completion (or resume it); returns its metrics.

    Pass a resolved `cfg`, or the arguments of `fgvc.study.config.resolve` (method, variant, ...).
    A complete run is returned as it is, unless `replace`: then whatever the run id holds is
    archived (:func:`archive_run`) once the data is found, and the run trains anew. Without
    `replace`, a run id holding a finished run or checkpoint of other settings raises
    :class:`RunIdTaken` before anything is written.
    """
    start = time.time()
    cfg = cfg or resolve(**resolve_kwargs)
    rank, world = dist_info()
    run_dir = run_dir_of(cfg["run_id"])
    ckpt_dir = checkpoints_dir() / cfg["run_id"]
    if not replace:
        if is_complete(cfg):
            return io.read_json(run_dir / "metrics.json")
        why = conflict(cfg)
        if why:
            raise RunIdTaken(why)
    machine = resolve_machine(cfg)
    record = {**cfg, "machine": machine}
    seed_everything(cfg["seed"])
    device = torch.device(machine["device"])
    if cfg["data_root"]:
        cfg = {**cfg, "data_root": str(resolve_path(cfg["data_root"]))}
    bundle = build_data_for(cfg)
    # After the data is found: a run that cannot start leaves no record behind (and replaces none).
    if replace:
        if rank == 0 and (moved := archive_run(cfg["run_id"])) is not None:
            print(f"replacing run {cfg['run_id']}: its earlier record moved to "
                  f"{portable(str(moved))}/, its checkpoints deleted", file=sys.stderr, flush=True)
        if world > 1:
            torch.distributed.barrier()  # no rank looks for last.pt before it is gone
    if rank == 0 and _json_hash(run_dir / "config.json") != cfg["config_hash"]:
        io.write_json(run_dir / "config.json", record)  # a new run (a resumed one has its own)
    model = create_method(cfg["method"], bundle.num_classes, **cfg["model"]).to(device)
    amp, channels_last = machine["amp"], machine["channels_last"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    core = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if cfg["train"]["compile"]:
        model = torch.compile(model)
    pair_mode = method_class(cfg["method"]).pair_mode
    train_loader_fn, val_loader, test_loader = make_loaders(bundle, cfg, pair_mode)
    if not (ckpt_dir / "last.pt").is_file():  # a new run (fit resumes from last.pt)
        core.calibrate(_images(train_loader_fn(0), device, channels_last))

    def record(state: FitState) -> None:
        if rank == 0:
            io.write_text(run_dir / "history.csv", pd.DataFrame(state.history).to_csv(index=False))
        if on_epoch is not None:
            on_epoch(state)

    state = fit(model, train_loader_fn, val_loader, cfg["train"], device, ckpt_dir,
                seed=cfg["seed"], config_hash=cfg["config_hash"], amp=amp,
                channels_last=channels_last, on_epoch=record, progress=progress and rank == 0,
                started=start)
    fit_end = time.time()
    # Test once, with the checkpoint selected on validation (protocol "val") or the final one.
    best = torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=True)
    load_model_state(core, best["model"])
    val, test = evaluate_best(model, val_loader, test_loader, device, cfg, amp, channels_last,
                              genus=bundle.genus_index, progress=progress and rank == 0)
    hist = state.history
    train_s = sum(h["train_seconds"] for h in hist)
    metrics = {
        "run_id": cfg["run_id"], "config_hash": cfg["config_hash"],
        "method": cfg["method"], "variant": cfg["variant"], "dataset": cfg["dataset"],
        "profile": cfg["profile"], "protocol": cfg["protocol"], "seed": cfg["seed"],
        "val_top1": val["top1"], "val_top5": val["top5"],
        "test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
        # fine-grained levels on test (fgvc.engine.genus_summary; None where the dataset has no genera)
        "test_genus_top1": test.get("genus_top1"), "test_within_genus_top1": test.get("within_genus_top1"),
        "test_errors_in_genus": test.get("errors_in_genus"), "genus_only_top1": test.get("genus_only_top1"),
        "chance_top1": 100.0 / bundle.num_classes,
        "n_genera": len(set(bundle.genera)) if bundle.genera is not None else None,
        "best_epoch": state.best_epoch, "epochs": state.epoch,
        "n_train": len(bundle.train), "n_val": len(bundle.val), "n_test": len(bundle.test),
        "num_classes": bundle.num_classes,
        "bad_images_skipped": len(bundle.bad_images),
        "params": sum(p.numel() for p in core.parameters()),
        # every process of the run: those before a resume (their checkpoint's), and this one
        "wall_time_s": state.elapsed_s + time.time() - fit_end,
        "train_time_s": train_s,
        "train_images_per_s": sum(h["train_images"] for h in hist) / max(train_s, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "world_size": world,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
    }
    if rank == 0:
        predictions.write(run_dir, cfg["config_hash"], {"test": test, "val": val})
        io.write_json(run_dir / "metrics.json", metrics)  # last: the run is complete
    return metrics


def evaluate_best(model, val_loader, test_loader, device: torch.device, cfg: dict, amp: str,
                  channels_last: bool, genus=None, progress: bool = False) -> tuple[dict, dict]:
    """(val, test) results of the selected model, each with every image's prediction, as a
    run tests it once at its end (fgvc.study.noise backfill recomputes them this way); val is
    {"top1": None, "top5": None} without a validation split."""
    steps = cfg["train"]["max_steps"]
    kw = dict(amp=amp, channels_last=channels_last, max_steps=steps, progress=progress,
              leave=True, predictions=True)
    val = (evaluate(model, val_loader, device, desc="validate (best)", **kw)
           if val_loader is not None else {"top1": None, "top5": None})
    test = evaluate(model, test_loader, device, genus=genus, desc="test", **kw)
    return val, test


def load_trained(run_dir: str | Path, checkpoints: Path | None = None):
    """(resolved config, data bundle, model with the run's best.pt loaded) of a finished run
    folder, the checkpoint taken beside the record or under `checkpoints`/<run_id>/ (default:
    checkpoints_dir()); None where no best.pt is found."""
    run_dir = Path(run_dir)
    cfg = io.read_json(run_dir / "config.json")
    ckpt = next((p for p in (run_dir / "best.pt",
                             (checkpoints or checkpoints_dir()) / cfg["run_id"] / "best.pt")
                 if p.is_file()), None)
    if ckpt is None:
        return None
    bundle = build_data_for(cfg)
    model = create_method(cfg["method"], bundle.num_classes, **cfg["model"])
    load_model_state(model, torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    return cfg, bundle, model


def load_run(run_dir: str | Path) -> dict:
    """config and metrics of a finished run folder."""
    run_dir = Path(run_dir)
    return {"config": io.read_json(run_dir / "config.json"),
            "metrics": io.read_json(run_dir / "metrics.json")}
