"""A record never lies: a run id holding a run of other settings is refused before anything is
written, replacing it is explicit, config.json and metrics.json always describe the same run
(also after a kill between their writes), wall_time_s adds up every process of a resumed run,
and the committed records still load as complete."""
import time
from pathlib import Path

import pytest
import torch

import fgvc.study.run
from fgvc import io
from fgvc.cli import UserError, run as run_cli
from fgvc.paths import ROOT
from fgvc.study.config import resolve
from fgvc.study.results import load_runs
from fgvc.study.run import RunIdTaken, is_complete, record_state, run
from fgvc.study.train import main as train_main

from tiny import TINY

OTHER = {**TINY, "train.lr": 0.5}   # other settings under the same run id


def _files(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in folders if d.is_dir() for p in sorted(d.rglob("*"))
            if p.is_file()}


def _cfg(overrides: dict, run_id: str = "r") -> dict:
    return resolve("baseline", profile="scratch", overrides=overrides, run_id=run_id)


def test_other_settings_under_a_finished_run_id_are_refused_before_anything_is_written(
        isolated_results, capsys):
    run(_cfg(TINY), progress=False)
    rec, ckpt = isolated_results / "results/runs/r", isolated_results / "ckpt/r"
    before = _files(rec, ckpt)
    with pytest.raises(RunIdTaken, match="finished run of other settings") as err:
        run(_cfg(OTHER), progress=False)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value) and "--replace" in str(err.value)
    assert _files(rec, ckpt) == before, "nothing is written"
    # a fresh clone: the committed record, no checkpoint: still refused, not silently retrained
    (ckpt / "last.pt").unlink()
    with pytest.raises(RunIdTaken, match="metrics.json"):
        run(_cfg(OTHER), progress=False)
    # a checkpoint of other settings, no finished record: refused too
    run(_cfg(TINY), progress=False, replace=True)
    (rec / "metrics.json").unlink()
    with pytest.raises(RunIdTaken, match="checkpoint of other settings"):
        run(_cfg(OTHER), progress=False)
    # the command line: one line, status 1, no traceback
    sets = [f"--set={k}={v}" for k, v in (("train.epochs", 2), ("train.max_steps", 3),
                                           ("train.batch_size", 8), ("train.lr", 0.5))]
    sets.append('--set=data.synth={"n_genera": 2, "species_per_genus": 2, '
                '"train_per_class": 12, "test_per_class": 4}')
    capsys.readouterr()
    assert run_cli(train_main, ["--method", "baseline", "--profile", "scratch", "--run-id", "r",
                                "--no-progress", *sets]) == 1
    err_text = capsys.readouterr().err
    assert len(err_text.strip().splitlines()) == 1 and "Traceback" not in err_text, err_text
    assert err_text.startswith("error: run id 'r' holds a checkpoint of other settings")


def test_replace_archives_the_old_record_and_trains_anew(isolated_results):
    old = run(_cfg(TINY), progress=False)
    new = run(_cfg(OTHER), progress=False, replace=True)
    assert new["config_hash"] == _cfg(OTHER)["config_hash"] != old["config_hash"]
    archived, = (isolated_results / "results/runs/.replaced").iterdir()
    assert archived.name.startswith("r-")
    assert io.read_json(archived / "metrics.json") == old
    assert io.read_json(archived / "config.json")["config_hash"] == old["config_hash"]
    last = torch.load(isolated_results / "ckpt/r/last.pt", weights_only=True)
    assert last["config_hash"] == new["config_hash"]
    runs = load_runs(isolated_results / "results")
    assert list(runs["run_id"]) == ["r"] and list(runs["config_hash"]) == [new["config_hash"]]
    assert record_state(_cfg(OTHER)) == "done" and record_state(_cfg(TINY)) == "stale"


def test_a_kill_between_config_and_metrics_leaves_no_complete_record_and_a_rerun_fixes_it(
        isolated_results, monkeypatch):
    run(_cfg(TINY), progress=False)
    write_json = io.write_json

    def killed_at_metrics(path, obj, **kw):
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt("killed between config.json and metrics.json")
        return write_json(path, obj, **kw)

    monkeypatch.setattr(fgvc.study.run.io, "write_json", killed_at_metrics)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(OTHER), progress=False, replace=True)
    monkeypatch.setattr(fgvc.study.run.io, "write_json", write_json)
    rec = isolated_results / "results/runs/r"
    assert io.read_json(rec / "config.json")["config_hash"] == _cfg(OTHER)["config_hash"]
    assert not is_complete(_cfg(OTHER)) and not is_complete(_cfg(TINY))
    assert load_runs(isolated_results / "results").empty, "no complete run is reported"
    assert record_state(_cfg(OTHER)) == "new"   # resumable: its checkpoint holds these settings
    fixed = run(_cfg(OTHER), progress=False)
    assert is_complete(_cfg(OTHER))
    runs = load_runs(isolated_results / "results")
    assert list(runs["config_hash"]) == [fixed["config_hash"]] == [_cfg(OTHER)["config_hash"]]


def test_a_pair_of_records_of_two_configs_is_not_a_complete_run(isolated_results):
    """A config.json rewritten for other settings over an older metrics.json (what a run id
    reused with other settings used to leave behind) is not listed, and a rerun of the
    finished settings repairs the record without training again."""
    first = run(_cfg(TINY), progress=False)
    cpath = isolated_results / "results/runs/r/config.json"
    io.write_json(cpath, {**io.read_json(cpath), "config_hash": _cfg(OTHER)["config_hash"]})
    assert load_runs(isolated_results / "results").empty
    assert not is_complete(_cfg(TINY))
    again = run(_cfg(TINY), progress=False)   # resumes after its last epoch: evaluates only
    assert again["test_top1"] == first["test_top1"] and again["epochs"] == first["epochs"]
    assert list(load_runs(isolated_results / "results")["run_id"]) == ["r"]


def test_wall_time_adds_up_every_process_of_a_resumed_run(isolated_results, monkeypatch):
    class Killed(Exception):
        pass

    build = fgvc.study.run.build_data_for

    def slow_build(cfg):  # the first process spends at least 1.5 s before its first checkpoint
        time.sleep(1.5)
        return build(cfg)

    def stop(state):
        raise Killed

    monkeypatch.setattr(fgvc.study.run, "build_data_for", slow_build)
    with pytest.raises(Killed):
        run(_cfg(TINY), progress=False, on_epoch=stop)
    first_s = torch.load(isolated_results / "ckpt/r/last.pt", weights_only=True)["state"]["elapsed_s"]
    assert first_s >= 1.5
    monkeypatch.setattr(fgvc.study.run, "build_data_for", build)
    t0 = time.time()
    m = run(_cfg(TINY), progress=False)
    second_s = time.time() - t0
    assert m["epochs"] == 2
    assert m["wall_time_s"] >= first_s and m["wall_time_s"] > second_s + 1.0, (m["wall_time_s"], first_s, second_s)
    assert m["wall_time_s"] <= first_s + second_s + 1e-3


def test_committed_records_still_load_as_complete(monkeypatch):
    root = ROOT / "results"
    folders = sorted(p.parent for p in (root / "runs").glob("*/metrics.json"))
    if not folders:
        pytest.skip("no committed run records")
    assert len(load_runs(root)) == len(folders)
    monkeypatch.setenv("FGVC_RESULTS", str(root))   # read only
    for folder in folders:
        cfg = io.read_json(folder / "config.json")
        assert is_complete(cfg) and record_state(cfg) == "done", folder.name
