"""Command-line errors: one line naming the cause, status 1, no traceback (unless --debug)."""
import os
import subprocess
import sys

import pytest

from fgvc.cli import one_line
from fgvc.data.base import CorruptImagesError


def _cli(tmp_path, *args, **env):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env={**os.environ, "FGVC_DATA": str(tmp_path / "nodata"),
                               "FGVC_RESULTS": str(tmp_path / "results"),
                               "FGVC_CHECKPOINTS": str(tmp_path / "ckpt"), **env})


@pytest.mark.parametrize("args, cause", [
    (["fgvc.study.train", "--method", "baseline", "--profile", "paper", "--dataset", "cub"], "not found"),
    (["fgvc.study.train", "--method", "lafe", "--variant", "nope"], "unknown variant 'nope'"),
    (["fgvc.study.grid", "--methods", "nope", "--plan"], "unknown method 'nope'"),
    (["fgvc.study.train", "--method", "baseline", "--set", "train.epochs=ten"], "train.epochs"),
    (["fgvc.data", "prepare", "cub", "--size", "64"], "not found"),
])
def test_a_user_error_is_one_line_without_traceback(tmp_path, args, cause):
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cause in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list((tmp_path / "results").glob("runs/*")), "a run that cannot start leaves no record"


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli(tmp_path, "fgvc.study.grid", "--methods", "nope", "--plan", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = _cli(tmp_path, "fgvc.study.grid", "--methods", "nope", "--plan", FGVC_DEBUG="1")
    assert "Traceback" in proc.stderr


def test_one_line_keeps_the_first_and_last_lines():
    bad = [(f"{i}.jpg", "truncated") for i in range(10)]
    err = CorruptImagesError(bad, hint="set data.skip_bad_images: true to skip them")
    line = one_line(err)
    assert "\n" not in line and line.startswith("10 unreadable image(s): 0.jpg: truncated")
    assert line.endswith("set data.skip_bad_images: true to skip them") and "(9 more)" in line
    short = one_line(CorruptImagesError(bad[:2], hint="fix"))
    assert short == "2 unreadable image(s): 0.jpg: truncated 1.jpg: truncated fix"
    assert one_line(ValueError("plain")) == "plain"


@pytest.mark.parametrize("module", ["fgvc.study.train", "fgvc.study.grid"])
def test_every_option_has_help(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    options = [a for a in parser._actions if a.option_strings]
    assert len(options) > 5
    missing = [a.option_strings[0] for a in options if not (a.help or "").strip()]
    assert not missing, f"{module}: options without help: {missing}"


def test_a_run_ends_in_words_and_a_finished_one_says_so(isolated_results, capsys):
    import json

    from fgvc.study.train import main as train_main
    from tiny import TINY

    args = ["--method", "baseline", "--profile", "scratch", "--run-id", "words", "--no-progress",
            *[f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]]
    assert train_main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((isolated_results / "results/runs/words/metrics.json").read_text())
    assert out[0].startswith("trained baseline (full) on synthbirds, profile scratch, seed 0: 2 epochs")
    assert out[1].startswith(f"test top-1 {metrics['test_top1']:.2f} % (val {metrics['val_top1']:.2f} %")
    assert out[2].startswith(f"records: {isolated_results.resolve()}/results/runs/words/")
    assert not any(line.lstrip().startswith("{") for line in out), "no raw JSON"
    assert train_main(args) == 0
    again = capsys.readouterr().out
    assert again.startswith("already complete:") and "--replace" in again
    assert f"{metrics['test_top1']:.2f} %" in again
