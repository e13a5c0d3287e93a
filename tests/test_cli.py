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
    (["fgvc.train", "--method", "baseline", "--profile", "paper", "--dataset", "cub"], "not found"),
    (["fgvc.train", "--method", "lafe", "--variant", "nope"], "unknown variant 'nope'"),
    (["fgvc.grid", "--methods", "nope", "--plan"], "unknown method 'nope'"),
    (["fgvc.train", "--method", "baseline", "--set", "train.epochs=ten"], "train.epochs"),
    (["fgvc.data", "prepare", "cub", "--size", "64"], "not found"),
])
def test_a_user_error_is_one_line_without_traceback(tmp_path, args, cause):
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and cause in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli(tmp_path, "fgvc.grid", "--methods", "nope", "--plan", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = _cli(tmp_path, "fgvc.grid", "--methods", "nope", "--plan", FGVC_DEBUG="1")
    assert "Traceback" in proc.stderr


def test_one_line_keeps_the_first_and_last_lines():
    err = CorruptImagesError([("a.jpg", "truncated"), ("b.jpg", "empty"), ("c.jpg", "empty")],
                             hint="set data.skip_bad_images: true to skip them")
    line = one_line(err)
    assert "\n" not in line and line.startswith("3 unreadable image(s): a.jpg: truncated")
    assert line.endswith("set data.skip_bad_images: true to skip them") and "(2 more)" in line
    assert one_line(ValueError("plain")) == "plain"
