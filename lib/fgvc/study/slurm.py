"""The grid on a Slurm cluster, through submitit: one job per run, submitted as a job array.

    python -m fgvc.study.grid --profile paper --backend slurm
    FGVC_SLURM='{"partition": "gpu", "time_min": 720, "array_parallelism": 16}' \\
        python -m fgvc.study.grid --profile paper --backend slurm

Settings (defaults below), merged in this order: ``DEFAULTS``, the profile's ``slurm:``
section (if the profile file has one), the JSON in env ``FGVC_SLURM``, then the `settings`
argument of :func:`submit_grid`:

- ``cluster``: None = Slurm when ``sbatch`` is available, else submitit's local executor;
  "slurm", "local" (one subprocess per job, on this machine) or "debug" (in this process,
  at collection time: for tests and debugging).
- ``partition``, ``time_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``,
  ``array_parallelism`` (the most array jobs running at once, sbatch ``--array=...%N``),
  ``extra`` (a dict of further ``slurm_*`` submitit parameters, e.g. ``{"slurm_account": "x"}``).
- ``launcher``: "notebook" (default: each job executes notebooks/10_train.ipynb through
  papermill, exactly like the local grid, and keeps the executed notebook) or "train"
  (``python -m fgvc.study.train``; with ``gpus_per_node`` > 1, ``torchrun --nproc-per-node G``,
  one DDP run over the job's GPUs).
- ``wait``: True = wait for every job and report done / failed (failures go to
  results/failures.json as in the local grid); False = submit, print the job ids and return
  (run the same grid command again later: complete runs are skipped, missing ones resubmitted).
- ``folder``: submitit's logs and pickles (default ``checkpoints_dir()/_slurm``; ``%j`` = job id).

A backend of :mod:`fgvc.study.grid`, which it never imports: the grid hands :func:`submit_grid` the
few functions a job needs (``execute`` one run through the notebook, the grid's ``run_lock``,
``write_failures``), so the two modules form no import circle.

A job skips a run that is already complete and takes the run's lock (results/.locks), so two
grids never run the same run twice. The job sees the same FGVC_RESULTS / FGVC_CHECKPOINTS /
FGVC_DATA as the submitting process (use paths on a shared filesystem).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, ContextManager, TextIO

DEFAULTS: dict = {
    "cluster": None,
    "partition": None,
    "time_min": 24 * 60,
    "gpus_per_node": 1,
    "cpus_per_task": 8,
    "mem_gb": 32,
    "array_parallelism": 32,
    "extra": {},
    "launcher": "notebook",
    "wait": True,
    "folder": None,
}
_ENV_KEYS = ("FGVC_RESULTS", "FGVC_CHECKPOINTS", "FGVC_DATA", "FGVC_CACHE")


def slurm_settings(profile: str | None = None, settings: dict | None = None) -> dict:
    """DEFAULTS <- profile's `slurm:` section <- env FGVC_SLURM (JSON) <- `settings`."""
    from fgvc.study.config import load_profile

    merged = dict(DEFAULTS)
    layers = [load_profile(profile).get("slurm") or {} if profile else {},
              json.loads(os.environ.get("FGVC_SLURM") or "{}"), settings or {}]
    for layer in layers:
        unknown = sorted(set(layer) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown Slurm setting(s) {unknown}; valid: {sorted(DEFAULTS)}")
        merged.update(layer)
    if merged["launcher"] not in ("notebook", "train"):
        raise ValueError(f"slurm launcher {merged['launcher']!r}; valid: ['notebook', 'train']")
    if merged["cluster"] not in (None, "slurm", "local", "debug"):
        raise ValueError(f"slurm cluster {merged['cluster']!r}; valid: None, 'slurm', 'local', 'debug'")
    return merged


def make_executor(s: dict):
    """A submitit AutoExecutor configured from settings `s`."""
    import submitit

    from fgvc.paths import checkpoints_dir

    folder = s["folder"] or str(checkpoints_dir() / "_slurm" / "%j")
    cluster = s["cluster"]
    if cluster is None:
        cluster = "slurm" if shutil.which("sbatch") else "local"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"name": "fgvc", "timeout_min": s["time_min"], "gpus_per_node": s["gpus_per_node"],
              "cpus_per_task": s["cpus_per_task"], "mem_gb": s["mem_gb"], "nodes": 1,
              "tasks_per_node": 1, "slurm_array_parallelism": s["array_parallelism"],
              **s["extra"]}
    if s["partition"]:
        params["slurm_partition"] = s["partition"]
    ex.update_parameters(**params)
    return ex


def train_command(cfg: dict, nproc: int = 1) -> list[str]:
    """The `python -m fgvc.study.train` (or torchrun) command line of a resolved config: the config
    itself is passed (--config JSON), so the job runs exactly what the grid planned; only the
    machine-dependent choices are resolved on the node (fgvc.study.run.resolve_machine)."""
    args = ["-m", "fgvc.study.train", "--config", json.dumps(cfg), "--no-progress"]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={nproc}", *args[1:]]
    return [sys.executable, *args]


