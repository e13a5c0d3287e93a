"""Run a grid of (method, variant, dataset, seed) through papermill: the study.

    python -m fgvc.study.grid --profile transfer [--methods baseline,lafe] [--seeds 0,1] [--workers 2]
    python -m fgvc.study.grid --profile transfer --plan          # each run's state, time to go
    python -m fgvc.study.grid --profile transfer --replace stale # retrain runs whose settings changed

Each run is one papermill execution of notebooks/10_train.ipynb, given the run's resolved
configuration; its records (config.json, metrics.json, history.csv, predictions.json, a short
log.txt) go to
results/runs/<run_id>/, the executed notebook and papermill's output beside its checkpoints
(checkpoints_dir()/<run_id>/). Runs already complete are skipped, a
failing run is recorded in results/failures.json and the grid goes on; the exit code is
non-zero if anything failed. A lock per run (results/.locks/) keeps two grids started on
the same results folder from running the same run twice.

A run whose record holds other settings than the plan gives it ("stale": a finished run or
checkpoint of another config hash under the same run id, e.g. after a default changed) is left
as it is and the exit code is non-zero; `--replace stale` archives such records
(results/runs/.replaced/, fgvc.study.run.archive_run) and retrains them, `--replace all` does so
for every run of the plan, complete or not. `--plan` prints each run's state (done, running: a
grid holds its lock, pending, failed: in failures.json, stale) and an estimate of the time the
runs still to do take.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from fgvc import io
from fgvc.study.config import list_variants, load_profile, resolve
from fgvc.methods import list_methods
from fgvc.paths import NOTEBOOKS, ROOT, checkpoints_dir, portable, results_dir
from fgvc.study.run import archive_run, conflict, is_complete, record_state

TRAIN_NOTEBOOK = NOTEBOOKS / "10_train.ipynb"


@dataclass(frozen=True)
class RunSpec:
    method: str
    variant: str
    dataset: str
    seed: int
    profile: str
    overrides: tuple = ()   # sorted (key, value) pairs, hashable
    data_root: str | None = None   # None: the dataset's default root (data/<name>)

    def config(self) -> dict:
        return resolve(self.method, self.variant, self.dataset, self.profile, self.seed,
                       data_root=self.data_root, overrides=dict(self.overrides))


def _pick(value, every: list) -> list:
    if value in (None, "all"):
        return list(every)
    return list(value)


def grid_blocks(prof: dict, grid: str = "study") -> list[dict]:
    """The blocks of a profile's named grid. `grid:` in a profile is either a list of blocks
    (the grid "study") or a mapping of grid names to lists; no `grid:` = one empty block
    (every method x variant x the profile's dataset x its seeds)."""
    grids = prof.get("grid") or [{}]
    if isinstance(grids, list):
        grids = {"study": grids}
    if grid not in grids:
        raise ValueError(f"unknown grid {grid!r} of this profile; valid: {sorted(grids)}")
    return grids[grid]


def plan(profile: str, methods=None, variants=None, datasets=None, seeds=None,
         overrides: dict | None = None, grid: str = "study",
         data_root: str | None = None) -> list[RunSpec]:
    """The runs of a grid. Without arguments: the blocks of the profile's grid `grid` (see
    `grid_blocks`); arguments narrow or replace them. `data_root`: where every run's dataset
    lives (a grid of one dataset kept outside data/, e.g. CUB-30)."""
    prof = load_profile(profile)
    blocks = grid_blocks(prof, grid)
    over = tuple(sorted((overrides or {}).items()))
    out: list[RunSpec] = []
    for block in blocks:
        for m in _pick(methods or block.get("methods"), list_methods()):
            for v in _pick(variants or block.get("variants"), list_variants(m)):
                if v not in list_variants(m):
                    continue  # a variant name that this method does not have
                for d in _pick(datasets or block.get("datasets"), [prof["dataset"]]):
                    for s in _pick(seeds if seeds is not None else block.get("seeds"),
                                   prof["seeds"]):
                        spec = RunSpec(m, v, d, int(s), profile, over, data_root)
                        if spec not in out:
                            out.append(spec)
    return out


@contextmanager
def run_lock(run_id: str) -> Iterator[bool]:
    """Yield True if this process holds the run's lock, False if another process does."""
    path = results_dir() / ".locks" / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(run_id: str) -> bool:
    """True while a grid holds the run's lock (it is running); creates no lock file."""
    path = results_dir() / ".locks" / f"{run_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


# ------------------------------------------------------------------------- plan and state
STATES = ("done", "running", "pending", "failed", "stale")
DEFAULT_RUN_MIN = 10.0   # the estimate of a run when no finished run of its profile is found
REPLACE = ("stale", "all")


def run_states(configs: list[dict]) -> dict[str, str]:
    """{run_id: state}: "running" (a grid holds its lock), "done", "stale" (its record holds
    other settings: fgvc.study.run.record_state), "failed" (in failures.json) or "pending"."""
    path = results_dir() / "failures.json"
    failed = io.read_json(path) if path.is_file() else {}
    out = {}
    for cfg in configs:
        rid = cfg["run_id"]
        state = "running" if is_locked(rid) else record_state(cfg)
        out[rid] = {"new": "failed" if rid in failed else "pending"}.get(state, state)
    return out


def finished_minutes() -> dict[tuple[str, str | None], float]:
    """Mean wall time (min) of the finished runs under results/runs/, by (profile, method) and
    by (profile, None)."""
    seen: dict[tuple[str, str | None], list[float]] = {}
    for path in (results_dir() / "runs").glob("*/metrics.json"):
        try:
            m = io.read_json(path)
            minutes = float(m["wall_time_s"]) / 60
            keys = [(m["profile"], m["method"]), (m["profile"], None)]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for key in keys:
            seen.setdefault(key, []).append(minutes)
    return {k: sum(v) / len(v) for k, v in seen.items()}


def to_do(state: str, replace: str | None) -> bool:
    """Whether the grid runs a run of this state (with `--replace` `replace`)."""
    return (state in ("pending", "failed") or (state == "stale" and replace in REPLACE)
            or (state == "done" and replace == "all"))


def plan_table(configs: list[dict], workers: int = 1, replace: str | None = None) -> str:
    """The plan as a table: each run, its state and, for what is to do, its estimated time:
    the mean wall time of the finished runs of its profile and method; where there is none,
    that of its profile's other methods (marked ~), else DEFAULT_RUN_MIN (marked *). Then the
    counts and the estimated total."""
    states = run_states(configs)
    means = finished_minutes()
    width = max([len(c["run_id"]) for c in configs] + [3])
    lines = [f"  {'run':<{width}}  {'state':<8} estimate"]
    total, marks = 0.0, set()
    for cfg in configs:
        rid, state = cfg["run_id"], states[cfg["run_id"]]
        est = ""
        if to_do(state, replace) or state == "stale":
            minutes, mark = means.get((cfg["profile"], cfg["method"])), ""
            if minutes is None:
                minutes, mark = means.get((cfg["profile"], None)), "~"
            if minutes is None:
                minutes, mark = DEFAULT_RUN_MIN, "*"
            est = _duration(minutes) + mark
            if to_do(state, replace):
                total += minutes
                marks.add(mark)
        lines.append(f"  {rid:<{width}}  {state:<8} {est}".rstrip())
    counts = ", ".join(f"{sum(v == s for v in states.values())} {s}" for s in STATES)
    n_todo = sum(to_do(v, replace) for v in states.values())
    head = f"plan: {len(configs)} runs: {counts}"
    notes = {"~": "~ none of this method: the profile's other methods",
             "*": f"* none of this profile: {DEFAULT_RUN_MIN:.0f} min assumed"}
    tail = [f"to run: {n_todo} runs, about {_duration(total / max(workers, 1))} with "
            f"{workers} worker(s) (estimates: mean wall time of the finished runs of the same "
            f"profile and method in {portable(str(results_dir() / 'runs'))}/"
            + "".join(f"; {notes[m]}" for m in ("~", "*") if m in marks) + ")"
            if n_todo else "to run: nothing"]
    if "stale" in states.values() and replace not in REPLACE:
        tail.append("stale runs (their records hold other settings) are left as they are: "
                    "--replace stale retrains them, archiving the old records")
    return "\n".join([head, *lines, *tail])


def _duration(minutes: float) -> str:
    """Minutes for reading: 40 s, 12.5 min, 3.2 h."""
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def execute(cfg: dict, threads: int | None = None, log=None) -> None:
    """Run one resolved configuration through notebooks/10_train.ipynb (papermill, in a
    subprocess); raise on failure.

    The notebook gets the configuration itself, as JSON (parameter `config`), and uses it as
    given. The executed notebook and papermill's whole output go beside the run's checkpoints
    (checkpoints_dir()/<run_id>/10_train.ipynb, papermill.log); the run's record folder gets a
    short log.txt: start, anything papermill or the kernel reported, end or error, with paths
    relative to the repository (or $FGVC_RESULTS, $FGVC_CHECKPOINTS, $FGVC_DATA).
    """
    from importlib.metadata import version

    rid = cfg["run_id"]
    run_dir, work = results_dir() / "runs" / rid, checkpoints_dir() / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    executed, full_log = work / "10_train.ipynb", work / "papermill.log"
    executed.unlink(missing_ok=True)  # an earlier attempt's: its error is not this one's
    params = {"config": json.dumps(cfg, sort_keys=True), "progress": False, "results_root": str(results_dir())}
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("TQDM_DISABLE", "1")
    cmd = [sys.executable, "-m", "fgvc.study.notebook", str(TRAIN_NOTEBOOK), str(executed),
           "--parameters", json.dumps(params), "--cwd", str(ROOT), "--kernel", "python3"]
    lines = [f"{_now()} start {rid} (config {cfg['config_hash']}): "
             f"{portable(str(TRAIN_NOTEBOOK))} through papermill {version('papermill')}",
             f"executed notebook and papermill's output: {portable(str(executed))}, "
             f"{full_log.name}"]
    io.write_text(run_dir / "log.txt", "\n".join(lines) + "\n")
    t0 = time.time()
    with open(full_log, "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    secs = time.time() - t0
    error = _error_of(work) if proc.returncode else None
    if not error and not (run_dir / "metrics.json").is_file():
        error = "the notebook ended without writing metrics.json"
    reported = [portable(line.strip())[:300] for line in
                full_log.read_text(errors="replace").splitlines()
                if line.strip() and not line.startswith(_PAPERMILL_BANNER)]
    reported = [line for line in reported if not (error and line in error)]  # said once, below
    lines += reported[:20] + ([f"... ({len(reported) - 20} more lines in {full_log.name})"]
                              if len(reported) > 20 else [])
    if error:
        lines.append(f"{_now()} end: FAILED after {secs:.0f} s (exit status {proc.returncode}): "
                     f"{error}")
    else:
        m = io.read_json(run_dir / "metrics.json")
        lines.append(f"{_now()} end: done in {secs:.0f} s, test top-1 {m['test_top1']:.1f}% "
                     f"(val {m['val_top1']:.1f}%)")
    io.write_text(run_dir / "log.txt", "\n".join(lines) + "\n")
    if error:
        raise RuntimeError(error)


# The lines papermill always writes first (with this machine's absolute paths): not in log.txt.
_PAPERMILL_BANNER = ("Input Notebook:", "Output Notebook:", "Working directory:",
                     "Executing notebook with kernel:")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _error_of(work: Path) -> str:
    """The exception a failed run raised: from its executed notebook, else papermill's log
    (both in `work`, the run's checkpoint folder), with portable paths."""
    nb = work / "10_train.ipynb"
    if nb.is_file():
        try:
            cells = json.loads(nb.read_text())["cells"]
        except (ValueError, KeyError):
            cells = []
        for cell in cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return portable(f"{out['ename']}: {out['evalue']}")[:1000]
    path = work / "papermill.log"
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    errs = [line for line in lines if "Error" in line or "Exception" in line]
    return portable((errs[-1] if errs else (lines[-1] if lines else "failed")).strip())[:1000]


def run_grid(specs: list[RunSpec], workers: int = 1, backend: str = "local",
             threads: int | None = None, out=sys.stdout, replace: str | None = None) -> dict:
    """Run every spec not yet complete; return {"done": [...], "skipped": [...], "failed": {...},
    "locked": [...], "stale": [...]}.

    `replace`: None leaves stale runs (records of other settings under the run id) as they are
    and lists them under "stale"; "stale" archives and retrains them; "all" archives and
    retrains every run of the plan (fgvc.study.run.archive_run)."""
    if replace not in (None, *REPLACE):
        raise ValueError(f"--replace {replace!r}: valid: {list(REPLACE)}")
    configs = [s.config() for s in specs]
    states = {c["run_id"]: record_state(c) for c in configs}
    todo = [c for c in configs if replace == "all" or states[c["run_id"]] == "new"
            or (replace == "stale" and states[c["run_id"]] == "stale")]
    result = {"done": [], "skipped": [c["run_id"] for c in configs if states[c["run_id"]] == "done"
                                      and c not in todo],
              "failed": {}, "locked": [],
              "stale": [c["run_id"] for c in configs if states[c["run_id"]] == "stale"
                        and c not in todo]}
    print(f"grid: {len(configs)} runs, {len(result['skipped'])} already complete, "
          + (f"{len(result['stale'])} stale (left as they are: --replace stale retrains "
             f"them), " if result["stale"] else "")
          + f"{len(todo)} to run with {workers} worker(s) [{backend}]", file=out, flush=True)

    def replaces(cfg: dict) -> bool:  # under the run's lock
        return replace == "all" or (replace == "stale" and conflict(cfg) is not None)

    if backend == "slurm":
        from fgvc.study.slurm import submit_grid  # a backend: it imports nothing of the grid
        for cfg in todo:
            with run_lock(cfg["run_id"]) as mine:
                if mine and replaces(cfg):
                    archive_run(cfg["run_id"])
        return submit_grid(todo, result, out=out, execute=execute, run_lock=run_lock,
                           write_failures=write_failures)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    start = time.time()

    def one(cfg: dict) -> tuple[str, float, str | None]:
        t0 = time.time()
        with run_lock(cfg["run_id"]) as mine:
            if not mine:
                return "locked", 0.0, None
            if replaces(cfg):
                archive_run(cfg["run_id"])
            elif is_complete(cfg):  # finished by another grid meanwhile
                return "skipped", 0.0, None
            try:
                execute(cfg, threads)
                return "done", time.time() - t0, None
            except Exception as e:  # noqa: BLE001 - every failure is recorded, the grid goes on
                return "failed", time.time() - t0, str(e)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, c): c for c in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            cfg = futures[fut]
            status, secs, err = fut.result()
            rid = cfg["run_id"]
            if status == "done":
                m = io.read_json(results_dir() / "runs" / rid / "metrics.json")
                val = "" if m.get("val_top1") is None else f" (val {m['val_top1']:.1f}%)"
                msg = f"test top-1 {m['test_top1']:.1f}%{val}"
                result["done"].append(rid)
            elif status == "failed":
                msg = f"FAILED: {err}"
                result["failed"][rid] = err
            else:
                msg = "running in another grid" if status == "locked" else "already complete"
                result["locked" if status == "locked" else "skipped"].append(rid)
            elapsed = time.time() - start
            eta = elapsed / i * (len(todo) - i)
            print(f"[{i}/{len(todo)}] {rid}: {msg} in {secs:.0f} s "
                  f"(elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min)", file=out, flush=True)
    write_failures(result["failed"], [c["run_id"] for c in configs])
    total = time.time() - start
    print(f"grid: {len(result['done'])} done, {len(result['failed'])} failed, "
          f"{len(result['skipped'])} skipped, {len(result['locked'])} locked elsewhere"
          + (f", {len(result['stale'])} stale left as they are" if result["stale"] else "")
          + f"; total {total / 60:.1f} min", file=out, flush=True)
    return result


def write_failures(failed: dict[str, str], grid_ids: list[str]) -> Path:
    """results/failures.json: this grid's failures, plus earlier ones of runs not in it."""
    path = results_dir() / "failures.json"
    old = io.read_json(path) if path.is_file() else {}
    keep = {k: v for k, v in old.items() if k not in grid_ids}
    keep.update({rid: {"error": err, "log": f"runs/{rid}/log.txt"}
                 for rid, err in failed.items()})
    io.write_json(path, keep)
    return path


def _list(arg: str | None, kind=str):
    return None if arg is None else [kind(x) for x in arg.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m fgvc.study.grid` (every option with its help)."""
    p = argparse.ArgumentParser(prog="python -m fgvc.study.grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="transfer",
                   help="the settings profile (configs/profiles/) whose grid runs "
                        "(default: transfer)")
    p.add_argument("--methods", help="comma-separated methods, or all (default: the grid's)")
    p.add_argument("--variants", help="comma-separated variants, or all; a name a method "
                                      "lacks is skipped for it (default: the grid's)")
    p.add_argument("--datasets", help="comma-separated datasets (default: the grid's, else "
                                      "the profile's dataset)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the grid's, "
                                   "else the profile's seeds)")
    p.add_argument("--data-root", help="the dataset's folder for every run (default: "
                                       "data/<dataset>); recorded in each run's config")
    p.add_argument("--grid", default="study",
                   help="which of the profile's named grids (default: study)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override, e.g. --set train.epochs=2 (value parsed as JSON)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs at once (default: the profile's grid_workers, else 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--backend", choices=["local", "slurm"], default="local",
                   help="local: papermill runs on this machine; slurm: one job per run "
                        "(configs/profiles/<profile>.yaml slurm: settings)")
    p.add_argument("--replace", choices=REPLACE, default=None,
                   help="stale: archive and retrain the runs whose records hold other "
                        "settings; all: archive and retrain every run of the plan (old records "
                        "go to results/runs/.replaced/)")
    p.add_argument("--plan", action="store_true",
                   help="list the runs with their state and the estimated time of what is "
                        "to run, and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    overrides = {}
    for item in a.set:
        key, _, val = item.partition("=")
        try:
            overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            overrides[key] = val
    specs = plan(a.profile, _list(a.methods), _list(a.variants), _list(a.datasets),
                 _list(a.seeds, int), overrides, grid=a.grid, data_root=a.data_root)
    prof = load_profile(a.profile)
    workers = a.workers or prof.get("grid_workers", 1)
    if a.plan:
        print(plan_table([s.config() for s in specs], workers, a.replace))
        return 0
    # A fixed thread count per run (the profile's grid_threads) keeps a run's arithmetic, and so
    # its metrics, the same on a machine with more cores; without it: cores // workers.
    threads = a.threads or prof.get("grid_threads")
    result = run_grid(specs, workers=workers, backend=a.backend, threads=threads,
                      replace=a.replace)
    return 1 if result["failed"] or result["stale"] else 0


def run_into(root: Path, specs: list, workers: int = 2, threads: int = 1) -> float:
    """Run `specs` with fgvc.study.grid into results root `root` (its own checkpoints folder too);
    the grid's wall seconds. fgvc.study.readings and fgvc.dev.fastpath_runs run their grids through this."""
    os.environ["FGVC_RESULTS"] = str(root)
    # checkpoints per root too: the same run id in two roots (speed and threads share runs)
    # would otherwise find the other's finished checkpoint and resume from it
    os.environ["FGVC_CHECKPOINTS"] = str(ROOT / ".checkpoints" / "tools" / root.name)
    t0 = time.time()
    result = run_grid(specs, workers=workers, threads=threads)
    if result["failed"]:
        sys.exit(f"failed runs: {result['failed']}")
    return time.time() - t0


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))

