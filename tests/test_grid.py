"""The grid: papermill runs, failures recorded and the rest goes on, reruns redo only what is
missing, a lock per run keeps two grids from running the same run twice; the notebook gets the
resolved configuration and uses it as given; run records are small, clean and portable."""
import io as _io
import json
import os
import socket
from collections import Counter

import pytest

from fgvc import io
from fgvc.study.config import config_hash, resolve
from fgvc.study.grid import execute, main, plan, run_grid, run_lock
from fgvc.paths import ROOT

from tiny import TINY

TINY_ONE_EPOCH = {**TINY, "train.epochs": 1}


def test_plan_lists_runs_and_skips_unknown_variants():
    specs = plan("scratch", methods=["baseline"], variants=["full", "no_such"], seeds=[0, 1])
    assert [(s.method, s.variant, s.seed) for s in specs] == [("baseline", "full", 0),
                                                              ("baseline", "full", 1)]


def test_the_real_photo_grid_runs_every_full_on_cub30_from_the_given_folder(tmp_path):
    specs = plan("transfer", grid="real_photos", data_root=str(tmp_path / "cub30"))
    assert {(s.method, s.variant, s.dataset) for s in specs} == {
        (m, "full", "cub30") for m in ("baseline", "ma_ea", "lafe", "pcanet", "focus")}
    assert sorted({s.seed for s in specs}) == [0, 1, 2]              # the profile's seeds
    cfg = specs[0].config()
    assert cfg["data_root"] == str(tmp_path / "cub30") and cfg["run_id"] == "transfer-cub30-baseline-full-s0"
    # the folder is where the data is, not what the run computes: same hash without it
    assert cfg["config_hash"] == plan("transfer", grid="real_photos")[0].config()["config_hash"]


def test_failure_is_recorded_others_go_on_and_rerun_redoes_only_failures(isolated_results):
    # 'cub' has no data in the test session: that run fails; the synthbirds run succeeds.
    specs = plan("scratch", methods=["baseline"], datasets=["cub", "synthbirds"], seeds=[0],
                 overrides=TINY_ONE_EPOCH)
    out = _io.StringIO()
    result = run_grid(specs, workers=2, out=out)
    assert len(result["done"]) == 1 and len(result["failed"]) == 1
    (failed_id, error), = result["failed"].items()
    assert "cub" in failed_id and "DatasetNotFound" in error
    failures = io.read_json(isolated_results / "results/failures.json")
    assert list(failures) == [failed_id] and failures[failed_id]["log"] == f"runs/{failed_id}/log.txt"
    failed_log = (isolated_results / "results/runs" / failed_id / "log.txt").read_text()
    assert "FAILED" in failed_log and "DatasetNotFound" in failed_log
    ok_dir = isolated_results / "results/runs" / result["done"][0]
    assert (ok_dir / "metrics.json").is_file() and not (ok_dir / "10_train.ipynb").exists()
    assert (isolated_results / "ckpt" / result["done"][0] / "10_train.ipynb").is_file()
    assert "[2/2]" in out.getvalue() and "total" in out.getvalue()

    again = run_grid(specs, workers=1, out=_io.StringIO())
    assert again["skipped"] == result["done"] and list(again["failed"]) == [failed_id]


