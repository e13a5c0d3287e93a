"""The performance benchmark: one run on this machine, written to results/bench.md (+ .json).

    python -m fgvc.bench [--out results/bench.md] [--sections engine,paper,scratch,data] ...  (make bench)

Its own figures (parameters, MACs and latency per method are the complexity table's):
- GEMM rate: torch.mm FLOP/s (fp32; fgvc.cost.gemm_rate takes a dtype), the peak for MFU.
- engine: baseline training images/s through fgvc.engine.train_one_epoch vs a bare PyTorch loop
  on the same model and in-memory batches. Goal: overhead <= 5%.
- paper, scratch: training throughput per method (ResNet-50 at 448, a small batch; the scratch
  profile's backbone, crop and batch): images/s, FLOPs of a step (forward + loss + backward),
  FLOP/s and MFU. Goal: every method >= 80% of the baseline's FLOP/s.
- data: images/s of one loader worker (one torch thread) with the paper's 550 -> 448 train
  transforms, from original JPEGs, from the prepared cache (fgvc.data.prepare), and raw decode
  (+ resize), on SynthBirds JPEGs of 432 x 432 (a CUB photo's pixels). Goal: cache >= 2x.
Timings: torch.utils.benchmark.Timer medians over >= --min-run-time s (fgvc.cost.latency); FLOPs:
fgvc.cost.count_flops. Each section (SECTIONS) returns a title, a note, table rows and goal
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

import pandas as pd
import torch
import torch.nn.functional as F

from . import cost

GOAL_ENGINE_OVERHEAD = 0.05  # engine within 5% of a bare loop
GOAL_FLOPS_FRACTION = 0.80   # every method >= 80% of the baseline's FLOP/s
GOAL_CACHE_SPEEDUP = 2.0     # prepared cache >= 2x the loader from originals


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.lower().startswith("model name")), cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
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
    from .config import resolve

    return cost.create(method, {**resolve(method, "full", profile=profile)["model"], **model_over},
                       num_classes)


def train_step(model, x, y, optimizer) -> Callable[[], None]:
    def step():
        loss, _ = model.loss(model(x, y), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


# ----------------------------------------------------------------------------- sections
def throughput(methods: list[str], profile: str, batch: int, crop: int, peak: float,
               min_run_time: float = 1.0, num_classes: int = 200, log=print) -> dict:
    """Training throughput per method; a method that fails gets a row with its error."""
    from .config import resolve
    from .methods import method_class

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
    from .config import resolve
    from .engine import build_scheduler, train_one_epoch

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


def data_path(n_images: int = 48, resize: int = 550, crop: int = 448, min_run_time: float = 1.0,
              workdir: str | os.PathLike | None = None) -> dict:
    """Images/s of one loader worker: raw decode (+ resize), originals, prepared cache."""
    from torchvision.transforms import v2

    from .data import synthbirds
    from .data.base import ImageDataset, load_rgb
    from .data.cub import load_cub
    from .data.prepare import CachedImageDataset, PreparedImages, prepare_samples
    from .data.transforms import build_transforms

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
    return {"title": "Data pipeline (one worker)",
            "note": f"{len(paths)} SynthBirds JPEGs (432 x 432, mean {kb:.0f} kB) in the CUB layout; "
                    f"train transforms {resize} -> {crop}; one torch thread, as one DataLoader worker.",
            "rows": [{"path": k, "images/s per worker": v} for k, v in rates.items()],
            "goals": [goal("prepared cache vs originals (loader images/s)", f"{speedup:.2f}x",
                           f">= {GOAL_CACHE_SPEEDUP:.0f}x", speedup >= GOAL_CACHE_SPEEDUP)]}


def _methods(a, ctx, profile: str) -> dict:
    batch, crop = (a.paper_batch, a.paper_crop) if profile == "paper" else (ctx["q_batch"], ctx["q_crop"])
    return throughput(ctx["methods"], profile, batch, crop, ctx["peak"], a.min_run_time,
                      200 if profile == "paper" else 24, log=ctx["log"])


SECTIONS: dict[str, Callable[[argparse.Namespace, dict], dict]] = {
    "engine": lambda a, ctx: engine_overhead("scratch", ctx["q_batch"], ctx["q_crop"], a.engine_steps,
                                             a.min_run_time),
    "paper": lambda a, ctx: _methods(a, ctx, "paper"),
    "scratch": lambda a, ctx: _methods(a, ctx, "scratch"),
    "data": lambda a, ctx: data_path(a.data_images, 550, 448, a.min_run_time),
}


# ----------------------------------------------------------------------------- report, CLI
def table(rows: list[dict]) -> str:
    """Markdown of `rows` (one dict per row), floats to 3 significant digits, gaps empty."""
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
           f"**{res['gemm_rate'] / 1e9:.1f} GFLOP/s**", ""]
    for s in res["sections"].values():
        out += [f"## {s['title']}", "", s["note"], "", table(s["rows"]), ""]
    return "\n".join(out)


def run_bench(a: argparse.Namespace, log=print) -> dict:
    from .config import load_profile
    from .methods import list_methods

    start = time.time()  # wall-clock bookkeeping of the whole run, not a code timing
    if a.threads:
        torch.set_num_threads(a.threads)
    scratch = load_profile("scratch")
    methods = a.methods.split(",") if a.methods else list_methods()
    methods = ["baseline"] * ("baseline" in methods) + [m for m in methods if m != "baseline"]
    res: dict = {"machine": machine_info(), "command": a.command or "python -m fgvc.bench",
                 "gemm_n": a.gemm_n, "sections": {},
                 "gemm_rate": cost.gemm_rate(a.gemm_n, torch.float32, min_run_time=a.min_run_time)}
    log(f"GEMM rate {res['gemm_rate'] / 1e9:.1f} GFLOP/s")
    ctx = {"peak": res["gemm_rate"], "methods": methods, "log": log,
           "q_batch": a.scratch_batch or scratch["train"]["batch_size"], "q_crop": a.scratch_crop or scratch["data"]["crop"]}
    for name in a.sections.split(",") if a.sections else SECTIONS:
        log(f"{name}...")
        res["sections"][name] = SECTIONS[name](a, ctx)
    res.update(load_end=os.getloadavg(), total_s=time.time() - start,
               finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return res


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fgvc.bench", description=__doc__,
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
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
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
