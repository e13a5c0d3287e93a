"""A plain training loop: `train_one_epoch`, `evaluate`, `fit` (checkpoint every epoch, resume).

Determinism: each epoch reseeds every generator from (seed, epoch), so a run resumed from
the checkpoint of epoch e draws exactly what an uninterrupted run draws in epoch e+1; on
the CPU two runs with one seed give identical metrics.

Precision and layout come resolved (fgvc.study.run.resolve_machine, fgvc.study.fastpath): `amp` is
"fp32", "fp16" or "bf16" and `channels_last` a bool. Under amp only the forward runs in
autocast; the loss is computed outside it on the outputs cast to float32 (:func:`forward_loss`),
and weights, gradients, optimizer state and checkpoints stay float32. A GradScaler is used
with fp16 only.

Weights are saved from, and loaded into, the plain module under any torch.compile / DDP
wrapper (:func:`unwrap`, :func:`model_state`, :func:`load_model_state`): one place that also
reads checkpoints whose keys carry the wrappers' `_orig_mod.` / `module.` prefixes.

Progress (`progress=True`): one bar per epoch counting the steps that really run (at most
`max_steps`), kept on screen; a transient bar while validating, then one line per epoch with
its loss and accuracies. The environment variable TQDM_DISABLE=1 turns every bar off.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fgvc.cli import UserError
from fgvc.io import torch_save


def bars_off() -> bool:
    """True when the environment turns progress bars off (TQDM_DISABLE=1), which tqdm itself
    ignores once a caller passes `disable=` explicitly."""
    return os.environ.get("TQDM_DISABLE", "") not in ("", "0")


def tqdm(iterable, **kwargs):
    """tqdm's progress bar where tqdm is installed (a bare GPU machine may lack it)."""
    try:
        from tqdm.auto import tqdm as bar
    except ImportError:
        return iterable
    if bars_off():
        kwargs["disable"] = True
    return bar(iterable, **kwargs)


def say(line: str, progress: bool = True) -> None:
    """A progress line on stderr (beside the bars), unless progress is off."""
    if progress and not bars_off():
        print(line, file=sys.stderr, flush=True)


class NonFiniteLoss(FloatingPointError):
    pass


class CheckpointMismatch(UserError, RuntimeError):
    """A checkpoint that this run must not resume (other config, other machine choices); a
    user error: the command line prints its one-line message."""


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


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside any torch.compile (`_orig_mod`) and DDP (`module`) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def model_state(model: nn.Module) -> dict:
    """The state_dict to save: the plain module's (no wrapper prefixes in its keys)."""
    return unwrap(model).state_dict()


def strip_wrapper_prefixes(state: dict) -> dict:
    """State-dict keys without leading `_orig_mod.` / `module.` (torch.compile / DDP) prefixes."""
    def strip(key: str) -> str:
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        return key
    return {strip(k): v for k, v in state.items()}


def load_model_state(model: nn.Module, state: dict) -> nn.Module:
    """Load a saved state_dict (plain, or with wrapper prefixes) into the plain module of
    `model`; used for the final evaluation (fgvc.study.run), resume (:func:`fit`) and Grad-CAM
    (fgvc.cam). Returns the plain module."""
    core = unwrap(model)
    core.load_state_dict(strip_wrapper_prefixes(state))
    return core


def _unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module to evaluate: inside DDP (whose forward would run collectives); a compiled
    module that is not DDP stays compiled."""
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
    """SGD with momentum: the method's new modules at head_lr (None, or a config resolved
    before the setting existed: lr), its pretrained layers at lr * backbone_lr_mult; both
    groups follow the same schedule (:func:`build_scheduler`) and weight decay."""
    core = unwrap(model)
    head_lr = t.get("head_lr")
    groups = [{"params": core.new_parameters(), "lr": t["lr"] if head_lr is None else head_lr,
               "name": "new"}]
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


# ------------------------------------------------------------------------- precision
AMP_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def amp_name(amp: str | bool) -> str:
    """A resolved amp value: "fp32", "fp16" or "bf16" (True = fp16 and False = fp32, the
    engine's former booleans)."""
    if isinstance(amp, bool):
        return "fp16" if amp else "fp32"
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp {amp!r} is not resolved; valid: {list(AMP_DTYPES)} "
                         "(fgvc.study.run.resolve_machine resolves train.amp)")
    return amp


