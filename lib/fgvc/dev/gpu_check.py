"""The GPU check: a short end-to-end pass over the GPU paths, for a bare GPU machine.

    tools/gpu_check.sh [--steps 200] [--out results/bench_gpu.md] [--sections ...] [--dry-run]
    make gpu-check

For a machine whose Python has torch >= 2.4 and torchvision but none of the study's other pins:
tools/gpu_check.sh puts lib/ on PYTHONPATH (nothing is installed) and nothing is downloaded
(random weights, random tensors; SynthBirds is generated where a run needs data). Sections:

- imports: versions, and which of the run path's other packages (pyyaml, pandas, Pillow, numpy,
  scipy, tqdm) are missing; sections that need a missing one are skipped and say so.
- methods: every registered method as the paper profile builds it (ResNet-50 at 448, the
  profile's batch, random weights), `--steps` training steps (forward + fp32 loss + backward
  + SGD, fgvc.engine.forward_loss, GradScaler with fp16) with amp on (train.amp auto: fp16 on
  CUDA) and off, channels_last as auto resolves it (on, on CUDA); each run stops early after
  `--max-s` seconds. Images/s, first-step seconds (cuDNN autotuning), first and last loss
  (finite?), peak GPU memory.
- throughput: fgvc.dev.bench.fastpath_table on the GPU: train and eval images/s of each profile's
  backbone x {fp32, fp16, bf16} x {contiguous, channels_last}, MFU against torch.mm's rate
  of each dtype (fp32 matmuls without TF32, torch's default; cuDNN convolutions may use TF32).
- torchrun: one `python -m torch.distributed.run --standalone --nproc-per-node 1 -m fgvc.study.train`
  of the scratch profile on a tiny SynthBirds (a few steps), through the whole run path.

Writes a markdown report (default results/bench_gpu.md; --out or FGVC_GPU_CHECK_OUT). Without
a CUDA GPU it prints one line and exits 0. `--dry-run` (or FGVC_GPU_CHECK_FORCE_CPU=1) runs
every section on the CPU at a tiny size (ResNet-18 at 64 px, a few steps; amp on = bf16), to
test the script itself. Timing goes through fgvc.study.cost; elapsed totals are datetimes.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

RUN_PATH_MODULES = ("yaml", "pandas", "PIL", "numpy", "scipy", "tqdm")
TINY_SYNTH = {"n_genera": 2, "species_per_genus": 2, "train_per_class": 12, "test_per_class": 4,
              "image_size": 72}
GPU_BACKBONES = (("efficientnet_lite0", 128, 64), ("resnet18", 64, 128), ("resnet50", 448, 16))


def missing_modules(names=RUN_PATH_MODULES) -> list[str]:
    return [n for n in names if importlib.util.find_spec(n) is None]


def can_import(*modules: str) -> str | None:
    """None when every module imports, else the reason (the first missing package)."""
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as e:
            return f"{m} needs {e.name or e}"
    return None


# ----------------------------------------------------------------------------- sections
def paper_settings(method: str) -> tuple[dict, int]:
    """(model settings, batch) of a method in the paper profile; without pyyaml the methods'
    Config defaults (ResNet-50 at 448) and batch 16."""
    try:
        from fgvc.study.config import resolve

        cfg = resolve(method, "full", profile="paper")
        return cfg["model"], cfg["train"]["batch_size"]
    except ImportError:
        return {"backbone": "resnet50", "input_size": 448}, 16


def method_run(method: str, device: str, amp_setting: str, steps: int, max_s: float,
               size: int | None = None, batch: int | None = None, backbone: str | None = None,
               num_classes: int = 200) -> dict:
    """`steps` training steps (or `max_s` seconds) of a method on random tensors."""
    from fgvc.study import cost
    from fgvc.study import fastpath
    from fgvc.dev.bench import labels
    from fgvc.engine import forward_loss
    from fgvc.methods import method_class

    model_cfg, paper_batch = paper_settings(method)
    model_cfg = {**model_cfg, **({"input_size": size} if size else {}),
                 **({"backbone": backbone} if backbone else {})}
    size, batch = model_cfg["input_size"], batch or paper_batch
    fast = fastpath.resolve(amp_setting, "auto", device, model_cfg["backbone"], warn=False)
    amp, layout = fast["amp"], fast["channels_last"]
    row = {"method": method, "amp": amp, "layout": "channels_last" if layout else "contiguous",
           "backbone": model_cfg["backbone"], "px": size, "batch": batch}
    dev = torch.device(device)
    torch.manual_seed(0)
    model = cost.create(method, model_cfg, num_classes, dev).train()
    x = torch.randn(batch, 3, size, size, device=dev)
    y = labels(batch, num_classes, method_class(method).pair_mode).to(dev)
    if layout:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    losses: list[float] = []

    def chunk(k: int) -> None:
        for _ in range(k):
            _, loss, _ = forward_loss(model, x, y, amp)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        losses.append(float(loss))

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        row["first step s"] = cost.wall_time(lambda: chunk(1), dev)
        done, seconds = 0, 0.0
        while done < steps and seconds < max_s:
            k = min(10, steps - done)
            seconds += cost.wall_time(lambda: chunk(k), dev)
            done += k
        row.update({"steps": done, "img/s": done * batch / max(seconds, 1e-9),
                    "loss first": losses[0], "loss last": losses[-1],
                    "finite": all(v == v and abs(v) != float("inf") for v in losses)})
        if dev.type == "cuda":
            row["peak GiB"] = torch.cuda.max_memory_allocated(dev) / 2**30
    except Exception as e:  # noqa: BLE001 - one failing run does not stop the check
        row["error"] = f"{type(e).__name__}: {e}"[:200]
    return row


def methods_section(a, device: str, log) -> dict:
    from fgvc.methods import list_methods

    dry = device == "cpu"
    on = "bf16" if dry else "auto"
    rows = []
    for m in (a.methods.split(",") if a.methods else list_methods()):
        for amp in (on, "off"):
            rows.append(method_run(m, device, amp, a.steps, a.max_s,
                                   size=64 if dry else None, batch=4 if dry else None,
                                   backbone="resnet18" if dry else None))
            log(f"  {rows[-1]}")
    bad = [r["method"] for r in rows if "error" in r or not r.get("finite", False)]
    return {"title": "Every method, paper profile, amp on and off",
            "note": f"Random weights and tensors; up to {a.steps} steps or {a.max_s:g} s per row "
                    "after one warm-up step; amp on = train.amp auto "
                    f"({'bf16 in this CPU dry run' if dry else 'fp16 + GradScaler on CUDA'}); "
                    "layout = what channels_last auto resolves to. "
                    + (f"**Failed or non-finite: {', '.join(sorted(set(bad)))}.**" if bad
                       else "Every run finished with finite losses."),
            "rows": rows, "ok": not bad}


def throughput_section(a, device: str, log) -> dict:
    from fgvc.study import cost
    from fgvc.dev.bench import fastpath_table

    dry = device == "cpu"
    backbones = (("resnet18", 32, 2),) if dry else GPU_BACKBONES
    dtypes = None if dry else ["fp32", "fp16", "bf16"]
    n = 64 if dry else 4096
    peaks = {d: cost.gemm_rate(n, dt, device=device, min_run_time=a.min_run_time)
             for d, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16))
             if not dry or d != "fp16"}
    s = fastpath_table(backbones, peaks, dtypes, min_run_time=a.min_run_time, device=device, log=log)
    s["note"] += " GEMM rates (torch.mm {0} x {0}): {1}.".format(
        n, ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in peaks.items()))
    s["ok"] = not any("error" in r for r in s["rows"])
    return s


def torchrun_section(a, device: str, log) -> dict:
    title = "torchrun, one process, the whole run path (fgvc.study.train)"
    why = next((f"missing {m}" for m in missing_modules()), None) or can_import("fgvc.data", "fgvc.study.run")
    if why:
        return {"title": title, "note": f"Skipped: {why}.", "rows": [], "ok": True}
    with tempfile.TemporaryDirectory(prefix="fgvc-gpu-check-") as tmp:
        env = {**os.environ, "FGVC_RESULTS": f"{tmp}/results", "FGVC_CHECKPOINTS": f"{tmp}/ckpt",
               "FGVC_DATA": f"{tmp}/data", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
        sets = {"train.epochs": 1, "train.max_steps": a.torchrun_steps, "train.batch_size": 8,
                "train.eval_batch_size": 16, "train.num_workers": 0, "data.synth": TINY_SYNTH,
                "train.device": device}
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                "-m", "fgvc.study.train", "--method", "baseline", "--profile", "scratch",
                "--run-id", "gpu-check", "--no-progress"]
        for k, v in sets.items():
            args += ["--set", f"{k}={json.dumps(v)}"]
        try:
            out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=a.torchrun_timeout)
            rc, text = out.returncode, out.stdout + out.stderr
        except subprocess.TimeoutExpired as e:
            rc, text = "timeout", str(e.stdout or "") + str(e.stderr or "")
        row: dict = {"exit": rc}
        metrics = Path(tmp, "results/runs/gpu-check/metrics.json")  # the run's own record
        if rc == 0 and metrics.is_file():
            m = json.loads(metrics.read_text())
            row.update({k: m[k] for k in ("run_id", "val_top1", "test_top1", "epochs", "world_size",
                                          "train_images_per_s") if k in m})
            row.update({k: m["machine"][k] for k in ("device", "amp", "channels_last")})
        else:
            row["log tail"] = " | ".join(text.strip().splitlines()[-3:])[-300:]
    log(f"  {row}")
    return {"title": title,
            "note": f"Scratch profile (ResNet-18 at 64 px), tiny generated SynthBirds, 1 epoch of "
                    f"{a.torchrun_steps} steps, train.device {device}.",
            "rows": [row], "ok": row["exit"] == 0}


SECTIONS = {"methods": methods_section, "throughput": throughput_section, "torchrun": torchrun_section}


# ----------------------------------------------------------------------------- report, CLI
def md_table(rows: list[dict]) -> str:
    """A GitHub markdown table (no pandas / tabulate needed), floats to 3 significant digits."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v).replace("|", "/")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def machine_lines(device: str) -> list[str]:
    import torchvision

    gpu = (f"{torch.cuda.get_device_name(0)} (compute capability "
           f"{'.'.join(map(str, torch.cuda.get_device_capability(0)))}, "
           f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
           f"cuDNN {torch.backends.cudnn.version()}") if device == "cuda" else "none (CPU dry run)"
    missing = missing_modules()
    return [f"- GPU: {gpu}", f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"Python {platform.python_version()}, {platform.platform()}",
            f"- run-path packages missing: {', '.join(missing) if missing else 'none'}"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("FGVC_GPU_CHECK_OUT"),
                   help="report path (default results/bench_gpu.md; env FGVC_GPU_CHECK_OUT)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--methods", default=None, help="comma-separated; default: every registered method")
    p.add_argument("--steps", type=int, default=200, help="training steps per method and amp setting")
    p.add_argument("--max-s", type=float, default=12.0, help="seconds at most per method and amp setting")
    p.add_argument("--min-run-time", type=float, default=0.3, help="seconds per throughput timing")
    p.add_argument("--torchrun-steps", type=int, default=5)
    p.add_argument("--torchrun-timeout", type=int, default=240)
    p.add_argument("--dry-run", action="store_true",
                   default=os.environ.get("FGVC_GPU_CHECK_FORCE_CPU") == "1",
                   help="run every section on the CPU at a tiny size (env FGVC_GPU_CHECK_FORCE_CPU=1)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU on this machine (torch {torch.__version__}); nothing checked.")
        return 0
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4):
        print(f"gpu_check: torch {torch.__version__} is older than 2.4; results may not hold")
    device = "cpu" if a.dry_run else "cuda"
    if a.dry_run:
        a.steps, a.max_s, a.min_run_time, a.torchrun_steps = min(a.steps, 2), min(a.max_s, 5.0), 0.01, 2
    log = lambda s: print(s, flush=True)  # noqa: E731
    start = datetime.now(timezone.utc)
    sections = {}
    for name in a.sections.split(","):
        log(f"{name}...")
        try:
            sections[name] = SECTIONS[name](a, device, log)
        except Exception as e:  # noqa: BLE001 - report what broke, keep the other sections
            sections[name] = {"title": name, "note": f"**Error: {type(e).__name__}: {e}**",
                              "rows": [], "ok": False}
    minutes = (datetime.now(timezone.utc) - start).total_seconds() / 60
    ok = all(s["ok"] for s in sections.values())
    out = ["# GPU check", "", f"`tools/gpu_check.sh {' '.join(argv if argv is not None else sys.argv[1:])}` "
           f"on {start.isoformat(timespec='seconds')}, {minutes:.1f} min; "
           f"{'every section passed' if ok else '**some section failed**'}.", "", "## Machine", "",
           *machine_lines(device), ""]
    for s in sections.values():
        out += [f"## {s['title']}", "", s["note"], "", md_table(s["rows"]), ""]
    from fgvc.paths import results_dir

    path = Path(a.out) if a.out else results_dir() / "bench_gpu.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    print(f"gpu_check: wrote {path} ({minutes:.1f} min){'' if ok else '; SOME SECTION FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