def test_cli_exit_code_and_plan(isolated_results, capsys):
    assert main(["--plan", "--profile", "scratch", "--methods", "baseline", "--seeds", "0,1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:4]]
    assert [r[:2] for r in rows] == [["scratch-synthbirds-baseline-full-s0", "pending"],
                                     ["scratch-synthbirds-baseline-full-s1", "pending"]]
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY_ONE_EPOCH.items()]
    assert main(["--profile", "scratch", "--methods", "baseline", "--datasets", "cub", "--seeds", "0",
                 *sets]) == 1


def test_a_locked_run_is_left_to_the_grid_holding_it(isolated_results):
    specs = plan("scratch", methods=["baseline"], seeds=[0], overrides=TINY_ONE_EPOCH)
    rid = specs[0].config()["run_id"]
    with run_lock(rid) as mine:
        assert mine
        with run_lock(rid) as second:
            assert not second
        result = run_grid(specs, out=_io.StringIO())
    assert result["locked"] == [rid] and not result["done"]
    assert not (isolated_results / "results/runs" / rid / "metrics.json").exists()


RECORD = {"config.json", "metrics.json", "history.csv", "predictions.json", "log.txt"}


@pytest.fixture(scope="module")
def given_run(tmp_path_factory):
    """One tiny run through the grid's execute, with a resolved config changed by hand (a
    learning rate and run id that no resolve of its parameters gives)."""
    tmp = tmp_path_factory.mktemp("given")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FGVC_RESULTS", str(tmp / "results"))
        mp.setenv("FGVC_CHECKPOINTS", str(tmp / "ckpt"))
        cfg = resolve("baseline", profile="scratch", overrides=TINY_ONE_EPOCH)
        cfg["train"]["lr"] = 0.0123
        cfg["run_id"] = "given"
        cfg["config_hash"] = config_hash(cfg)
        execute(cfg, threads=1)
    return cfg, tmp


def test_notebook_uses_the_passed_config_as_given(given_run):
    cfg, tmp = given_run
    assert resolve("baseline", overrides=TINY_ONE_EPOCH)["train"]["lr"] != 0.0123
    record = io.read_json(tmp / "results/runs/given/config.json")
    machine = record.pop("machine")
    assert record == cfg
    metrics = io.read_json(tmp / "results/runs/given/metrics.json")
    assert metrics["config_hash"] == cfg["config_hash"] and metrics["machine"] == machine
    assert {"device", "torch_threads", "cpu_capability", "torch", "python", "amp",
            "channels_last"} <= set(machine)
    assert machine["amp"] != "auto" and isinstance(machine["channels_last"], bool)
    assert machine["device"] in ("cpu", "cuda") and config_hash({**cfg, "machine": machine}) == cfg["config_hash"]


def test_run_record_is_small_portable_and_its_log_clean(given_run):
    _, tmp = given_run
    run_dir = tmp / "results/runs/given"
    assert {p.name for p in run_dir.iterdir()} == RECORD
    assert sum(p.stat().st_size for p in run_dir.iterdir()) < 25_000
    machine_paths = {str(ROOT), str(ROOT.resolve()), str(tmp), str(tmp.resolve()), "/root", "/home",
                     os.path.dirname(os.environ["FGVC_DATA"])}
    host = socket.gethostname()
    for path in run_dir.iterdir():
        text = path.read_text()
        assert not [m for m in machine_paths if m in text], (path.name, text)
        assert len(host) < 4 or host not in text, path.name
    log = (run_dir / "log.txt").read_text().splitlines()
    assert len(log) == 3 and "start given" in log[0] and "end: done" in log[-1], log
    assert "$FGVC_CHECKPOINTS/given/10_train.ipynb" in log[1]
    full = (tmp / "ckpt/given/papermill.log").read_text()
    assert "ERROR" not in full and "WARNING" not in full and "Unable to parse" not in full, full
    assert (tmp / "ckpt/given/10_train.ipynb").is_file()


def test_named_grids_of_a_profile():
    """`grid:` as a list is the grid "study"; as a mapping, each name is a grid (--grid)."""
    from fgvc.study.grid import grid_blocks

    assert grid_blocks({"grid": [{"seeds": [0]}]}) == [{"seeds": [0]}]
    assert grid_blocks({}) == [{}]
    named = {"grid": {"study": [{"seeds": [0]}], "ablations": [{"variants": "all"}]}}
    assert grid_blocks(named, "ablations") == [{"variants": "all"}]
    with pytest.raises(ValueError, match="valid: \\['ablations', 'study'\\]"):
        grid_blocks(named, "nope")
    from fgvc.methods import list_methods

    study = Counter((s.method, s.variant) for s in plan("transfer"))   # every method's full, 3 seeds
    assert study == {(m, "full"): 3 for m in list_methods()}
    ablations = Counter((s.method, s.variant) for s in plan("transfer", grid="ablations"))
    main_rows = {("ma_ea", "pool_ma"), ("lafe", "no_fusion"), ("pcanet", "ae_center"),
                 ("focus", "image_only")}
    assert {arm for arm, n in ablations.items() if n == 3} == main_rows   # at the study's seeds
    assert ("ma_ea", "resnet") in ablations
    assert all(n == 1 for arm, n in ablations.items() if arm not in main_rows)
    assert len(plan("transfer", grid="seeds5")) == 5 * len(study)


def _record(cfg: dict, config_hash: str | None = None, wall_time_s: float = 60.0) -> None:
    """A hand-written finished record of `cfg` (under another config hash if given)."""
    h = config_hash or cfg["config_hash"]
    folder = isolated_root() / "runs" / cfg["run_id"]
    io.write_json(folder / "config.json", {**cfg, "config_hash": h})
    io.write_json(folder / "metrics.json", {"run_id": cfg["run_id"], "config_hash": h,
                                            "method": cfg["method"], "profile": cfg["profile"],
                                            "test_top1": 50.0, "val_top1": 40.0,
                                            "wall_time_s": wall_time_s})


def isolated_root():
    from fgvc.paths import results_dir

    return results_dir()


def test_plan_shows_each_runs_state_and_the_time_to_go(isolated_results):
    from fgvc.study.grid import plan_table

    configs = [s.config() for s in plan("scratch", methods=["baseline"], seeds=[0, 1, 2, 3, 4],
                                         overrides=TINY_ONE_EPOCH)]
    done, stale, failed, running, pending = configs
    _record(done, wall_time_s=150.0)
    _record(stale, config_hash="0123456789ab")
    io.write_json(isolated_root() / "failures.json", {failed["run_id"]: {"error": "boom"}})
    with run_lock(running["run_id"]):
        table = plan_table(configs, workers=1)
    states = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:7]}
    assert states[done["run_id"]] == ["done"]
    assert states[running["run_id"]] == ["running"]
    # estimates: mean wall time of the finished runs of this profile and method (150 s, 60 s)
    assert states[pending["run_id"]] == ["pending", "1.8", "min"]
    assert states[failed["run_id"]] == ["failed", "1.8", "min"]
    assert states[stale["run_id"]][0] == "stale"
    assert table.splitlines()[0] == "plan: 5 runs: 1 done, 1 running, 1 pending, 1 failed, 1 stale"
    assert "to run: 2 runs, about 3.5 min with 1 worker(s)" in table
    assert "--replace stale" in table
    assert "to run: 4 runs" in plan_table(configs, replace="stale")  # the lock is released
    other = plan("paper", methods=["baseline"], datasets=["cub"], seeds=[0])[0].config()
    assert "10.0 min*" in plan_table([other]) and "10 min assumed" in plan_table([other])