def autocast(device: torch.device | str, amp: str | bool):
    """torch.autocast of the resolved amp dtype on the device; a no-op context for fp32."""
    amp = amp_name(amp)
    if amp == "fp32":
        return contextlib.nullcontext()
    with warnings.catch_warnings():  # support warnings: fgvc.study.run.resolve_machine gives its own
        warnings.simplefilter("ignore")
        return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[amp])


def to_fp32(out: dict) -> dict:
    """The method's outputs with every float16 / bfloat16 tensor cast to float32."""
    return {k: v.float() if torch.is_tensor(v) and v.dtype in (torch.float16, torch.bfloat16)
            else v for k, v in out.items()}


def forward_loss(model: nn.Module, images: torch.Tensor, target: torch.Tensor,
                 amp: str | bool = "fp32", core: nn.Module | None = None):
    """(outputs, loss, parts) of one training forward: the forward under autocast, the loss in
    float32 outside it (cross-entropies, centre losses, distances of every method)."""
    core = unwrap(model) if core is None else core
    with autocast(images.device, amp):
        out = model(images, target)
    if amp_name(amp) != "fp32":
        out = to_fp32(out)
        with torch.autocast(device_type=images.device.type, enabled=False):
            loss, parts = core.loss(out, target)
    else:
        loss, parts = core.loss(out, target)
    return out, loss, parts