# What the grid hands its backend (fgvc.study.grid.execute, .run_lock, .write_failures):
Execute = Callable[..., None]                    # execute(cfg, threads): one run through the notebook
RunLock = Callable[[str], ContextManager[bool]]  # run_lock(run_id): True if this process holds it
WriteFailures = Callable[[dict, list], object]   # write_failures(failed, grid_ids)


def run_job(cfg: dict, launcher: str = "notebook", threads: int | None = None,
            nproc: int = 1, env: dict | None = None, *, execute: Execute | None = None,
            run_lock: RunLock) -> tuple[str, float]:
    """What one Slurm job does: run `cfg` unless complete or locked; ("done"|"skipped"|"locked", s).

    `execute` (the notebook launcher) and `run_lock` are the grid's, passed in by it.
    """
    os.environ.update(env or {})
    from fgvc.paths import ROOT, results_dir
    from fgvc.study.run import is_complete

    t0 = time.time()
    with run_lock(cfg["run_id"]) as mine:
        if not mine:
            return "locked", 0.0
        if is_complete(cfg):
            return "skipped", 0.0
        if launcher == "notebook":
            if execute is None:
                raise ValueError("the notebook launcher needs the grid's execute function")
            execute(cfg, threads)
        else:
            run_dir = results_dir() / "runs" / cfg["run_id"]
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = train_command(cfg, nproc)
            if threads and nproc == 1:
                cmd += ["--threads", str(threads)]
            with open(run_dir / "train.log", "w") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, "TQDM_DISABLE": "1"})
            if proc.returncode:
                tail = (run_dir / "train.log").read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"fgvc.study.train exited with {proc.returncode}: "
                                   f"{tail[0] if tail else ''} (log: runs/{cfg['run_id']}/train.log)")
    return "done", time.time() - t0


def submit_grid(todo_configs: list[dict], result: dict, out: TextIO = sys.stdout,
                settings: dict | None = None, *, execute: Execute, run_lock: RunLock,
                write_failures: WriteFailures) -> dict:
    """Submit one job per config (as one array); wait and collect unless settings say not to.

    `result` is the grid's result dict ({"done", "skipped", "failed", "locked"}); it is filled
    in and returned, with "jobs": {run_id: job_id}. `execute`, `run_lock` and `write_failures`
    are the grid's (:func:`fgvc.study.grid.execute`, ...): each job runs through them, so a run on
    the cluster is exactly a run of the local grid; `execute` and `run_lock` are pickled into
    every job (module-level functions travel as their module and name).
    """
    from fgvc import io
    from fgvc.paths import results_dir

    result.setdefault("jobs", {})
    if not todo_configs:
        return result
    s = slurm_settings(todo_configs[0]["profile"], settings)
    ex = make_executor(s)
    env = {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}
    nproc = max(int(s["gpus_per_node"] or 1), 1) if s["launcher"] == "train" else 1
    with ex.batch():
        jobs = [ex.submit(run_job, cfg, s["launcher"], s["cpus_per_task"], nproc, env,
                          execute=execute, run_lock=run_lock)
                for cfg in todo_configs]
    for cfg, job in zip(todo_configs, jobs):
        result["jobs"][cfg["run_id"]] = str(job.job_id)
    print(f"slurm: submitted {len(jobs)} job(s) [{ex.cluster}], at most {s['array_parallelism']} "
          f"at once; logs in {s['folder'] or 'checkpoints/_slurm'}", file=out, flush=True)
    if not s["wait"]:
        for cfg, job in zip(todo_configs, jobs):
            print(f"  {cfg['run_id']}: job {job.job_id}", file=out)
        print("slurm: not waiting; run the same grid command again to collect and resubmit "
              "what is missing", file=out, flush=True)
        return result
    start = time.time()
    for i, (cfg, job) in enumerate(zip(todo_configs, jobs), 1):
        rid = cfg["run_id"]
        try:
            status, secs = job.result()
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the grid goes on
            msg = str(e).strip().splitlines()
            err = f"{type(e).__name__}: {msg[-1] if msg else ''}"[:500]
            result["failed"][rid] = err
            print(f"[{i}/{len(jobs)}] {rid} (job {job.job_id}): FAILED: {err}", file=out, flush=True)
            continue
        if status == "done":
            m = io.read_json(results_dir() / "runs" / rid / "metrics.json")
            note = f"test top-1 {m['test_top1']:.1f}% (val {m['val_top1']:.1f}%) in {secs:.0f} s"
            result["done"].append(rid)
        else:
            note = "running in another grid" if status == "locked" else "already complete"
            result["locked" if status == "locked" else "skipped"].append(rid)
        print(f"[{i}/{len(jobs)}] {rid} (job {job.job_id}): {note}", file=out, flush=True)
    write_failures(result["failed"], [c["run_id"] for c in todo_configs] + result["skipped"])
    print(f"grid: {len(result['done'])} done, {len(result['failed'])} failed, "
          f"{len(result['skipped'])} skipped, {len(result['locked'])} locked elsewhere; "
          f"total {(time.time() - start) / 60:.1f} min", file=out, flush=True)
    return result
