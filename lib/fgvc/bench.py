"""The performance benchmark: one run on this machine, written to results/bench.md.

    python -m fgvc.bench [--out results/bench.md] [--paper-batch 2] [--steps 2] [--compile] ...
    make bench

Measured side by side, in one process (so every figure shares the machine's state):

1. fp32 GEMM peak (torch.mm, n x n) — the machine's limit for MFU.
2. Per method, at the paper configuration (ResNet-50, 448, a small batch) and at the quick
   profile (its backbone, crop and batch): FLOPs of one training step (forward + loss +
   backward, counted by torch.utils.flop_counter.FlopCounterMode), step time, achieved
   FLOP/s and MFU; step time and FLOP/s relative to the baseline next to the ratios of
   training FLOPs and inference MACs. Goal: every method >= 80% of the baseline's FLOP/s
   (no overhead beyond its extra compute).
3. Engine overhead: baseline training images/s through fgvc.engine.train_one_epoch vs a bare
   PyTorch loop on the same model and batches (in memory: no data loading). Goal: <= 5%.
4. Inference latency per method: batch 1 at the paper size, batch 32 at the quick size.
5. Data pipeline images/s per worker (one process, as one DataLoader worker runs) with the
   paper's 550 -> 448 train transforms: from original JPEGs, from the prepared cache
   (fgvc.data.prepare), and the raw decode + resize rate of the same files. Images:
   generated CUB-sized (500 x 375) JPEGs in the CUB layout. Goal: cache >= 2x originals.
6. Optional (--compile): torch.compile'd vs eager training step of the baseline at the
   quick size, with the compile time.

Timings are the best of repeated measurements, candidates timed in turns (A B C A B C) so a
change of load hits all alike; on a shared machine other processes still add noise, so the
load average is reported with the figures.
"""
from __future__ import annotations

import argparse
import io
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

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

GOAL_ENGINE_OVERHEAD = 0.05      # engine within 5% of a bare loop
GOAL_FLOPS_FRACTION = 0.80       # every method >= 80% of the baseline's FLOP/s
GOAL_CACHE_SPEEDUP = 2.0         # prepared cache >= 2x the loader from originals