# ------------------------------------------------------------------------- loops


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer, scheduler, device: torch.device,
                    *, epoch: int = 0, amp: str | bool = "fp32", scaler=None,
                    grad_clip: float = 0.0, max_steps: int = 0, channels_last: bool = False,
                    progress: bool = True, desc: str | None = None) -> dict:
    """One pass over `loader`; returns mean loss (and its parts), train top-1, images, seconds.

    `amp`: "fp32" | "fp16" | "bf16" (see the module docstring); `scaler`: a GradScaler (fp16).
    `desc`: the progress bar's label (default "epoch N")."""
    model.train()
    core = unwrap(model)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    n_images, start = 0, time.perf_counter()
    # progress in epochs for methods with a loss schedule (Method.set_progress)
    set_progress = getattr(core, "set_progress", None)
    steps = len(loader) if hasattr(loader, "__len__") else max_steps
    if max_steps:
        steps = min(steps, max_steps)
    bar = tqdm(loader, desc=desc or f"epoch {epoch + 1}", total=steps or None, leave=True,
               disable=not progress, unit="step")
    for step, (images, target) in enumerate(bar):
        if max_steps and step >= max_steps:
            break
        if set_progress is not None:
            set_progress(epoch + step / max(steps, 1))
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        out, loss, parts = forward_loss(model, images, target, amp, core)
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
    if hasattr(bar, "close"):
        bar.close()  # the loop may stop at max_steps before the loader's end
    seconds = time.perf_counter() - start
    keys = sorted(sums)
    totals = _all_reduce([float(sums[k]) for k in keys] + [float(correct), n_images], device)
    n = max(totals[-1], 1)
    stats = {k: totals[i] / n for i, k in enumerate(keys)}
    stats.update(train_top1=100 * totals[-2] / n, images=int(totals[-1]), seconds=seconds)
    return stats


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *,
             amp: str | bool = "fp32", channels_last: bool = False, max_steps: int = 0,
             progress: bool = False, genus: Sequence[int] | None = None,
             desc: str = "eval", leave: bool = False, predictions: bool = False) -> dict:
    """Top-1 and top-5 accuracy (%) and mean CE of the `logits` output, reduced over ranks.

    `predictions`: the result also holds "pred" and "target", int64 numpy arrays of every
    image's top-1 class and label in the loader's order (under DDP each rank's shard
    `range(rank, n, world)` is gathered back into dataset order).

    `genus`: per class, its genus index (``DataBundle.genus_index``); when given, the result
    also holds the genus-level scores of :func:`genus_summary` (genus_top1,
    within_genus_top1, errors_in_genus, genus_only_top1).

    `progress`: a bar labelled `desc` counting the batches that run (at most `max_steps`),
    kept on screen when `leave`.

    Under DDP each rank evaluates its own shard with the unwrapped module: a DDP forward
    would broadcast buffers, a collective that hangs when the shards have unequal batch counts.
    """
    model = _unwrap_ddp(model)
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    gsums = dict.fromkeys(GENUS_COUNTS, 0.0)
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_steps:
        total = min(total, max_steps) if total is not None else max_steps
    bar = tqdm(loader, desc=desc, total=total, leave=leave, disable=not progress, unit="batch")
    for step, (images, target) in enumerate(bar):
        if max_steps and step >= max_steps:
            break
        images, target = images.to(device), target.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)["logits"].float()
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == target).sum().item()
        correct5 += (top == target[:, None]).any(1).sum().item()
        n += target.shape[0]
        if predictions:
            preds.append(top[:, 0].cpu())
            targets.append(target.cpu())
        if genus is not None:
            for k, v in genus_counts(top[:, 0], target, genus).items():
                gsums[k] += v
    if hasattr(bar, "close"):
        bar.close()
    totals = _all_reduce([correct1, correct5, loss_sum, n] + [gsums[k] for k in GENUS_COUNTS], device)
    correct1, correct5, loss_sum, n = totals[:4]
    out = {}
    if genus is not None:
        out = genus_summary(dict(zip(GENUS_COUNTS, totals[4:])))
    if predictions:
        out["pred"], out["target"] = (_gather_shards(torch.cat(v).numpy() if v else
                                                     np.zeros(0, dtype=np.int64))
                                      for v in (preds, targets))
    n = max(n, 1)
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "loss": loss_sum / n,
            "n": int(n), **out}


def _gather_shards(local: np.ndarray) -> np.ndarray:
    """Per-image values of the strided eval shards (rank r holds images r, r + world, ...)
    back in dataset order; the array itself on one process."""
    world = dist_info()[1]
    if world == 1:
        return local
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    full = np.empty(sum(len(p) for p in parts), dtype=local.dtype)
    for rank, part in enumerate(parts):
        full[rank::world] = part
    return full


GENUS_COUNTS = ("n", "correct", "genus_correct", "genus_only")
"""The additive counts behind the genus-level scores (sums over batches and ranks)."""


def genus_counts(pred: torch.Tensor, target: torch.Tensor, genus: Sequence[int]) -> dict[str, float]:
    """Counts of :data:`GENUS_COUNTS` for predicted and true class indices, `genus` giving
    each class's genus index: images, right class, right genus, and the sum over images of
    1 / (classes in the true genus) (what a classifier that knows the genus and guesses
    uniformly within it gets right, in expectation)."""
    pred, target = torch.as_tensor(pred).long().flatten(), torch.as_tensor(target).long().flatten()
    g = torch.as_tensor(list(genus), dtype=torch.long, device=target.device)
    size = torch.bincount(g).double()  # classes per genus
    tg, pg = g[target], g[pred.to(target.device)]
    return {"n": float(target.numel()), "correct": float((pred.to(target.device) == target).sum()),
            "genus_correct": float((pg == tg).sum()), "genus_only": float((1.0 / size[tg]).sum())}


