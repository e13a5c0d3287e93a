"""tools/gpu_check.sh: a CPU dry run at a tiny size through the shell script (lib/ on
PYTHONPATH, as on a bare GPU machine), and the one-line exit where there is no GPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgvc.dev import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "bench_gpu.md"
    env = {**os.environ, "PYTHON": sys.executable, "FGVC_GPU_CHECK_FORCE_CPU": "1",
           "FGVC_GPU_CHECK_OUT": str(out), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([str(ROOT / "tools/gpu_check.sh")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    text = out.read_text()
    assert "every section passed" in text and "GPU: none (CPU dry run)" in text
    for title in ("## Every method, paper profile, amp on and off", "## Fast paths: dtype x memory",
                  "## torchrun, one process"):
        assert title in text
    from fgvc.methods import list_methods

    for m in list_methods():
        assert f"| {m} | bf16 |" in text and f"| {m} | fp32 |" in text
    assert "| 0 | gpu-check |" in text  # the torchrun run exited 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_one_line_and_exit_0(capsys, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path / "x.md")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]
    assert not (tmp_path / "x.md").exists()


def test_markdown_table_needs_no_pandas():
    text = gpu_check.md_table([{"a": 1.23456, "b": "x|y"}, {"a": None, "c": True}])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.23 | x/y |  |",
                                 "|  |  | True |"]
