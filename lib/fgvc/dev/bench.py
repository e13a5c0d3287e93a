"""The performance benchmark: one run on this machine, written to results/bench.md (+ .json).

    python -m fgvc.dev.bench [--out results/bench.md] [--sections engine,paper,...] [--quick]  (make bench)
    python -m fgvc.dev.bench --fastpath-entry     # this CPU's entry of configs/fastpath.yaml, as YAML

Each section of SECTIONS (engine overhead, training throughput per method for each profile of
THROUGHPUT_PROFILES, data path, fast paths, torch.compile, peak memory) returns a title, a note,
table rows and goal rows; render() writes them under the machine and its GEMM rates (torch.mm in
fp32 and bf16: the peaks for MFU). Parameters, MACs and latency per method are the complexity
table's (fgvc.study.complexity). Every count and timing goes through fgvc.study.cost (Timer
medians over >= --min-run-time s); what train.amp / channels_last "auto" pick is
fgvc.study.fastpath's, from the table that --fastpath-entry measures. Top-level imports are
torch's and the standard library's only: fgvc.dev.gpu_check, for bare GPU machines, uses
labels and fastpath_table.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from fgvc.study import cost

GOAL_ENGINE_OVERHEAD = 0.05  # engine within 5% of a bare loop
GOAL_FLOPS_FRACTION = 0.80   # every method >= 80% of the baseline's FLOP/s
GOAL_CACHE_SPEEDUP = 2.0     # prepared cache >= 2x the loader from originals
GOAL_RENDER_RATE = 1600 / 45  # SynthBirds photo preset: 1,600 images in <= 45 CPU s (the default set, 3,472, in <= 98)

THROUGHPUT_PROFILES = ("transfer", "paper", "scratch")  # training throughput per method: a table each
# (transfer: the default study, Lite0 at its input size with one backbone recipe)
PAPER_BATCH = 2       # the paper profile's 16 at 448 px would take minutes a step on a CPU
NUM_CLASSES = 200     # CUB's; the head's share of a step's cost is negligible
# The profiles' backbones at the sizes the fast-path table is measured at (ResNet-50 at 224,
# not the paper profile's 448, to keep a CPU measurement short).
FASTPATH_BACKBONES = (("efficientnet_lite0", 128, 16), ("resnet18", 64, 32), ("resnet50", 224, 8))
QUICK = (32, 2)       # --quick: crop and batch of every section (checks that the bench runs)


def machine_info() -> dict:
    from fgvc.study import fastpath

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": fastpath.cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "cpu_capability": fastpath.cpu_capability(), "cpu_kind": fastpath.cpu_kind(),
            "native_bf16": fastpath.native_bf16(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_average": os.getloadavg(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def goal(name: str, measured: str, target: str, ok: bool) -> dict:
    return {"goal": name, "measured": measured, "target": target, "status": "PASS" if ok else "MISS"}


def _error(e: Exception, n: int = 200) -> str:
    return f"{type(e).__name__}: {e}"[:n]


def labels(batch: int, num_classes: int, pair_mode: str | None) -> torch.Tensor:
    """Targets laid out as the method's sampler would (same-class pairs if it needs them)."""
    if pair_mode == "adjacent":
        return (torch.arange(batch) // 2) % num_classes
    if pair_mode == "halves":
        return torch.arange(batch) % (batch // 2) % num_classes
    return torch.arange(batch) % num_classes


def sizes(profile: str, quick: bool = False) -> tuple[int, int]:
    """(crop, batch) at which a profile is measured: its own, the paper's at PAPER_BATCH."""
    from fgvc.study.config import load_profile

    p = load_profile(profile)
    return QUICK if quick else (p["data"]["crop"],
                                PAPER_BATCH if profile == "paper" else p["train"]["batch_size"])


def profile_model(method: str, profile: str, crop: int) -> dict:
    """The model settings of the method's `full` variant in the profile, at `crop`."""
    from fgvc.study.config import resolve

    return {**resolve(method, "full", profile=profile)["model"], "input_size": crop}


def bench_step(method: str, model_cfg: dict, batch: int, amp: str = "fp32",
               channels_last: bool = False, train: bool = True, device: str = "cpu",
               compile_backend: str | None = None) -> Callable[[], None]:
    """One step of `method` built from `model_cfg` (random weights) on a random batch at its
    input_size, labelled as the method's sampler pairs them, as fgvc.engine runs it: training =
    forward under autocast (`amp`) + fp32 loss + backward + SGD update; eval (train=False) =
    forward without grad. `compile_backend`: the forward through torch.compile. The step's
    `model` attribute is the model it runs."""
    from fgvc.engine import autocast, forward_loss
    from fgvc.methods import method_class

    torch.manual_seed(0)
    size = model_cfg["input_size"]
    model = cost.create(method, model_cfg, NUM_CLASSES, device).train(train)
    x = torch.randn(batch, 3, size, size, device=device)
    y = labels(batch, NUM_CLASSES, method_class(method).pair_mode).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        if not train:
            with torch.no_grad(), autocast(x.device, amp):
                return forward(x)
        _, loss, _ = forward_loss(forward, x, y, amp, core=model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step.model = model  # what the step runs, for a look at its weights
    return step


# ----------------------------------------------------------------------------- sections
def engine_overhead(profile: str = "scratch", batch: int = 32, crop: int = 64, steps: int = 8,
                    min_run_time: float = 1.0) -> dict:
    """Baseline training images/s through fgvc.engine.train_one_epoch vs a bare loop (same
    model, in-memory batches and optimizer)."""
    from fgvc.engine import build_scheduler, train_one_epoch
    from fgvc.study.config import resolve

    torch.manual_seed(0)
    model = cost.create("baseline", profile_model("baseline", profile, crop), NUM_CLASSES)
    batches = [(torch.randn(batch, 3, crop, crop), torch.randint(0, NUM_CLASSES, (batch,)))
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


def throughput(methods: list[str], profile: str, batch: int, crop: int, peak: float,
               min_run_time: float = 1.0, log=print) -> dict:
    """Training throughput per method as the profile builds it: images/s, FLOPs of a step
    (forward + loss + backward), FLOP/s, MFU; a method that fails gets a row with its error."""
    rows = []
    for m in methods:
        try:
            step = bench_step(m, profile_model(m, profile, crop), batch)
            flops, s = cost.count_flops(step), cost.latency(step, min_run_time=min_run_time)
            rows.append({"method": m, "img/s": batch / s, "step s": s, "GFLOP/step": flops / 1e9,
                         "GFLOP/s": flops / s / 1e9, "MFU %": 100 * flops / s / peak})
        except Exception as e:  # noqa: BLE001 - one method failing does not stop the bench
            rows.append({"method": m, "error": _error(e)})
        log(f"  {m}: {rows[-1]}")
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["method"] == "baseline"), None)
    for r in ok if base else ():
        r.update({"FLOPs / baseline": r["GFLOP/step"] / base["GFLOP/step"],
                  "FLOP/s / baseline": r["GFLOP/s"] / base["GFLOP/s"]})
    worst = min(ok, key=lambda r: r["FLOP/s / baseline"]) if base else None
    return {"title": f"Training throughput per method: {profile} profile",
            "note": f"{profile_model('baseline', profile, crop)['backbone']}, batch {batch}, {crop} "
                    "px, random weights; FLOPs of forward + loss + backward; MFU = FLOP/s / GEMM rate.",
            "rows": rows,
            "goals": [goal(f"lowest FLOP/s / baseline, {profile} ({worst['method']})",
                           f"{worst['FLOP/s / baseline']:.2f}", f">= {GOAL_FLOPS_FRACTION}",
                           worst["FLOP/s / baseline"] >= GOAL_FLOPS_FRACTION)] if worst else []}


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
    """Images/s of one loader worker (one torch thread) with the train transforms: raw decode
    (+ resize), from original JPEGs, from the prepared cache (fgvc.data.prepare), on SynthBirds
    JPEGs of 432 x 432 (a CUB photo's pixels); and SynthBirds' photo-preset rendering per CPU s."""
    from torchvision.transforms import v2

    from fgvc.data import synthbirds
    from fgvc.data.base import ImageDataset, load_rgb
    from fgvc.data.cub import load_cub
    from fgvc.data.prepare import CachedImageDataset, PreparedImages, prepare_samples
    from fgvc.data.transforms import build_transforms

    with tempfile.TemporaryDirectory(prefix="fgvc-bench-") as scratch:
        tmp = Path(workdir or scratch)
        per = max(n_images // 4, 1)  # 2 classes x (train + test)
        split = load_cub(synthbirds.generate(tmp / "synthbirds", n_genera=1, species_per_genus=2,
                                             train_per_class=per, test_per_class=per, image_size=432))
        samples = split.samples
        paths = [s.path for s in samples]
        tf = build_transforms(resize, crop, train=True)
        cache = PreparedImages(prepare_samples(samples, resize, tmp / "cache", log=None))
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
    render = rates["SynthBirds photo render + JPEG at 146 (per CPU s)"] = render_rate(render_images)
    return {"title": "Data pipeline (one worker)",
            "note": f"{len(paths)} SynthBirds JPEGs (432 x 432, mean {kb:.0f} kB) in the CUB layout; "
                    f"train transforms {resize} -> {crop}; one torch thread, as one DataLoader worker. "
                    f"Rendering: {render_images} images of the photo preset, process time.",
            "rows": [{"path": k, "images/s per worker": v} for k, v in rates.items()],
            "goals": [goal("prepared cache vs originals (loader images/s)", f"{speedup:.2f}x",
                           f">= {GOAL_CACHE_SPEEDUP:.0f}x", speedup >= GOAL_CACHE_SPEEDUP),
                      goal("SynthBirds photo rendering (images per CPU s)", f"{render:.0f}",
                           f">= {GOAL_RENDER_RATE:.1f}", render >= GOAL_RENDER_RATE)]}


def fastpath_table(backbones=FASTPATH_BACKBONES, peaks: dict[str, float] | None = None,
                   dtypes: list[str] | None = None, min_run_time: float = 1.0, rounds: int = 1,
                   device: str = "cpu", num_threads: int | None = None,
                   modes: tuple[str, ...] = ("train", "eval"), log=print) -> dict:
    """Images/s of the baseline's training step and eval forward (`modes`) on each backbone x
    dtype x layout, the best of `rounds` rounds that each time every configuration once (a
    shared machine's load changes reach all alike); MFU against the GEMM rate of the dtype in
    use (`peaks`); and what train.amp / train.channels_last "auto" pick here.
    `dtypes`: default fp32, plus bf16 where the CPU has it natively (fp16 and bf16 on CUDA)."""
    from fgvc.study import fastpath

    native = fastpath.native_bf16()
    if dtypes is None:
        dtypes = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32"] + ["bf16"] * native
    peaks, rows = peaks or {}, []
    for backbone, size, batch in backbones:
        cfg = {"backbone": backbone, "input_size": size}
        auto = fastpath.resolve("auto", "auto", device, backbone, warn=False)
        flops = {m: cost.count_flops(bench_step("baseline", cfg, batch, train=m == "train",
                                                device=device)) / batch for m in modes if peaks}
        runs = [({"backbone": backbone, "px": size, "batch": batch, "dtype": amp,
                  "layout": "channels_last" if cl else "contiguous"},
                 {m: bench_step("baseline", cfg, batch, amp, cl, m == "train", device) for m in modes})
                for amp in dtypes for cl in (False, True)]
        for _ in range(rounds):
            for row, steps in runs:
                for m, step in steps.items() if "error" not in row else ():
                    try:
                        s = cost.latency(step, min_run_time=min_run_time, warmup=2,
                                         num_threads=num_threads)
                    except Exception as e:  # noqa: BLE001 - e.g. a dtype this device lacks
                        row["error"] = _error(e, 160)
                        break
                    row[f"{m} img/s"] = max(row.get(f"{m} img/s", 0.0), batch / s)
                    if row["dtype"] in peaks:
                        row[f"{m} MFU %"] = 100 * flops[m] * row[f"{m} img/s"] / peaks[row["dtype"]]
        for row, _ in runs:
            picked = (row["dtype"], row["layout"] == "channels_last") == (auto["amp"], auto["channels_last"])
            rows.append({**row, "auto": "yes" if picked else ""})
            log(f"  {rows[-1]}")
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


def fastpath_entry(backbones=FASTPATH_BACKBONES, rounds: int = 3, min_run_time: float = 1.0,
                   log=print) -> dict:
    """This machine's entry of configs/fastpath.yaml: the train images/s (one thread) of
    :func:`fastpath_table` and the choices fgvc.study.fastpath.choose makes from them."""
    from fgvc.study import fastpath

    rows = fastpath_table(backbones, min_run_time=min_run_time, rounds=rounds, num_threads=1,
                          modes=("train",), log=log)["rows"]
    entry = {"measured": {"date": datetime.now(timezone.utc).date().isoformat(),
                          "cpu": fastpath.cpu_model(), "capability": fastpath.cpu_capability(),
                          "torch": str(torch.__version__), "threads": 1, "rounds": rounds,
                          "load_average": [round(x, 1) for x in os.getloadavg()]},
             "backbones": {}}
    for backbone, size, batch in backbones:
        rates = {f"{r['dtype']}_{r['layout']}": r["train img/s"] for r in rows
                 if r["backbone"] == backbone and "train img/s" in r}
        entry["backbones"][backbone] = {
            "setting": {"size": size, "batch": batch},
            "train_img_per_s": {k: round(v, 2) for k, v in rates.items()},
            **fastpath.choose(rates, fastpath.native_bf16())}
    return {fastpath.cpu_kind(): entry}


def compile_speed(backbone: str = "resnet18", size: int = 64, batch: int = 32,
                  backend: str = "inductor", min_run_time: float = 1.0, device: str = "cpu") -> dict:
    """torch.compile of the baseline's training step: compile time (the first call) and
    steady-state images/s beside eager."""
    rows = []
    for mode, compile_backend in (("eager", None), (f"torch.compile ({backend})", backend)):
        row = {"mode": mode}
        try:
            step = bench_step("baseline", {"backbone": backbone, "input_size": size}, batch,
                              device=device, compile_backend=compile_backend)
            row["first call s"] = cost.wall_time(step, device)
            row["img/s"] = batch / cost.latency(step, min_run_time=min_run_time, warmup=1)
            if rows:
                row["speed-up"] = row["img/s"] / rows[0]["img/s"]
        except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor
            row["error"] = _error(e)
        rows.append(row)
    return {"title": f"torch.compile ({device})",
            "note": f"Baseline on {backbone} at {size} px, batch {batch}, fp32 training step; "
                    "the first call of the compiled step includes compilation.",
            "rows": rows, "goals": []}


def memory_child(spec: str) -> None:
    """In the fresh process of :func:`peak_memory`: `steps` training steps (bench_step's
    arguments in `spec`, JSON), then the peak resident memory (ru_maxrss) in MiB."""
    import json
    import resource

    a = json.loads(spec)
    torch.set_num_threads(1)
    steps = a.pop("steps")
    if steps:
        step = bench_step("baseline", **a)
        for _ in range(steps):
            step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def peak_memory(backbone: str, size: int, batch: int, amp: str = "fp32",
                channels_last: bool = False, steps: int = 3) -> float:
    """Peak resident MiB of a fresh process (one torch thread) that imports torch and runs
    `steps` baseline training steps (0: the import alone)."""
    import json
    import subprocess

    spec = json.dumps({"model_cfg": {"backbone": backbone, "input_size": size}, "batch": batch,
                       "amp": amp, "channels_last": channels_last, "steps": steps})
    out = subprocess.run([sys.executable, "-c", "import sys; from fgvc.dev.bench import memory_child; "
                          "memory_child(sys.argv[1])", spec], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def memory_table(profiles: dict[str, tuple[int, int]], steps: int = 3, log=print) -> dict:
    """Peak resident memory of a short training run of each profile's backbone, fp32
    contiguous vs the fast path `auto` picks on this CPU. `profiles`: name -> (crop, batch)."""
    from fgvc.study import fastpath
    from fgvc.study.config import load_profile

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


def _fastpath_backbones(quick: bool) -> tuple:
    return tuple((b, *QUICK) for b, _, _ in FASTPATH_BACKBONES) if quick else FASTPATH_BACKBONES


def _memory(a: argparse.Namespace, ctx: dict) -> dict:
    from fgvc.study.config import list_profiles

    return memory_table({p: sizes(p, a.quick) for p in list_profiles()}, 1 if a.quick else 3,
                        log=ctx["log"])


SECTIONS: dict[str, Callable[[argparse.Namespace, dict], dict]] = {
    "engine": lambda a, ctx: engine_overhead("scratch", *sizes("scratch", a.quick)[::-1],
                                             1 if a.quick else 8, a.min_run_time),
    **{p: lambda a, ctx, p=p: throughput(ctx["methods"], p, *sizes(p, a.quick)[::-1], ctx["peak"],
                                         a.min_run_time, log=ctx["log"])
       for p in THROUGHPUT_PROFILES},
    "data": lambda a, ctx: (data_path(4, 80, 64, a.min_run_time, render_images=4) if a.quick
                            else data_path(48, 550, 448, a.min_run_time)),
    "fastpath": lambda a, ctx: fastpath_table(
        _fastpath_backbones(a.quick), {"fp32": ctx["peak"], "bf16": ctx["peak_bf16"]},
        min_run_time=a.min_run_time, rounds=a.fastpath_rounds, log=ctx["log"]),
    "compile": lambda a, ctx: compile_speed("resnet18", *sizes("scratch", a.quick),
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
    return "\n".join(out)


def run_bench(a: argparse.Namespace, log=print) -> dict:
    """Every section of `a.sections` (default: all) after the machine and its GEMM rates."""
    from fgvc.methods import list_methods

    start = time.time()  # wall-clock bookkeeping of the whole run, not a code timing
    methods = a.methods.split(",") if a.methods else list_methods()
    methods = ["baseline"] * ("baseline" in methods) + [m for m in methods if m != "baseline"]
    info = machine_info()
    # bf16 without native support is emulated (many times slower): a smaller GEMM there.
    n_bf16 = a.gemm_n if info["native_bf16"] else min(a.gemm_n, 512)
    res: dict = {"machine": info, "command": a.command, "gemm_n": a.gemm_n, "gemm_n_bf16": n_bf16,
                 "gemm_rate": cost.gemm_rate(a.gemm_n, torch.float32, min_run_time=a.min_run_time),
                 "gemm_rate_bf16": cost.gemm_rate(n_bf16, torch.bfloat16, min_run_time=a.min_run_time),
                 "sections": {}}
    log(f"GEMM rate fp32 {res['gemm_rate'] / 1e9:.1f}, bf16 {res['gemm_rate_bf16'] / 1e9:.1f} GFLOP/s")
    ctx = {"peak": res["gemm_rate"], "peak_bf16": res["gemm_rate_bf16"], "methods": methods, "log": log}
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
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK[0]} px, batch {QUICK[1]}, one step, 4 images, a 64 x 64 GEMM and 0.01 s "
                        "per timing in every section: checks that the bench runs, measures nothing")
    p.add_argument("--gemm-n", type=int, default=None, help="GEMM size for the peaks (default 2048)")
    p.add_argument("--min-run-time", type=float, default=None, help="s per Timer measurement (default 1)")
    p.add_argument("--fastpath-rounds", type=int, default=2, help="fastpath: best of this many rounds")
    p.add_argument("--compile-backend", default="inductor", help="compile: torch.compile backend")
    p.add_argument("--fastpath-entry", action="store_true",
                   help="measure this CPU's entry of configs/fastpath.yaml, print it as YAML, exit")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p


def main(argv: list[str] | None = None) -> int:
    from fgvc import io as fio
    from fgvc.paths import results_dir

    a = parser().parse_args(argv)
    a.command = " ".join(["python -m fgvc.dev.bench",
                          *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    a.gemm_n = a.gemm_n or (64 if a.quick else 2048)
    a.min_run_time = a.min_run_time or (0.01 if a.quick else 1.0)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.fastpath_entry:
        import yaml

        entry = fastpath_entry(_fastpath_backbones(a.quick), a.fastpath_rounds, a.min_run_time,
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