# ----------------------------------------------------------------------------- helpers
def _best_time(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Fewest seconds of `reps` calls of fn after `warmup` calls (best-of: the figure least
    disturbed by other processes on a shared machine)."""
    return round_robin({"fn": fn}, reps, warmup)["fn"]


def round_robin(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Best-of-`reps` seconds of each fn, timed in turns (A B C A B C ...) so that a change in
    the machine's load hits every candidate alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(reps, 1)):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- compute
def gemm_peak(n: int = 2048, reps: int = 3, device: str = "cpu") -> float:
    """fp32 matmul FLOP/s: 2 n^3 over the best time of torch.mm on n x n matrices."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def mm():
        torch.mm(a, b)
        sync()

    return 2 * n ** 3 / _best_time(mm, reps, warmup=2)


def _labels(batch: int, num_classes: int, pair_mode: str | None) -> torch.Tensor:
    """Targets laid out as the method's sampler would (same-class pairs if it needs them)."""
    if pair_mode == "adjacent":
        return (torch.arange(batch) // 2) % num_classes
    if pair_mode == "halves":
        return torch.arange(batch) % (batch // 2) % num_classes
    return torch.arange(batch) % num_classes


def build_model(method: str, profile: str, num_classes: int, **model_over) -> torch.nn.Module:
    """The method as the profile configures it (variant "full"), with random weights."""
    from .config import resolve
    from .methods import create_method

    cfg = resolve(method, "full", profile=profile)
    model_cfg = {**cfg["model"], "weights": "none", **model_over}
    return create_method(method, num_classes, **model_cfg)


def train_step_fn(model, x, y, optimizer) -> Callable[[], None]:
    def step():
        out = model(x, y)
        loss, _ = model.loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def count_train_flops(model, x, y) -> int:
    """FLOPs of forward + loss + backward of one training step."""
    model.train()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        out = model(x, y)
        loss, _ = model.loss(out, y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(fc.get_total_flops())


@torch.no_grad()
def count_inference_macs(model, x) -> int:
    model.eval()
    with FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops()) // 2


def setup_method(method: str, profile: str, batch: int, crop: int, num_classes: int = 200) -> dict:
    """A method at one size, ready to time: training FLOPs, inference MACs and a step function."""
    from .methods import method_class

    torch.manual_seed(0)
    model = build_model(method, profile, num_classes, input_size=crop)
    x = torch.randn(batch, 3, crop, crop)
    y = _labels(batch, num_classes, method_class(method).pair_mode)
    flops = count_train_flops(model, x, y)
    macs = count_inference_macs(model, x[:1])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return {"method": method, "batch": batch, "crop": crop, "train_flops": flops,
            "infer_macs": macs, "params": sum(p.numel() for p in model.parameters()),
            "step": train_step_fn(model, x, y, opt)}


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:200]


def measure_methods(methods: list[str], profile: str, batch: int, crop: int, steps: int,
                    num_classes: int = 200, log=None) -> list[dict]:
    """Per method: training FLOPs, best step time of `steps` (methods timed in turns),
    FLOP/s and inference MACs. A method that fails gets a row with its error."""
    rows, ready = [], {}
    for m in methods:
        try:
            ready[m] = setup_method(m, profile, batch, crop, num_classes)
            ready[m]["step"]()  # warm-up here, so a failing step is caught per method
        except Exception as e:  # noqa: BLE001 - one method failing does not stop the bench
            ready.pop(m, None)
            rows.append({"method": m, "error": _error(e)})
            if log:
                log(f"  {m}: {rows[-1]['error']}")
    best = round_robin({m: r["step"] for m, r in ready.items()}, steps, warmup=0)
    for m, r in ready.items():
        r = {k: v for k, v in r.items() if k != "step"}
        r.update(step_s=best[m], flops_per_s=r["train_flops"] / best[m])
        rows.append(r)
        if log:
            log(f"  {m}: step {r['step_s']:.3f} s, {_g(r['flops_per_s'])} GFLOP/s")
    order = {m: i for i, m in enumerate(methods)}
    return sorted(rows, key=lambda r: order[r["method"]])


def latencies(methods: list[str], profile: str, batch: int, crop: int, reps: int,
              num_classes: int = 200) -> dict[str, dict]:
    """Best seconds of one eval-mode forward of `batch` images, per method (timed in turns)."""
    fns, out = {}, {}
    x = torch.randn(batch, 3, crop, crop)
    for m in methods:
        try:
            torch.manual_seed(0)
            model = build_model(m, profile, num_classes, input_size=crop).eval()

            def fwd(model=model):
                with torch.no_grad():
                    model(x)
            fwd()  # warm-up
            fns[m] = fwd
        except Exception as e:  # noqa: BLE001
            out[m] = {"error": _error(e)}
    best = round_robin(fns, reps, warmup=0)
    out.update({m: {"seconds": t} for m, t in best.items()})
    return out


def engine_vs_bare(profile: str = "quick", batch: int = 32, crop: int = 64, steps: int = 10,
                   trials: int = 3, num_classes: int = 24) -> dict:
    """Baseline training images/s through fgvc.engine.train_one_epoch vs a bare loop.

    Both run the same model on the same in-memory batches with the same optimizer; they
    alternate `trials` times and the best of each is kept (a noisy machine hits both).
    """
    from .engine import build_scheduler, train_one_epoch
    from .config import resolve

    t = resolve("baseline", profile=profile)["train"]
    torch.manual_seed(0)
    model = build_model("baseline", profile, num_classes, input_size=crop)
    batches = [(torch.randn(batch, 3, crop, crop), torch.randint(0, num_classes, (batch,)))
               for _ in range(steps)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    sched = build_scheduler(opt, {**t, "lr": 1e-4}, steps)
    device = torch.device("cpu")

    def engine() -> float:
        t0 = time.perf_counter()
        train_one_epoch(model, batches, opt, sched, device, progress=False)
        return steps * batch / (time.perf_counter() - t0)

    def bare() -> float:
        model.train()
        t0 = time.perf_counter()
        for x, y in batches:
            out = model(x, y)
            loss = F.cross_entropy(out["logits"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch / (time.perf_counter() - t0)

    bare(), engine()  # warm-up
    e, b = [], []
    for _ in range(trials):
        b.append(bare())
        e.append(engine())
    eng, bar = max(e), max(b)
    return {"engine_ips": eng, "bare_ips": bar, "overhead": 1 - eng / bar,
            "batch": batch, "crop": crop, "steps": steps, "trials": trials}


def compile_vs_eager(profile: str = "quick", batch: int = 32, crop: int = 64, steps: int = 5,
                     num_classes: int = 24) -> dict:
    """torch.compile'd vs eager training step of the baseline (compile time separately)."""
    torch.manual_seed(0)
    model = build_model("baseline", profile, num_classes, input_size=crop)
    x, y = torch.randn(batch, 3, crop, crop), torch.randint(0, num_classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    eager = _best_time(train_step_fn(model, x, y, opt), steps, warmup=1)
    compiled = torch.compile(model)
    compiled.loss = model.loss
    step = train_step_fn(compiled, x, y, opt)
    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    comp = _best_time(step, steps, warmup=1)
    return {"eager_step_s": eager, "compiled_step_s": comp, "speedup": eager / comp,
            "compile_s": compile_s, "batch": batch, "crop": crop}


# ----------------------------------------------------------------------------- data
def write_cub_like(root: str | os.PathLike, n_images: int = 48, n_classes: int = 4,
                   size: tuple[int, int] = (500, 375), quality: int = 90, seed: int = 0) -> Path:
    """A CUB_200_2011-layout folder of `n_images` CUB-sized JPEGs with photo-like content.

    Smooth colour fields plus texture and a few shapes, so the files (about 60-90 kB) and
    their decode cost resemble real 500 x 375 bird photos rather than flat or pure-noise
    images. Returns the dataset root (``<root>/CUB_200_2011``).
    """
    from PIL import Image, ImageDraw

    base = Path(root) / "CUB_200_2011"
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / 80
    images, labels, split, boxes, classes = [], [], [], [], []
    for c in range(n_classes):
        classes.append(f"{c + 1} {c + 1:03d}.Bird_{c}")
    for i in range(1, n_images + 1):
        c = (i - 1) % n_classes
        phase = rng.uniform(0, 6, 3)
        field = np.stack([np.sin(xx * rng.uniform(0.5, 1.5) + yy * rng.uniform(0.3, 1.2) + p)
                          for p in phase], -1) * 60 + 128
        arr = np.clip(field + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 90)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        rel = f"{c + 1:03d}.Bird_{c}/Bird_{c}_{i:04d}.jpg"
        path = base / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=quality)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {c + 1}")
        split.append(f"{i} {1 if i % 4 else 0}")
        boxes.append(f"{i} 50.0 40.0 300.0 250.0")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(classes) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return base


def data_pipeline(n_images: int = 48, resize: int = 550, crop: int = 448, reps: int = 3,
                  workdir: str | os.PathLike | None = None) -> dict:
    """Images/s of one loader worker: originals vs prepared cache vs raw decode + resize."""
    from .data import ImageDataset, build_transforms, load_rgb
    from .data.prepare import CachedImageDataset, PreparedImages, prepare_samples
    from .data.cub import load_cub
    from torchvision.transforms import v2

    ctx = tempfile.TemporaryDirectory(prefix="fgvc-bench-") if workdir is None else nullcontext(workdir)
    with ctx as tmp:
        root = write_cub_like(tmp, n_images)
        split = load_cub(root)
        samples = split.train + split.test
        tf = build_transforms(resize, crop, train=True)
        originals = ImageDataset(samples, tf)
        t0 = time.perf_counter()
        folder = prepare_samples(samples, resize, Path(tmp) / "cache", log=None)
        prepare_s = time.perf_counter() - t0
        cached = CachedImageDataset(samples, tf, cache=PreparedImages(folder))
        resize_only = v2.Compose([v2.ToImage(), v2.Resize((resize, resize), antialias=True)])
        paths = [s.path for s in samples]

        def rate(fn: Callable[[int], object]) -> Callable[[], float]:
            def go() -> float:
                t = time.perf_counter()
                for i in range(len(paths)):
                    fn(i)
                return len(paths) / (time.perf_counter() - t)
            return go

        runs = {"raw_decode_resize": rate(lambda i: resize_only(load_rgb(paths[i]))),
                "raw_decode": rate(lambda i: load_rgb(paths[i])),
                "originals": rate(lambda i: originals[i]),
                "cache": rate(lambda i: cached[i])}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a DataLoader worker runs torch with one thread
        try:
            for fn in runs.values():
                fn()  # warm the page cache and the code paths
            out = {k: [] for k in runs}
            for _ in range(reps):  # interleaved, so machine noise hits all alike
                for k, fn in runs.items():
                    out[k].append(fn())
        finally:
            torch.set_num_threads(threads)
        res = {k: max(v) for k, v in out.items()}
        sizes = [os.path.getsize(p) for p in paths]
        res.update(n_images=len(paths), resize=resize, crop=crop, prepare_s=prepare_s,
                   mean_jpeg_kb=sum(sizes) / len(sizes) / 1024,
                   cache_mb=os.path.getsize(Path(folder) / "images.npy") / 2**20,
                   speedup=res["cache"] / res["originals"])
        return res


# ----------------------------------------------------------------------------- report
def _g(x: float) -> str:
    return f"{x / 1e9:.1f}"


def _status(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def method_table(rows: list[dict], peak: float) -> list[str]:
    base = next((r for r in rows if r["method"] == "baseline"), None)
    out = ["| method | train GFLOP/step | step s | GFLOP/s | MFU | step / baseline | "
           "train FLOPs / baseline | inference MACs / baseline | FLOP/s / baseline | goal >= 0.80 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['method']} | error: {r['error']} | | | | | | | | |")
            continue
        if base:
            fr = r["flops_per_s"] / base["flops_per_s"]
            rel = (f"{r['step_s'] / base['step_s']:.2f} | {r['train_flops'] / base['train_flops']:.2f} | "
                   f"{r['infer_macs'] / base['infer_macs']:.2f} | {fr:.2f} | "
                   f"{_status(fr >= GOAL_FLOPS_FRACTION)}")
        else:
            rel = "- | - | - | - | -"
        out.append(f"| {r['method']} | {_g(r['train_flops'])} | {r['step_s']:.3f} | "
                   f"{_g(r['flops_per_s'])} | {100 * r['flops_per_s'] / peak:.0f}% | {rel} |")
    return out


def render(res: dict) -> str:
    m, a = res["machine"], res["args"]
    peak = res["gemm_peak"]
    lines = ["# Benchmark", "",
             f"Written by `{res['command']}` on {res['finished']} in {res['total_s'] / 60:.1f} min.",
             "Regenerate with `make bench` (or the command above). Best of repeated timings, candidates timed in turns; "
             "the machine is shared, so see the load average.", "",
             "## Machine", "",
             f"- CPU: {m['cpu']}; {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
             f"torch threads {m['torch_threads']}; GPU: {m['cuda']}",
             f"- torch {m['torch']}, Python {m['python']}, {m['platform']}",
             f"- load average at start: {', '.join(f'{x:.1f}' for x in m.get('load_average', ()))}; "
             f"at end: {', '.join(f'{x:.1f}' for x in res.get('load_end', ()))}",
             f"- fp32 GEMM peak (torch.mm {a['gemm_n']}x{a['gemm_n']}, best of "
             f"{len(res.get('gemm_samples', [peak]))} samples taken between the sections: "
             f"{', '.join(_g(x) for x in res.get('gemm_samples', [peak]))}): **{_g(peak)} GFLOP/s**", ""]
    summary = []
    if "engine" in res:
        e = res["engine"]
        ok = e["overhead"] <= GOAL_ENGINE_OVERHEAD
        summary.append(f"| engine overhead vs bare loop | {100 * e['overhead']:.1f}% | <= 5% | {_status(ok)} |")
        lines += ["## Engine overhead", "",
                  f"Baseline at the quick profile size (batch {e['batch']}, {e['crop']} px), "
                  f"{e['steps']} in-memory batches, best of {e['trials']} alternating trials.", "",
                  "| loop | images/s |", "|---|---:|",
                  f"| fgvc.engine.train_one_epoch | {e['engine_ips']:.1f} |",
                  f"| bare PyTorch loop | {e['bare_ips']:.1f} |",
                  f"| overhead (goal <= 5%) | {100 * e['overhead']:.1f}% {_status(ok)} |", ""]
    for key, title in (("paper", "Paper configuration"), ("quick", "Quick profile")):
        if key not in res:
            continue
        rows = res[key]
        ok_rows = [r for r in rows if "error" not in r]
        lines += [f"## Training step per method: {title}", "",
                  f"{res[key + '_desc']}; random weights (speed does not depend on them); "
                  "FLOPs from FlopCounterMode over forward + loss + backward; MFU = FLOP/s / GEMM peak.", ""]
        lines += method_table(rows, peak) + [""]
        base = next((r for r in ok_rows if r["method"] == "baseline"), None)
        if base:
            worst = min(ok_rows, key=lambda r: r["flops_per_s"])
            fr = worst["flops_per_s"] / base["flops_per_s"]
            summary.append(f"| lowest FLOP/s / baseline, {key} ({worst['method']}) | {fr:.2f} | "
                           f">= 0.80 | {_status(fr >= GOAL_FLOPS_FRACTION)} |")
    if "latency" in res:
        lat = res["latency"]
        lines += ["## Inference latency", "",
                  f"Eval mode, no grad. Batch 1 at the paper size ({a['paper_crop']} px, "
                  f"{lat['paper_backbone']}); batch {a['latency_batch']} at the quick size "
                  f"({lat['quick_crop']} px, {lat['quick_backbone']}).", "",
                  f"| method | batch 1 @ {a['paper_crop']} (ms) | batch {a['latency_batch']} @ "
                  f"{lat['quick_crop']} (ms) | per image @ {lat['quick_crop']} (ms) |",
                  "|---|---:|---:|---:|"]
        for name, r in lat["rows"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error']} | | |")
                continue
            lines.append(f"| {name} | {1000 * r['b1']:.0f} | {1000 * r['bN']:.0f} | "
                         f"{1000 * r['bN'] / a['latency_batch']:.1f} |")
        lines.append("")
    if "data" in res:
        d = res["data"]
        ok = d["speedup"] >= GOAL_CACHE_SPEEDUP
        summary.append(f"| prepared cache vs originals (loader images/s) | {d['speedup']:.2f}x | "
                       f">= 2x | {_status(ok)} |")
        lines += ["## Data pipeline (one worker)", "",
                  f"{d['n_images']} generated CUB-sized JPEGs (500 x 375, mean {d['mean_jpeg_kb']:.0f} kB) "
                  f"in the CUB layout; train transforms {d['resize']} -> {d['crop']} "
                  "(resize, random crop, flip, normalise); one process with one torch thread, as one "
                  "DataLoader worker. Cache: `fgvc.data.prepare` (uint8 "
                  f"{d['resize']}x{d['resize']}, {d['cache_mb'] / d['n_images']:.2f} MB/image, prepared in "
                  f"{d['prepare_s']:.1f} s).", "",
                  "| path | images/s per worker |", "|---|---:|",
                  f"| raw decode only (PIL, RGB) | {d['raw_decode']:.0f} |",
                  f"| raw decode + resize to {d['resize']} | {d['raw_decode_resize']:.0f} |",
                  f"| loader from original JPEGs | {d['originals']:.0f} |",
                  f"| loader from prepared cache | {d['cache']:.0f} |",
                  f"| cache / originals (goal >= 2x) | {d['speedup']:.2f}x {_status(ok)} |", ""]
    if "compile" in res:
        c = res["compile"]
        lines += ["## torch.compile (opt-in)", "",
                  f"Baseline training step at batch {c['batch']}, {c['crop']} px.", "",
                  "| | value |", "|---|---:|",
                  f"| eager step (s) | {c['eager_step_s']:.3f} |",
                  f"| compiled step (s) | {c['compiled_step_s']:.3f} |",
                  f"| speedup | {c['speedup']:.2f}x |",
                  f"| compile time, first step (s) | {c['compile_s']:.1f} |", ""]
    elif "compile_error" in res:
        lines += ["## torch.compile (opt-in)", "", f"failed: {res['compile_error']}", ""]
    else:
        lines += ["torch.compile: not measured (opt-in: `python -m fgvc.bench --compile`).", ""]
    head = ["## Goals", "", "| goal | measured | target | status |", "|---|---:|---:|---|"] + summary + [""]
    return "\n".join(lines[:lines.index("## Machine")] + head + lines[lines.index("## Machine"):])


# ----------------------------------------------------------------------------- main
SECTIONS = ("engine", "paper", "quick", "latency", "data")


def run_bench(a: argparse.Namespace, log=print) -> dict:
    from .config import load_profile
    from .methods import list_methods

    start = time.time()
    if a.threads:
        torch.set_num_threads(a.threads)
    res: dict = {"machine": machine_info(), "args": vars(a),
                 "command": a.command or "python -m fgvc.bench"}
    methods = a.methods.split(",") if a.methods else list_methods()
    if "baseline" in methods:
        methods = ["baseline"] + [m for m in methods if m != "baseline"]
    sections = a.sections.split(",") if a.sections else list(SECTIONS)
    quick = load_profile("quick")
    q_crop = a.quick_crop or quick["data"]["crop"]
    q_batch = a.quick_batch or quick["train"]["batch_size"]
    q_backbone = quick["model"]["backbone"]
    # The peak is sampled before and after every section and the best sample kept: one
    # sample taken while other processes load the machine would understate it.
    peaks: list[float] = []

    def sample_peak() -> None:
        peaks.append(gemm_peak(a.gemm_n))
        res["gemm_peak"], res["gemm_samples"] = max(peaks), list(peaks)
        log(f"  GEMM {_g(peaks[-1])} GFLOP/s (best so far {_g(max(peaks))})")

    log(f"GEMM peak ({a.gemm_n})...")
    sample_peak()
    if "engine" in sections:
        log("engine vs bare loop...")
        res["engine"] = engine_vs_bare("quick", q_batch, q_crop, a.engine_steps, a.engine_trials)
        log(f"  overhead {100 * res['engine']['overhead']:.1f}%")
        sample_peak()
    for key, profile, batch, crop, steps in (("paper", "paper", a.paper_batch, a.paper_crop, a.steps),
                                             ("quick", "quick", q_batch, q_crop, a.quick_steps)):
        if key not in sections:
            continue
        log(f"{key}: {len(methods)} methods (batch {batch}, {crop} px)...")
        rows = measure_methods(methods, profile, batch, crop, steps,
                               num_classes=200 if key == "paper" else 24, log=log)
        res[key] = rows
        sample_peak()
        backbone = "resnet50" if key == "paper" else q_backbone
        res[key + "_desc"] = (f"{backbone}, batch {batch}, {crop} px, best of {steps} steps "
                              "after 1 warm-up, methods timed in turns")
    if "latency" in sections:
        lat = {"paper_backbone": "resnet50", "quick_backbone": q_backbone, "quick_crop": q_crop,
               "rows": {}}
        log("latency...")
        b1 = latencies(methods, "paper", 1, a.paper_crop, a.latency_reps)
        bn = latencies(methods, "quick", a.latency_batch, q_crop, a.latency_reps, num_classes=24)
        for m in methods:
            err = b1[m].get("error") or bn[m].get("error")
            lat["rows"][m] = {"error": err} if err else {"b1": b1[m]["seconds"],
                                                          "bN": bn[m]["seconds"]}
        res["latency"] = lat
        sample_peak()
    if "data" in sections:
        log("data pipeline...")
        res["data"] = data_pipeline(a.data_images, 550, 448, a.data_reps)
        log(f"  cache {res['data']['speedup']:.2f}x originals")
        sample_peak()
    if a.compile:
        log("torch.compile...")
        try:
            res["compile"] = compile_vs_eager("quick", q_batch, q_crop, a.quick_steps)
        except Exception as e:  # noqa: BLE001
            res["compile_error"] = f"{type(e).__name__}: {e}"[:300]
    try:
        res["load_end"] = os.getloadavg()
    except OSError:
        pass
    res["total_s"] = time.time() - start
    res["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return res


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fgvc.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="default: results/bench.md")
    p.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--paper-batch", type=int, default=2, help="batch at the paper size (even)")
    p.add_argument("--paper-crop", type=int, default=448)
    p.add_argument("--steps", type=int, default=2, help="timed training steps at the paper size")
    p.add_argument("--quick-batch", type=int, default=None, help="default: the quick profile's batch")
    p.add_argument("--quick-crop", type=int, default=None, help="default: the quick profile's crop")
    p.add_argument("--quick-steps", type=int, default=5, help="timed training steps at the quick size")
    p.add_argument("--engine-steps", type=int, default=8)
    p.add_argument("--engine-trials", type=int, default=3)
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--latency-reps", type=int, default=3)
    p.add_argument("--data-images", type=int, default=48)
    p.add_argument("--data-reps", type=int, default=3)
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow on CPU)")
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    from . import io as fio
    from .paths import results_dir

    a = parser().parse_args(argv)
    args = sys.argv[1:] if argv is None else argv
    a.command = a.command or " ".join(["python -m fgvc.bench", *map(shlex.quote, args)])
    res = run_bench(a, log=lambda s: print(s, flush=True))
    out = Path(a.out) if a.out else results_dir() / "bench.md"
    fio.write_text(out, render(res) + "\n")
    fio.write_json(out.with_suffix(".json"), res)
    print(f"wrote {out} ({res['total_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