def genus_summary(counts: dict[str, float]) -> dict[str, float | None]:
    """Genus-level scores (%) from :func:`genus_counts` totals; None where undefined:

    - genus_top1: the predicted class is in the true class's genus (share of all images);
    - within_genus_top1: top-1 among the images whose genus was predicted right (None: none);
    - errors_in_genus: share of the wrong predictions whose class is in the true genus
      (None: no errors);
    - genus_only_top1: the reference level of a classifier that knows the genus and guesses
      uniformly within it, mean over images of 1 / (classes in the genus).
    """
    n, c, gc, go = (float(counts[k]) for k in GENUS_COUNTS)

    def pct(a: float, b: float) -> float | None:
        return 100.0 * a / b if b > 0 else None

    return {"genus_top1": pct(gc, n), "within_genus_top1": pct(c, gc),
            "errors_in_genus": pct(gc - c, n - c), "genus_only_top1": pct(go, n)}


def genus_metrics(pred, target, genus: Sequence[int]) -> dict[str, float | None]:
    """The genus-level scores of predictions `pred` for `target` (class indices, any
    sequence or tensor), `genus[c]` being the genus index of class c: pure, see
    :func:`genus_summary`."""
    return genus_summary(genus_counts(torch.as_tensor(pred), torch.as_tensor(target), genus))


# ------------------------------------------------------------------------- fit
@dataclass
class FitState:
    epoch: int = 0                      # epochs completed
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    # wall seconds of the run so far, over every process that worked on it (a resumed run
    # adds its own to what its checkpoint holds); 0.0 in checkpoints written before it existed
    elapsed_s: float = 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# The resolved machine choices a checkpoint must share with the run that resumes it. The
# thread count is recorded in the checkpoint but not compared: on the CPU it changes only the
# order of floating-point reductions (results at rounding level), and comparing it would tie
# a run to the core count of the machine that started it.
RESUME_CHOICES = ("amp", "channels_last")


def precision_choices(amp: str | bool = "fp32", channels_last: bool = False,
                      threads: int | None = None) -> dict:
    """The resolved choices a checkpoint records: amp dtype, memory layout, torch threads."""
    return {"amp": amp_name(amp), "channels_last": bool(channels_last),
            "threads": torch.get_num_threads() if threads is None else int(threads)}


def legacy_choices(t: dict, device: torch.device) -> dict:
    """What a checkpoint written before choices were recorded was trained with: the former
    rule, amp (fp16) and channels_last only on CUDA when set to auto / true."""
    cuda = torch.device(device).type == "cuda"
    return {"amp": "fp16" if cuda and t["amp"] in ("auto", True) else "fp32",
            "channels_last": cuda and t["channels_last"] in ("auto", True)}


