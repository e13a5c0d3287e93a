"""The performance benchmark: one run on this machine, written to results/bench.md (+ .json).

    python -m fgvc.dev.bench [--out results/bench.md] [--sections engine,paper,scratch,data,...]  (make bench)
    python -m fgvc.dev.bench --fastpath-entry     # this CPU's entry of configs/fastpath.yaml, as YAML

Its own figures (parameters, MACs and latency per method are the complexity table's):
- GEMM rate: torch.mm FLOP/s in fp32 and bf16 (a 512 GEMM where bf16 is not native: emulated,
  slow), the peaks for MFU; whether the CPU has native bf16 (fgvc.study.fastpath).
- engine: baseline training images/s through fgvc.engine.train_one_epoch vs a bare PyTorch loop
  on the same model and in-memory batches. Goal: overhead <= 5%.
- paper, scratch: training throughput per method (ResNet-50 at 448, a small batch; the scratch
  profile's backbone, crop and batch): images/s, FLOPs of a step (forward + loss + backward),
  FLOP/s and MFU. Goal: every method >= 80% of the baseline's FLOP/s.
- data: images/s of one loader worker (one torch thread) with the paper's 550 -> 448 train
  transforms, from original JPEGs, from the prepared cache (fgvc.data.prepare), and raw decode
  (+ resize), on SynthBirds JPEGs of 432 x 432 (a CUB photo's pixels). Goal: cache >= 2x.
  Also SynthBirds' own rendering (photo preset at 146 px, the transfer profile's, with JPEG
  encoding), per CPU second. Goal: the 1,600 images of the default set in <= 45 CPU s.
- fastpath: train and eval images/s of each profile's backbone (EfficientNet-Lite0 at 128,
  ResNet-18 at 64, ResNet-50 at 224 rather than 448 to keep it short) x {fp32, bf16 where
  native} x {contiguous, channels_last}, MFU against the dtype's GEMM rate, and what
  train.amp / train.channels_last "auto" pick here (from configs/fastpath.yaml).
- compile: torch.compile of a training step on CPU, compile time and steady-state speed.
- memory: peak resident memory (ru_maxrss, one fresh process per configuration) of a short
  training run of each profile's backbone, fp32 vs the fast path auto picks.
Timings: torch.utils.benchmark.Timer medians over >= --min-run-time s (fgvc.study.cost.latency); FLOPs:
fgvc.study.cost.count_flops. Each section (SECTIONS) returns a title, a note, table rows and goal
rows; render() writes them with DataFrame.to_markdown. A new table is one more section.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from fgvc.study import cost

GOAL_ENGINE_OVERHEAD = 0.05  # engine within 5% of a bare loop
GOAL_FLOPS_FRACTION = 0.80   # every method >= 80% of the baseline's FLOP/s
GOAL_CACHE_SPEEDUP = 2.0     # prepared cache >= 2x the loader from originals
GOAL_RENDER_RATE = 1600 / 45  # SynthBirds photo preset: the default 1,600 images in <= 45 CPU s


def machine_info() -> dict:
    from fgvc.study import fastpath

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": fastpath.cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "cpu_capability": fastpath.cpu_capability(), "cpu_kind": fastpath.cpu_kind(),
            "native_bf16": fastpath.native_bf16(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "load_average": os.getloadavg()}


def goal(name: str, measured: str, target: str, ok: bool) -> dict:
    return {"goal": name, "measured": measured, "target": target, "status": "PASS" if ok else "MISS"}


def labels(batch: int, num_classes: int, pair_mode: str | None) -> torch.Tensor:
    """Targets laid out as the method's sampler would (same-class pairs if it needs them)."""
    if pair_mode == "adjacent":
        return (torch.arange(batch) // 2) % num_classes
    if pair_mode == "halves":
        return torch.arange(batch) % (batch // 2) % num_classes
    return torch.arange(batch) % num_classes


def build_model(method: str, profile: str, num_classes: int, **model_over) -> torch.nn.Module:
    """The method as the profile configures it (variant "full"), with random weights."""
    from fgvc.study.config import resolve

    return cost.create(method, {**resolve(method, "full", profile=profile)["model"], **model_over},
                       num_classes)


def train_step(model, x, y, optimizer) -> Callable[[], None]:
    def step():
        loss, _ = model.loss(model(x, y), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


# ----------------------------------------------------------------------------- fast paths
# The backbones of the profiles at the sizes the fast-path table is measured at (ResNet-50 at
# 224, not the paper profile's 448, to keep a CPU measurement short).
FASTPATH_BACKBONES = (("efficientnet_lite0", 128, 16), ("resnet18", 64, 32), ("resnet50", 224, 8))
FASTPATH_CONFIGS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def config_name(amp: str, channels_last: bool) -> str:
    return f"{amp}_{'channels_last' if channels_last else 'contiguous'}"


def fast_step(backbone: str, size: int, batch: int, amp: str = "fp32", channels_last: bool = False,
              train: bool = True, num_classes: int = 200, device: str = "cpu") -> Callable[[], None]:
    """One training step (forward under autocast, fp32 loss, backward, SGD update) or one
    inference forward of the baseline on `backbone`, in the given dtype and memory layout,
    exactly as fgvc.engine runs it (forward_loss, autocast)."""
    from fgvc.engine import autocast, forward_loss

    torch.manual_seed(0)
    model = cost.create("baseline", {"backbone": backbone, "input_size": size}, num_classes, device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % num_classes
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if not train:
        model.eval()

        def infer():
            with torch.no_grad(), autocast(x.device, amp):
                model(x)
        return infer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        _, loss, _ = forward_loss(model, x, y, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def fastpath_rates(backbone: str, size: int, batch: int, *, train: bool = True, rounds: int = 3,
                   min_run_time: float = 1.0, bf16: bool = True, num_threads: int = 1,
                   device: str = "cpu") -> dict[str, float]:
    """Images/s of each (dtype, layout) of FASTPATH_CONFIGS (bf16 only if `bf16`), the best of
    `rounds` rounds; each round times every configuration once, so that a shared machine's
    load changes reach all of them alike."""
    configs = [c for c in FASTPATH_CONFIGS if bf16 or c[0] != "bf16"]
    steps = {config_name(*c): fast_step(backbone, size, batch, *c, train=train, device=device)
             for c in configs}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in steps.items():
            s = cost.latency(fn, min_run_time=min_run_time, warmup=2, num_threads=num_threads)
            best[name] = max(best.get(name, 0.0), batch / s)
    return best


def fastpath_entry(backbones=FASTPATH_BACKBONES, rounds: int = 3, min_run_time: float = 1.0,
                   log=print) -> dict:
    """This machine's entry of configs/fastpath.yaml: measured train images/s (one thread) of
    every backbone x dtype x layout and the choices fgvc.study.fastpath.choose makes from them."""
    from fgvc.study import fastpath

    native = fastpath.native_bf16()
    entry = {"measured": {"date": datetime.now(timezone.utc).date().isoformat(),
                          "cpu": fastpath.cpu_model(), "capability": fastpath.cpu_capability(),
                          "torch": str(torch.__version__), "threads": 1, "rounds": rounds,
                          "load_average": [round(x, 1) for x in os.getloadavg()]},
             "backbones": {}}
    for backbone, size, batch in backbones:
        rates = fastpath_rates(backbone, size, batch, rounds=rounds, min_run_time=min_run_time,
                               bf16=native)
        entry["backbones"][backbone] = {
            "setting": {"size": size, "batch": batch},
            "train_img_per_s": {k: round(v, 2) for k, v in rates.items()},
            **fastpath.choose(rates, native)}
        log(f"  {backbone}: {entry['backbones'][backbone]}")
    return {fastpath.cpu_kind(): entry}


def fastpath_table(backbones=FASTPATH_BACKBONES, peaks: dict[str, float] | None = None,
                   dtypes: list[str] | None = None, min_run_time: float = 1.0, rounds: int = 1,
                   device: str = "cpu", num_threads: int | None = None, log=print) -> dict:
    """Train and eval images/s of each backbone x dtype x layout, MFU against the GEMM rate of
    the dtype in use (`peaks`), and what train.amp / train.channels_last "auto" pick here.
    `dtypes`: default fp32, plus bf16 where the CPU has it natively (fp16 too on CUDA)."""
    from fgvc.study import fastpath

    native = fastpath.native_bf16()
    if dtypes is None:
        dtypes = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else \
            ["fp32"] + ["bf16"] * native
    peaks = peaks or {}
    rows = []
    for backbone, size, batch in backbones:
        auto = fastpath.resolve("auto", "auto", device, backbone, warn=False)
        flops = {}
        for train in (True, False):
            fn = fast_step(backbone, size, batch, train=train, device=device)
            flops[train] = cost.count_flops(fn) / batch
        for amp in dtypes:
            for layout in (False, True):
                row = {"backbone": backbone, "px": size, "batch": batch, "dtype": amp,
                       "layout": "channels_last" if layout else "contiguous"}
                try:
                    for train, key in ((True, "train"), (False, "eval")):
                        fn = fast_step(backbone, size, batch, amp, layout, train=train, device=device)
                        s = min(cost.latency(fn, min_run_time=min_run_time, warmup=2,
                                             num_threads=num_threads) for _ in range(rounds))
                        row[f"{key} img/s"] = batch / s
                        if amp in peaks:
                            row[f"{key} MFU %"] = 100 * flops[train] * batch / s / peaks[amp]
                except Exception as e:  # noqa: BLE001 - e.g. a dtype this device lacks
                    row["error"] = f"{type(e).__name__}: {e}"[:160]
                row["auto"] = "yes" if (auto["amp"], auto["channels_last"]) == (amp, layout) else ""
                rows.append(row)
                log(f"  {row}")
    resnet50 = [b for b in backbones if b[0] == "resnet50"]
    return {"title": f"Fast paths: dtype x memory layout per backbone ({device})",
            "note": "Baseline method on each profile's backbone (random weights), training step = "
                    "forward under autocast + float32 loss + backward + SGD update, eval = forward "
                    "without grad, exactly as fgvc.engine runs them; "
                    + (f"ResNet-50 at {resnet50[0][1]} px, not the paper's 448, to keep it short; "
                       if resnet50 and resnet50[0][1] != 448 else "")
                    + f"bf16 {'measured (native)' if native else 'not measured: no native bf16 on this CPU'}"
                    + "; MFU = FLOP/s over the GEMM rate of the dtype in use; `auto` = what "
                    "train.amp / train.channels_last auto resolve to here (fgvc.study.fastpath, "
                    "configs/fastpath.yaml), not re-timed.",
            "rows": rows, "goals": []}


def compile_speed(backbone: str = "resnet18", size: int = 64, batch: int = 32,
                  backend: str = "inductor", min_run_time: float = 1.0, device: str = "cpu") -> dict:
    """torch.compile of the baseline's training step: compile time (the first call) and
    steady-state images/s beside eager."""
    from fgvc.engine import forward_loss

    eager = fast_step(backbone, size, batch, device=device)
    rows = [{"mode": "eager", "first call s": cost.wall_time(eager, device),
             "img/s": batch / cost.latency(eager, min_run_time=min_run_time, warmup=1)}]
    torch.manual_seed(0)
    model = cost.create("baseline", {"backbone": backbone, "input_size": size}, 200, device).train()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % 200
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        _, loss, _ = forward_loss(compiled, x, y, core=model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    row = {"mode": f"torch.compile ({backend})"}
    try:
        row["first call s"] = cost.wall_time(step, device)
        row["img/s"] = batch / cost.latency(step, min_run_time=min_run_time, warmup=1)
        row["speed-up"] = row["img/s"] / rows[0]["img/s"]
    except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor
        row["error"] = f"{type(e).__name__}: {e}"[:200]
    rows.append(row)
    return {"title": f"torch.compile ({device})",
            "note": f"Baseline on {backbone} at {size} px, batch {batch}, fp32 training step; "
                    "the first call of the compiled step includes compilation.",
            "rows": rows, "goals": []}


def memory_child(spec: str) -> None:
    """In a subprocess (:func:`peak_memory`): run `steps` training steps of a spec and print
    the peak resident memory (ru_maxrss) in MiB as the last line."""
    import json
    import resource

    a = json.loads(spec)
    torch.set_num_threads(1)
    if a["steps"]:
        step = fast_step(a["backbone"], a["size"], a["batch"], a["amp"], a["channels_last"])
        for _ in range(a["steps"]):
            step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def peak_memory(backbone: str, size: int, batch: int, amp: str = "fp32",
                channels_last: bool = False, steps: int = 3) -> float:
    """Peak resident MiB of a fresh process that imports torch and runs `steps` training
    steps (0: the import alone)."""
    import json
    import subprocess

    spec = json.dumps({"backbone": backbone, "size": size, "batch": batch, "amp": amp,
                       "channels_last": channels_last, "steps": steps})
    out = subprocess.run([sys.executable, "-c", "import sys; from fgvc.dev.bench import memory_child; "
                          "memory_child(sys.argv[1])", spec], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def memory_table(profiles: dict[str, tuple[int, int]] | None = None, steps: int = 3,
                 log=print) -> dict:
    """Peak resident memory of a short training run of each profile's backbone, fp32
    contiguous vs the fast path `auto` picks on this CPU. `profiles`: name -> (crop, batch)
    (default: each profile's own)."""
    from fgvc.study import fastpath
    from fgvc.study.config import list_profiles, load_profile

    if profiles is None:
        profiles = {n: (load_profile(n)["data"]["crop"], load_profile(n)["train"]["batch_size"])
                    for n in list_profiles()}
    rows = [{"profile": "(torch imported, no step)", "fp32 MiB": peak_memory("resnet18", 32, 2, steps=0)}]
    for name, (size, batch) in profiles.items():
        backbone = load_profile(name)["model"]["backbone"]
        auto = fastpath.resolve("auto", "auto", "cpu", backbone, warn=False)
        row = {"profile": name, "backbone": backbone, "px": size, "batch": batch,
               "fp32 MiB": peak_memory(backbone, size, batch, steps=steps),
               "fast path": f"{auto['amp']}, {'channels_last' if auto['channels_last'] else 'contiguous'}"}
        if (auto["amp"], auto["channels_last"]) != ("fp32", False):
            row["fast path MiB"] = peak_memory(backbone, size, batch, auto["amp"],
                                               auto["channels_last"], steps)
        rows.append(row)
        log(f"  {row}")
    return {"title": "Peak resident memory of a short training run (CPU)",
            "note": f"ru_maxrss of a fresh process (one torch thread) after {steps} baseline "
                    "training steps on random tensors; the fast path is what `auto` picks here "
                    "(blank: it is fp32 contiguous).",
            "rows": rows, "goals": []}


# ----------------------------------------------------------------------------- sections
def throughput(methods: list[str], profile: str, batch: int, crop: int, peak: float,
               min_run_time: float = 1.0, num_classes: int = 200, log=print) -> dict:
    """Training throughput per method; a method that fails gets a row with its error."""
    from fgvc.study.config import resolve
    from fgvc.methods import method_class

    rows = []
    for m in methods:
        try:
            torch.manual_seed(0)
            model = build_model(m, profile, num_classes, input_size=crop)
            x = torch.randn(batch, 3, crop, crop)
            y = labels(batch, num_classes, method_class(m).pair_mode)
            flops = cost.count_flops(cost.method_step, model, x, True, y)
            opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
            s = cost.latency(train_step(model.train(), x, y, opt), min_run_time=min_run_time)
            rows.append({"method": m, "img/s": batch / s, "step s": s, "GFLOP/step": flops / 1e9,
                         "GFLOP/s": flops / s / 1e9, "MFU %": 100 * flops / s / peak})
        except Exception as e:  # noqa: BLE001 - one method failing does not stop the bench
            rows.append({"method": m, "error": f"{type(e).__name__}: {e}"[:200]})
        log(f"  {m}: {rows[-1]}")
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["method"] == "baseline"), None)
    for r in ok if base else ():
        r.update({"FLOPs / baseline": r["GFLOP/step"] / base["GFLOP/step"],
                  "FLOP/s / baseline": r["GFLOP/s"] / base["GFLOP/s"]})
    worst = min(ok, key=lambda r: r["FLOP/s / baseline"]) if base else None
    return {"title": f"Training throughput per method: {profile} profile",
            "note": f"{resolve('baseline', profile=profile)['model']['backbone']}, batch {batch}, {crop} px, "
                    "random weights; FLOPs of forward + loss + backward; MFU = FLOP/s / GEMM rate.",
            "rows": rows,
            "goals": [goal(f"lowest FLOP/s / baseline, {profile} ({worst['method']})",
                           f"{worst['FLOP/s / baseline']:.2f}", f">= {GOAL_FLOPS_FRACTION}",
                           worst["FLOP/s / baseline"] >= GOAL_FLOPS_FRACTION)] if worst else []}


def engine_overhead(profile: str = "scratch", batch: int = 32, crop: int = 64, steps: int = 8,
                    min_run_time: float = 1.0, num_classes: int = 24) -> dict:
    """Baseline training images/s through fgvc.engine.train_one_epoch vs a bare loop (same
    model, in-memory batches and optimizer)."""
    from fgvc.study.config import resolve
    from fgvc.engine import build_scheduler, train_one_epoch

    torch.manual_seed(0)
    model = build_model("baseline", profile, num_classes, input_size=crop)
    batches = [(torch.randn(batch, 3, crop, crop), torch.randint(0, num_classes, (batch,)))
               for _ in range(steps)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    sched = build_scheduler(opt, {**resolve("baseline", profile=profile)["train"], "lr": 1e-4}, steps)

    def bare():
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(x, y)["logits"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    engine = cost.latency(lambda: train_one_epoch(model, batches, opt, sched, torch.device("cpu"),
                                                  progress=False), min_run_time=min_run_time)
    bare_s = cost.latency(bare, min_run_time=min_run_time)
    overhead = 1 - bare_s / engine
    return {"title": "Engine overhead",
            "note": f"Baseline, {profile} profile, batch {batch}, {crop} px, {steps} in-memory "
                    "batches per timed epoch.",
            "rows": [{"loop": "fgvc.engine.train_one_epoch", "images/s": steps * batch / engine},
                     {"loop": "bare PyTorch loop", "images/s": steps * batch / bare_s}],
            "goals": [goal("engine overhead vs bare loop", f"{100 * overhead:.1f}%",
                           f"<= {100 * GOAL_ENGINE_OVERHEAD:.0f}%", overhead <= GOAL_ENGINE_OVERHEAD)]}


def render_rate(n_images: int = 160, image_size: int = 146, preset: str = "photo") -> float:
    """SynthBirds images rendered and JPEG-encoded per CPU second (process time, one thread)."""
    import io

    import numpy as np

    from fgvc.data import synthbirds

    draw = synthbirds.renderer(0, image_size=image_size, preset=preset)
    start = time.process_time()
    for k in range(n_images):
        draw(k % 16, np.random.default_rng([0, 2, k])).image.save(
            io.BytesIO(), "JPEG", quality=synthbirds.JPEG_QUALITY)
    return n_images / max(time.process_time() - start, 1e-9)


def data_path(n_images: int = 48, resize: int = 550, crop: int = 448, min_run_time: float = 1.0,
              workdir: str | os.PathLike | None = None, render_images: int = 160) -> dict:
    """Images/s of one loader worker: raw decode (+ resize), originals, prepared cache; and
    SynthBirds' photo-preset rendering per CPU second."""
    from torchvision.transforms import v2

    from fgvc.data import synthbirds
    from fgvc.data.base import ImageDataset, load_rgb
    from fgvc.data.cub import load_cub
    from fgvc.data.prepare import CachedImageDataset, PreparedImages, prepare_samples
    from fgvc.data.transforms import build_transforms

    with tempfile.TemporaryDirectory(prefix="fgvc-bench-") if workdir is None else nullcontext(workdir) as tmp:
        per = max(n_images // 4, 1)  # 2 classes x (train + test)
        split = load_cub(synthbirds.generate(Path(tmp) / "synthbirds", n_genera=1, species_per_genus=2,
                                             train_per_class=per, test_per_class=per, image_size=432))
        samples = split.train + split.test
        paths = [s.path for s in samples]
        tf = build_transforms(resize, crop, train=True)
        cache = PreparedImages(prepare_samples(samples, resize, Path(tmp) / "cache", log=None))
        resize_only = v2.Compose([v2.ToImage(), v2.Resize((resize, resize), antialias=True)])
        readers = {"raw decode only (PIL, RGB)": lambda i: load_rgb(paths[i]),
                    f"raw decode + resize to {resize}": lambda i: resize_only(load_rgb(paths[i])),
                    "loader from original JPEGs": ImageDataset(samples, tf).__getitem__,
                    "loader from prepared cache": CachedImageDataset(samples, tf, cache=cache).__getitem__}
        rates = {k: len(paths) / cost.latency(lambda get=get: [get(i) for i in range(len(paths))],
                                              min_run_time=min_run_time, num_threads=1)
                 for k, get in readers.items()}
        kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
    speedup = rates["loader from prepared cache"] / rates["loader from original JPEGs"]
    render = render_rate(render_images)
    rates["SynthBirds photo render + JPEG at 146 (per CPU s)"] = render
    return {"title": "Data pipeline (one worker)",
            "note": f"{len(paths)} SynthBirds JPEGs (432 x 432, mean {kb:.0f} kB) in the CUB layout; "
                    f"train transforms {resize} -> {crop}; one torch thread, as one DataLoader worker. "
                    f"Rendering: {render_images} images of the photo preset, process time.",
            "rows": [{"path": k, "images/s per worker": v} for k, v in rates.items()],
            "goals": [goal("prepared cache vs originals (loader images/s)", f"{speedup:.2f}x",
                           f">= {GOAL_CACHE_SPEEDUP:.0f}x", speedup >= GOAL_CACHE_SPEEDUP),
                      goal("SynthBirds photo rendering (images per CPU s)", f"{render:.0f}",
                           f">= {GOAL_RENDER_RATE:.1f}", render >= GOAL_RENDER_RATE)]}


def _methods(a, ctx, profile: str) -> dict:
    batch, crop = (a.paper_batch, a.paper_crop) if profile == "paper" else (ctx["q_batch"], ctx["q_crop"])
    return throughput(ctx["methods"], profile, batch, crop, ctx["peak"], a.min_run_time,
                      200 if profile == "paper" else 24, log=ctx["log"])


def _fastpath_backbones(a) -> tuple:
    return tuple((b, a.fastpath_size or s, a.fastpath_batch or n) for b, s, n in FASTPATH_BACKBONES)


def _memory(a, ctx) -> dict:
    from fgvc.study.config import list_profiles, load_profile

    sizes = {}
    for n in list_profiles():
        p = load_profile(n)
        crop, batch = p["data"]["crop"], p["train"]["batch_size"]
        if n == "paper":
            crop, batch = a.paper_crop, a.paper_batch
        sizes[n] = (a.memory_crop or crop, a.memory_batch or batch)
    return memory_table(sizes, a.memory_steps, log=ctx["log"])


SECTIONS: dict[str, Callable[[argparse.Namespace, dict], dict]] = {
    "engine": lambda a, ctx: engine_overhead("scratch", ctx["q_batch"], ctx["q_crop"], a.engine_steps,
                                             a.min_run_time),
    "paper": lambda a, ctx: _methods(a, ctx, "paper"),
    "scratch": lambda a, ctx: _methods(a, ctx, "scratch"),
    "data": lambda a, ctx: data_path(a.data_images, 550, 448, a.min_run_time),
    "fastpath": lambda a, ctx: fastpath_table(
        _fastpath_backbones(a), {"fp32": ctx["peak"], "bf16": ctx["peak_bf16"]},
        min_run_time=a.min_run_time, rounds=a.fastpath_rounds, log=ctx["log"]),
    "compile": lambda a, ctx: compile_speed("resnet18", ctx["q_crop"], ctx["q_batch"],
                                            a.compile_backend, a.min_run_time),
    "memory": _memory,
}


# ----------------------------------------------------------------------------- report, CLI
def table(rows: list[dict]) -> str:
    """Markdown of `rows` (one dict per row), floats to 3 significant digits, gaps empty."""
    import pandas as pd  # here: the sections run without pandas (tools/gpu_check.sh)

    df = pd.DataFrame(rows).map(lambda v: float(f"{v:.3g}") if isinstance(v, float) else v)
    return df.astype(object).where(df.notna(), "").to_markdown(index=False)


def render(res: dict) -> str:
    m, loads = res["machine"], (res["machine"]["load_average"], res["load_end"])
    goals = [g for s in res["sections"].values() for g in s["goals"]]
    out = ["# Benchmark", "", f"Written by `{res['command']}` on {res['finished']} in "
           f"{res['total_s'] / 60:.1f} min. Timings: torch.utils.benchmark.Timer medians; the "
           "machine may be shared, so see the load average.", "",
           "## Goals", "", table(goals) if goals else "(none measured)", "", "## Machine", "",
           f"- CPU: {m['cpu']}; {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
           f"torch threads {m['torch_threads']}; GPU: {m['gpu']}",
           f"- torch {m['torch']}, Python {m['python']}, {m['platform']}",
           "- load average at start: {}; at end: {}".format(*(", ".join(f"{x:.1f}" for x in l) for l in loads)),
           f"- fp32 GEMM rate (torch.mm, {res['gemm_n']} x {res['gemm_n']}): "
           f"**{res['gemm_rate'] / 1e9:.1f} GFLOP/s**; bf16 ({res['gemm_n_bf16']} x "
           f"{res['gemm_n_bf16']}): **{res['gemm_rate_bf16'] / 1e9:.1f} GFLOP/s**",
           f"- CPU capability (torch): {m['cpu_capability']}; native bf16: "
           f"{'yes' if m['native_bf16'] else 'no'}; fast-path table key: {m['cpu_kind']}", ""]
    for s in res["sections"].values():
        out += [f"## {s['title']}", "", s["note"], "", table(s["rows"]), ""]
    return "\n".join(out + training_runs_speedup())


def training_runs_speedup() -> list[str]:
    """The per-method speed-up of the CPU fast path measured with real training runs
    (fgvc.dev.fastpath_runs speed -> results/fastpath/fastpath.csv), where it exists."""
    import pandas as pd

    from fgvc.paths import results_dir

    path = results_dir() / "fastpath" / "fastpath.csv"
    if not path.is_file():
        return []
    rows = pd.read_csv(path)
    rows = rows[rows.part == "speed"]
    if rows.empty:
        return []
    tab = [{"method": r.method, "fast path / fp32 contiguous (train img/s)": r["mean"]}
           for _, r in rows.iterrows()]
    return ["## The fast path in real training runs (transfer profile)", "",
            "Each method's `full` model, one epoch, fp32 channels_last (this CPU's fast path for "
            "EfficientNet-Lite0) against fp32 contiguous, two runs at a time; from "
            "`results/fastpath/fastpath.md` (`python -m fgvc.dev.fastpath_runs speed`), not timed "
            "by this benchmark.", "", table(tab), ""]


def run_bench(a: argparse.Namespace, log=print) -> dict:
    from fgvc.study.config import load_profile
    from fgvc.methods import list_methods

    start = time.time()  # wall-clock bookkeeping of the whole run, not a code timing
    if a.threads:
        torch.set_num_threads(a.threads)
    scratch = load_profile("scratch")
    methods = a.methods.split(",") if a.methods else list_methods()
    methods = ["baseline"] * ("baseline" in methods) + [m for m in methods if m != "baseline"]
    info = machine_info()
    # bf16 without native support is emulated (many times slower): a smaller GEMM there.
    n_bf16 = a.gemm_n if info["native_bf16"] else min(a.gemm_n, 512)
    res: dict = {"machine": info, "command": a.command or "python -m fgvc.dev.bench",
                 "gemm_n": a.gemm_n, "gemm_n_bf16": n_bf16, "sections": {},
                 "gemm_rate": cost.gemm_rate(a.gemm_n, torch.float32, min_run_time=a.min_run_time),
                 "gemm_rate_bf16": cost.gemm_rate(n_bf16, torch.bfloat16, min_run_time=a.min_run_time)}
    log(f"GEMM rate fp32 {res['gemm_rate'] / 1e9:.1f}, bf16 {res['gemm_rate_bf16'] / 1e9:.1f} GFLOP/s")
    ctx = {"peak": res["gemm_rate"], "peak_bf16": res["gemm_rate_bf16"], "methods": methods, "log": log,
           "q_batch": a.scratch_batch or scratch["train"]["batch_size"], "q_crop": a.scratch_crop or scratch["data"]["crop"]}
    for name in a.sections.split(",") if a.sections else SECTIONS:
        log(f"{name}...")
        res["sections"][name] = SECTIONS[name](a, ctx)
    res.update(load_end=os.getloadavg(), total_s=time.time() - start,
               finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return res


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fgvc.dev.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="default: results/bench.md")
    p.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--paper-batch", type=int, default=2, help="batch at the paper size (even)")
    p.add_argument("--paper-crop", type=int, default=448)
    p.add_argument("--scratch-batch", type=int, default=None, help="default: the scratch profile's batch")
    p.add_argument("--scratch-crop", type=int, default=None, help="default: the scratch profile's crop")
    p.add_argument("--engine-steps", type=int, default=8, help="in-memory batches per timed epoch")
    p.add_argument("--data-images", type=int, default=48)
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per Timer measurement")
    p.add_argument("--fastpath-rounds", type=int, default=2, help="fastpath: best of this many timings")
    p.add_argument("--fastpath-size", type=int, default=None, help="fastpath: one input size for all backbones")
    p.add_argument("--fastpath-batch", type=int, default=None, help="fastpath: one batch for all backbones")
    p.add_argument("--compile-backend", default="inductor", help="compile: torch.compile backend")
    p.add_argument("--memory-steps", type=int, default=3, help="memory: training steps per process")
    p.add_argument("--memory-crop", type=int, default=None, help="memory: one crop for all profiles")
    p.add_argument("--memory-batch", type=int, default=None, help="memory: one batch for all profiles")
    p.add_argument("--fastpath-entry", action="store_true",
                   help="measure this CPU's entry of configs/fastpath.yaml, print it as YAML, exit")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    from fgvc import io as fio
    from fgvc.paths import results_dir

    a = parser().parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    a.command = a.command or " ".join(["python -m fgvc.dev.bench", *map(shlex.quote, args)])
    if a.fastpath_entry:
        import yaml

        entry = fastpath_entry(_fastpath_backbones(a), a.fastpath_rounds, a.min_run_time,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
        print(yaml.safe_dump({"kinds": entry}, sort_keys=False), end="")
        return 0
    res = run_bench(a, log=lambda s: print(s, flush=True))
    out = Path(a.out) if a.out else results_dir() / "bench.md"
    fio.write_text(out, render(res) + "\n")
    fio.write_json(out.with_suffix(".json"), res)
    print(f"wrote {out} ({res['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
