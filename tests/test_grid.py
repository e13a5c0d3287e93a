"""The grid: papermill runs, failures recorded and the rest goes on, reruns redo only what is
missing, and a lock per run keeps two grids from running the same run twice."""
import io as _io
import json

from fgvc import io
from fgvc.grid import main, plan, run_grid, run_lock

from tiny import TINY

TINY_ONE_EPOCH = {**TINY, "train.epochs": 1}


def test_plan_lists_runs_and_skips_unknown_variants():
    specs = plan("quick", methods=["baseline"], variants=["full", "no_such"], seeds=[0, 1])
    assert [(s.method, s.variant, s.seed) for s in specs] == [("baseline", "full", 0),
                                                              ("baseline", "full", 1)]


def test_failure_is_recorded_others_go_on_and_rerun_redoes_only_failures(isolated_results):
    # 'cub' has no data in the test session: that run fails; the synthbirds run succeeds.
    specs = plan("quick", methods=["baseline"], datasets=["cub", "synthbirds"], seeds=[0],
                 overrides=TINY_ONE_EPOCH)
    out = _io.StringIO()
    result = run_grid(specs, workers=2, out=out)
    assert len(result["done"]) == 1 and len(result["failed"]) == 1
    (failed_id, error), = result["failed"].items()
    assert "cub" in failed_id and "DatasetNotFound" in error
    failures = io.read_json(isolated_results / "results/failures.json")
    assert list(failures) == [failed_id] and "papermill.log" in failures[failed_id]["log"]
    ok_dir = isolated_results / "results/runs" / result["done"][0]
    assert (ok_dir / "10_train.ipynb").is_file() and (ok_dir / "metrics.json").is_file()
    assert "[2/2]" in out.getvalue() and "total" in out.getvalue()

    again = run_grid(specs, workers=1, out=_io.StringIO())
    assert again["skipped"] == result["done"] and list(again["failed"]) == [failed_id]


def test_cli_exit_code_and_plan(isolated_results, capsys):
    assert main(["--plan", "--methods", "baseline", "--seeds", "0,1"]) == 0
    assert capsys.readouterr().out.split() == ["quick-synthbirds-baseline-full-s0",
                                               "quick-synthbirds-baseline-full-s1"]
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY_ONE_EPOCH.items()]
    assert main(["--methods", "baseline", "--datasets", "cub", "--seeds", "0", *sets]) == 1


def test_a_locked_run_is_left_to_the_grid_holding_it(isolated_results):
    specs = plan("quick", methods=["baseline"], seeds=[0], overrides=TINY_ONE_EPOCH)
    rid = specs[0].config()["run_id"]
    with run_lock(rid) as mine:
        assert mine
        with run_lock(rid) as second:
            assert not second
        result = run_grid(specs, out=_io.StringIO())
    assert result["locked"] == [rid] and not result["done"]
    assert not (isolated_results / "results/runs" / rid / "metrics.json").exists()
