"""A plain training loop: `train_one_epoch`, `evaluate`, `fit` (checkpoint every epoch, resume).

Determinism: each epoch reseeds every generator from (seed, epoch), so a run resumed from
the checkpoint of epoch e draws exactly what an uninterrupted run draws in epoch e+1; on
the CPU two runs with one seed give identical metrics.
"""
from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .io import torch_save


class NonFiniteLoss(FloatingPointError):
    pass


class CheckpointMismatch(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    """Wait for every rank (no-op outside torch.distributed)."""
    if dist_info()[1] > 1:
        dist.barrier()


def _unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (also under torch.compile); else `model`."""
    inner = getattr(model, "_orig_mod", model)
    return inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else model


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    if dist_info()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ------------------------------------------------------------------------- optimisation
def build_optimizer(model: nn.Module, t: dict) -> torch.optim.Optimizer:
    """SGD with momentum; pretrained layers at lr * backbone_lr_mult."""
    core = model.module if hasattr(model, "module") else model
    groups = [{"params": core.new_parameters(), "lr": t["lr"], "name": "new"}]
    old = core.pretrained_parameters()
    if old:
        groups.append({"params": old, "lr": t["lr"] * t["backbone_lr_mult"], "name": "pretrained"})
    return torch.optim.SGD(groups, lr=t["lr"], momentum=t["momentum"],
                           weight_decay=t["weight_decay"], nesterov=t["nesterov"])


def lr_factor(t: dict, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at a global step: linear warm-up, then cosine or step decay."""
    epoch = step / steps_per_epoch
    if epoch < t["warmup_epochs"]:
        return (step + 1) / (t["warmup_epochs"] * steps_per_epoch)
    if t["schedule"] == "cosine":
        span = max(t["epochs"] - t["warmup_epochs"], 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min((epoch - t["warmup_epochs"]) / span, 1.0)))
    return t["gamma"] ** int(epoch // t["step_size"])


def build_scheduler(optimizer: torch.optim.Optimizer, t: dict, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(t, step, steps_per_epoch))


# ------------------------------------------------------------------------- loops
def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp)


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer, scheduler, device: torch.device,
                    *, epoch: int = 0, amp: bool = False, scaler=None, grad_clip: float = 0.0,
                    max_steps: int = 0, channels_last: bool = False,
                    progress: bool = True) -> dict:
    """One pass over `loader`; returns mean loss (and its parts), train top-1, images, seconds."""
    model.train()
    core = model.module if hasattr(model, "module") else model
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    n_images, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)
    for step, (images, target) in enumerate(bar):
        if max_steps and step >= max_steps:
            break
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with _autocast(device, amp):
            out = model(images, target)
            loss, parts = core.loss(out, target)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}, step {step} "
                                f"(batch {step} of the epoch, labels {target.tolist()[:16]}...); "
                                f"parts: { {k: float(v) for k, v in parts.items()} }")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        b = target.shape[0]
        n_images += b
        for k, v in {"loss": loss.detach(), **parts}.items():
            sums[k] = sums.get(k, 0) + torch.as_tensor(v, device=device).float() * b
        correct += (out["logits"].argmax(1) == target).sum()
    seconds = time.perf_counter() - start
    keys = sorted(sums)
    totals = _all_reduce([float(sums[k]) for k in keys] + [float(correct), n_images], device)
    n = max(totals[-1], 1)
    stats = {k: totals[i] / n for i, k in enumerate(keys)}
    stats.update(train_top1=100 * totals[-2] / n, images=int(totals[-1]), seconds=seconds)
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *, amp: bool = False,
             channels_last: bool = False, max_steps: int = 0, progress: bool = False) -> dict:
    """Top-1 and top-5 accuracy (%) and mean CE of the `logits` output, reduced over ranks.

    Under DDP each rank evaluates its own shard with the unwrapped module: a DDP forward
    would broadcast buffers, a collective that hangs when the shards have unequal batch counts.
    """
    model = _unwrap_ddp(model)
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    for step, (images, target) in enumerate(tqdm(loader, desc="eval", leave=False,
                                                 disable=not progress)):
        if max_steps and step >= max_steps:
            break
        images, target = images.to(device), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(images)["logits"].float()
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == target).sum().item()
        correct5 += (top == target[:, None]).any(1).sum().item()
        n += target.shape[0]
    correct1, correct5, loss_sum, n = _all_reduce([correct1, correct5, loss_sum, n], device)
    n = max(n, 1)
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "loss": loss_sum / n,
            "n": int(n)}


# ------------------------------------------------------------------------- fit
@dataclass
class FitState:
    epoch: int = 0                      # epochs completed
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_checkpoint(path: Path, config_hash: str) -> dict:
    """Load with weights_only=True; refuse a checkpoint written under another config."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("config_hash") != config_hash:
        raise CheckpointMismatch(
            f"checkpoint {path} was written by a run with config {ckpt.get('config_hash')}, "
            f"not {config_hash}: it is not loaded. Use another run id, or delete the "
            f"checkpoint folder {path.parent} to start this run afresh.")
    return ckpt


def fit(model: nn.Module, train_loader_fn: Callable[[int], Iterable], val_loader: Iterable,
        t: dict, device: torch.device, ckpt_dir: Path, *, seed: int, config_hash: str,
        on_epoch: Callable[[FitState], None] | None = None, progress: bool = True) -> FitState:
    """Train for t['epochs'] epochs, validating after each and checkpointing atomically.

    `train_loader_fn(epoch)` returns the loader of that epoch (seeded from it). Resumes from
    `ckpt_dir/last.pt` when present. Keeps `last.pt` and `best.pt` (model of the best val top-1).
    """
    rank, _ = dist_info()
    amp = device.type == "cuda" and t["amp"] in ("auto", True)
    channels_last = device.type == "cuda" and t["channels_last"] in ("auto", True)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    core = model.module if hasattr(model, "module") else model
    optimizer = build_optimizer(model, t)
    steps = len(train_loader_fn(0))
    if t["max_steps"]:
        steps = min(steps, t["max_steps"])
    scheduler = build_scheduler(optimizer, t, max(steps, 1))
    state = FitState()
    last = ckpt_dir / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last, config_hash)
        core.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = FitState(**ckpt["state"])
    for epoch in range(state.epoch, t["epochs"]):
        seed_everything(epoch_seed(seed, epoch))
        stats = train_one_epoch(model, train_loader_fn(epoch), optimizer, scheduler, device,
                                epoch=epoch, amp=amp, scaler=scaler, grad_clip=t["grad_clip"],
                                max_steps=t["max_steps"], channels_last=channels_last,
                                progress=progress)
        val = evaluate(model, val_loader, device, amp=amp, channels_last=channels_last,
                       max_steps=t["max_steps"])
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **{f"train_{k}" if not k.startswith("train_") else k: v for k, v in stats.items()},
               **{f"val_{k}": v for k, v in val.items()}}
        state.history.append(row)
        state.epoch = epoch + 1
        if val["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = val["top1"], epoch + 1
            if rank == 0:
                torch_save({"model": core.state_dict(), "epoch": epoch + 1,
                            "config_hash": config_hash}, ckpt_dir / "best.pt")
        if rank == 0:
            torch_save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler else None,
                        "state": state.__dict__, "config_hash": config_hash}, last)
        _barrier()  # DDP: no rank reads best.pt / last.pt before rank 0 has written them
        if on_epoch is not None:
            on_epoch(state)
    return state
