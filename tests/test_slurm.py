"""The Slurm backend through submitit's debug (in-process) and local (subprocess) executors."""
from __future__ import annotations

import io as _io
import json
import sys

import pytest

from fgvc import io

from fgvc.study import slurm
from fgvc.study import grid
from fgvc.study.grid import plan, run_grid

TINY_SYNTH = {"n_genera": 2, "species_per_genus": 2, "train_per_class": 12, "test_per_class": 4}
TINY = {"train.epochs": 1, "train.max_steps": 2, "train.batch_size": 8, "data.synth": TINY_SYNTH}


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key, sub in (("FGVC_RESULTS", "results"), ("FGVC_CHECKPOINTS", "ckpt"), ("FGVC_DATA", "data")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.delenv("FGVC_SLURM", raising=False)
    return tmp_path


def _in_process_execute(cfg, threads=None, log=None):
    """Stand-in for fgvc.study.grid.execute (papermill) in the debug executor: the same run, in-process."""
    from fgvc.study.run import run

    run(cfg, progress=False)


def _hooks():
    """What the grid hands its Slurm backend (looked up now: tests monkeypatch fgvc.study.grid.execute)."""
    return {"execute": grid.execute, "run_lock": grid.run_lock, "write_failures": grid.write_failures}


def test_settings_merge_and_validation(monkeypatch):
    monkeypatch.setenv("FGVC_SLURM", json.dumps({"partition": "gpu", "array_parallelism": 4}))
    s = slurm.slurm_settings("scratch", {"time_min": 30})
    assert (s["partition"], s["array_parallelism"], s["time_min"]) == ("gpu", 4, 30)
    assert s["launcher"] == "notebook" and s["wait"] is True
    with pytest.raises(ValueError, match="unknown Slurm setting.*'array_parallelism'"):
        slurm.slurm_settings(None, {"arrays": 3})
    with pytest.raises(ValueError, match="launcher"):
        slurm.slurm_settings(None, {"launcher": "mpi"})


def test_executor_parameters(env):
    ex = slurm.make_executor(slurm.slurm_settings(None, {"cluster": "debug", "partition": "gpu",
                                                         "gpus_per_node": 0}))
    assert ex.cluster == "debug"


def test_train_command():
    cfg = plan("scratch", methods=["baseline"], seeds=[3], overrides={"train.epochs": 1})[0].config()
    cmd = slurm.train_command(cfg)
    assert cmd[:3] == [sys.executable, "-m", "fgvc.study.train"]
    assert json.loads(cmd[cmd.index("--config") + 1]) == cfg  # the planned config, as given
    ddp = slurm.train_command(cfg, nproc=4)
    assert ddp[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc-per-node=4" in ddp


def test_debug_executor_runs_grid_records_failures_and_skips_on_rerun(env, monkeypatch):
    monkeypatch.setattr("fgvc.study.grid.execute", _in_process_execute)
    monkeypatch.setenv("FGVC_SLURM", json.dumps({"cluster": "debug", "gpus_per_node": 0}))
    # 'cub' has no data here: that job fails; the synthbirds job runs.
    specs = plan("scratch", methods=["baseline"], datasets=["synthbirds", "cub"], seeds=[0],
                 overrides=TINY)
    out = _io.StringIO()
    result = run_grid(specs, backend="slurm", out=out)
    assert len(result["done"]) == 1 and len(result["failed"]) == 1, out.getvalue()
    assert set(result["jobs"]) == {s.config()["run_id"] for s in specs}
    done = env / "results" / "runs" / result["done"][0]
    assert (done / "metrics.json").is_file()
    failures = io.read_json(env / "results" / "failures.json")
    assert list(failures) == list(result["failed"]) and "cub" in next(iter(failures))
    assert "submitted 2 job(s) [debug]" in out.getvalue()

    again = run_grid(specs, backend="slurm", out=_io.StringIO())
    assert again["skipped"] == result["done"] and list(again["failed"]) == list(result["failed"])


def test_no_wait_submits_and_returns(env, monkeypatch):
    monkeypatch.setattr("fgvc.study.grid.execute", _in_process_execute)
    specs = plan("scratch", methods=["baseline"], seeds=[0], overrides=TINY)
    out = _io.StringIO()
    result = slurm.submit_grid([s.config() for s in specs], {"done": [], "skipped": [], "failed": {},
                                                             "locked": []}, out=out,
                               settings={"cluster": "debug", "gpus_per_node": 0, "wait": False},
                               **_hooks())
    assert len(result["jobs"]) == 1 and result["done"] == []
    assert "not waiting" in out.getvalue()
    assert not (env / "results" / "runs" / specs[0].config()["run_id"] / "metrics.json").exists()


@pytest.mark.slow
def test_local_executor_runs_fgvc_train_in_a_subprocess(env):
    specs = plan("scratch", methods=["baseline"], seeds=[0], overrides=TINY)
    out = _io.StringIO()
    result = slurm.submit_grid([s.config() for s in specs], {"done": [], "skipped": [], "failed": {},
                                                             "locked": []}, out=out,
                               settings={"cluster": "local", "gpus_per_node": 0, "cpus_per_task": 1,
                                         "launcher": "train", "time_min": 10},
                               **_hooks())
    assert result["done"] == [specs[0].config()["run_id"]], out.getvalue()
    run_dir = env / "results" / "runs" / result["done"][0]
    m = io.read_json(run_dir / "metrics.json")
    assert m["world_size"] == 1 and m["epochs"] == 1
    assert (run_dir / "train.log").is_file()


def test_slurm_backend_imports_nothing_of_the_grid():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(slurm.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {"grid", "fgvc.study.grid"} & names


def test_notebook_launcher_without_execute_is_an_error(env):
    cfg = plan("scratch", methods=["baseline"], seeds=[0], overrides=TINY)[0].config()
    with pytest.raises(ValueError, match="needs the grid's execute"):
        slurm.run_job(cfg, "notebook", run_lock=grid.run_lock)
