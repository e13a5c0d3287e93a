"""No lost work: atomic writes survive kills, checkpoints are pruned, two grids on one results
folder run each run once."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fgvc import io
from fgvc.study.run import run

from tiny import TINY


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "torn')
            raise RuntimeError("killed mid-write")
    assert io.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o600), "records are readable by others"


def test_sigkill_during_checkpoint_writes_never_tears_the_file(tmp_path):
    """A writer saving a 40 MB checkpoint in a loop is killed at several moments; each time
    the file on disk is a complete checkpoint."""
    target = tmp_path / "last.pt"
    code = ("import torch, itertools; from fgvc.io import torch_save\n"
            "for i in itertools.count():\n"
            f"    torch_save({{'i': i, 'w': torch.full((10_000_000,), float(i))}}, {str(target)!r})\n")
    for delay in (0.3, 0.9, 1.7):
        proc = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.time() + 60
        while not target.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = torch.load(target, weights_only=True)
        assert torch.all(ckpt["w"] == ckpt["i"])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(p.startswith(".last.pt.") for p in leftovers)  # temp files of killed writers only


def test_only_best_and_last_checkpoints_are_kept(isolated_results):
    run(method="baseline", profile="scratch", overrides=TINY, run_id="prune", progress=False)
    assert sorted(p.name for p in (isolated_results / "ckpt/prune").iterdir()) == ["best.pt", "last.pt"]
    assert not list((isolated_results / "results").rglob("*.pt")), "no checkpoint in results/"


@pytest.mark.slow
def test_two_grids_on_one_results_folder_run_each_run_once(isolated_results):
    sets = ["--set=train.epochs=1", "--set=train.max_steps=2", "--set=train.batch_size=8",
            '--set=data.synth={"n_genera":2,"species_per_genus":2,"train_per_class":12,"test_per_class":4}']
    cmd = [sys.executable, "-m", "fgvc.study.grid", "--methods", "baseline", "--seeds", "0,1",
           "--workers", "1", *sets]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = sum(line.count("test top-1") for out in outs for line in out.splitlines())
    assert done == 2, outs  # each of the two runs executed by exactly one grid
    assert len(list((isolated_results / "results/runs").glob("*/metrics.json"))) == 2