def load_checkpoint(path: Path, config_hash: str, choices: dict | None = None,
                    legacy: dict | None = None) -> dict:
    """Load with weights_only=True; refuse a checkpoint written under another config, or
    (`choices`: the resumer's resolved amp dtype and layout) under other machine choices.
    `legacy`: the choices assumed for a checkpoint that records none (default: fp32,
    contiguous)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("config_hash") != config_hash:
        raise CheckpointMismatch(
            f"checkpoint {path} was written by a run with config {ckpt.get('config_hash')}, "
            f"not {config_hash}: it is not loaded. Use another run id, or delete the "
            f"checkpoint folder {path.parent} to start this run afresh.")
    if choices is not None:
        saved = ckpt.get("choices") or legacy or {"amp": "fp32", "channels_last": False}
        differ = {k: (saved.get(k), choices.get(k)) for k in RESUME_CHOICES
                  if saved.get(k) != choices.get(k)}
        if differ:
            said = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items())
            raise CheckpointMismatch(
                f"checkpoint {path} was written under other machine choices ({said}): it is "
                f"not loaded, since resuming would change the numerics mid-run. Resume it "
                f"where train.amp / train.channels_last resolve as they did (the run's "
                f"config.json `machine` section), use another run id, or delete the "
                f"checkpoint folder {path.parent} to start this run afresh.")
    return ckpt


def fit(model: nn.Module, train_loader_fn: Callable[[int], Iterable], val_loader: Iterable,
        t: dict, device: torch.device, ckpt_dir: Path, *, seed: int, config_hash: str,
        amp: str | bool = "fp32", channels_last: bool = False,
        on_epoch: Callable[[FitState], None] | None = None, progress: bool = True,
        started: float | None = None) -> FitState:
    """Train for t['epochs'] epochs, validating after each and checkpointing atomically.

    `val_loader=None` (protocol "paper", no held-out split): no validation, and `best.pt` is
    the final epoch's model.

    `train_loader_fn(epoch)` returns the loader of that epoch (seeded from it). Resumes from
    `ckpt_dir/last.pt` when present and written under the same config and the same resolved
    `amp` and `channels_last` (fgvc.study.run.resolve_machine). Keeps `last.pt` and `best.pt`
    (model of the best val top-1); both record the choices (:func:`precision_choices`).

    `started`: when this process began working on the run (time.time(), default: now); the
    state's `elapsed_s` is what the checkpoint held plus this process's seconds since then,
    current at every checkpoint and on return.
    """
    rank, _ = dist_info()
    amp = amp_name(amp)
    choices = precision_choices(amp, channels_last)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    core = unwrap(model)
    optimizer = build_optimizer(model, t)
    steps = len(train_loader_fn(0))
    if t["max_steps"]:
        steps = min(steps, t["max_steps"])
    scheduler = build_scheduler(optimizer, t, max(steps, 1))
    started = time.time() if started is None else started
    state = FitState()
    last = ckpt_dir / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last, config_hash, choices, legacy_choices(t, device))
        load_model_state(core, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = FitState(**ckpt["state"])
        say(f"resuming from {last.name} after epoch {state.epoch}/{t['epochs']}", progress)
    earlier_s = state.elapsed_s
    for epoch in range(state.epoch, t["epochs"]):
        seed_everything(epoch_seed(seed, epoch))
        stats = train_one_epoch(model, train_loader_fn(epoch), optimizer, scheduler, device,
                                epoch=epoch, amp=amp, scaler=scaler, grad_clip=t["grad_clip"],
                                max_steps=t["max_steps"], channels_last=channels_last,
                                progress=progress, desc=f"epoch {epoch + 1}/{t['epochs']}")
        val_start = time.time()
        val = {} if val_loader is None else evaluate(
            model, val_loader, device, amp=amp, channels_last=channels_last,
            max_steps=t["max_steps"], progress=progress, desc="  validate")
        if val:
            val["seconds"] = time.time() - val_start   # the split's cost, paid every epoch
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **{f"train_{k}" if not k.startswith("train_") else k: v for k, v in stats.items()},
               **{f"val_{k}": v for k, v in val.items()}}
        state.history.append(row)
        state.epoch = epoch + 1
        state.elapsed_s = earlier_s + time.time() - started
        # Without a validation split (protocol "paper") the final epoch is the one tested.
        if val_loader is None or val["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = val.get("top1", -1.0), epoch + 1
            if rank == 0:
                torch_save({"model": model_state(core), "epoch": epoch + 1,
                            "config_hash": config_hash, "choices": choices}, ckpt_dir / "best.pt")
        if rank == 0:
            torch_save({"model": model_state(core), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler else None,
                        "state": state.__dict__, "config_hash": config_hash,
                        "choices": choices}, last)
        _barrier()  # DDP: no rank reads best.pt / last.pt before rank 0 has written them
        say(f"  epoch {epoch + 1}/{t['epochs']}: train loss {stats.get('loss', float('nan')):.3f}, "
            f"top-1 {stats['train_top1']:.1f} %"
            + ("" if val_loader is None else f"; val top-1 {val['top1']:.1f} %"
               + (" (best so far)" if state.best_epoch == epoch + 1 else "")), progress)
        if on_epoch is not None:
            on_epoch(state)
    state.elapsed_s = earlier_s + time.time() - started
    return state