def test_stale_runs_are_left_unless_replaced(isolated_results, monkeypatch):
    import fgvc.study.grid

    specs = plan("scratch", methods=["baseline"], seeds=[0], overrides=TINY_ONE_EPOCH)
    cfg = specs[0].config()
    rid = cfg["run_id"]
    _record(cfg, config_hash="0123456789ab")
    folder = isolated_root() / "runs" / rid
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    executed = []

    def fake_execute(c, threads=None, log=None):  # a run, without papermill
        executed.append(c["run_id"])
        _record(c)

    monkeypatch.setattr(fgvc.study.grid, "execute", fake_execute)
    result = run_grid(specs, out=_io.StringIO())
    assert result["stale"] == [rid] and not executed
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY_ONE_EPOCH.items()]
    assert main(["--profile", "scratch", "--methods", "baseline", "--seeds", "0", *sets]) == 1
    result = run_grid(specs, out=_io.StringIO(), replace="stale")
    assert result["done"] == [rid] and executed == [rid]
    archived, = (isolated_root() / "runs/.replaced").iterdir()
    assert io.read_json(archived / "metrics.json")["config_hash"] == "0123456789ab"
    assert io.read_json(folder / "metrics.json")["config_hash"] == cfg["config_hash"]
    assert run_grid(specs, out=_io.StringIO(), replace="stale")["skipped"] == [rid]
    assert run_grid(specs, out=_io.StringIO(), replace="all")["done"] == [rid]
    assert executed == [rid, rid] and len(list((isolated_root() / "runs/.replaced").iterdir())) == 2
