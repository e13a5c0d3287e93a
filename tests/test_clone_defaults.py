"""Nothing run with its defaults touches a committed file: every notebook, executed with its
stored defaults in a clone of the repository (the working tree's tracked files) and with no
FGVC_* variable set, leaves `git status` clean; what it writes goes to git-ignored folders."""
import os
import subprocess
import sys

import pytest

from fgvc.paths import NOTEBOOKS, ROOT

NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A git repository holding the tracked files of this working tree, as they are now."""
    root = tmp_path_factory.mktemp("clone")
    files = [f for f in _git(ROOT, "ls-files", "-z").split("\0") if f and (ROOT / f).is_file()]
    subprocess.run(["tar", "-cf", "-", "-C", str(ROOT), "--null", "-T", "-"],
                   input="\0".join(files).encode(), stdout=open(root / "files.tar", "wb"), check=True)
    subprocess.run(["tar", "-xf", "files.tar"], cwd=root, check=True)
    (root / "files.tar").unlink()
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "clone")
    assert _git(root, "status", "--porcelain") == ""
    return root


@pytest.mark.slow
def test_every_notebook_with_its_stored_defaults_leaves_a_clone_clean(clone, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FGVC_")}
    env.update(PYTHONPATH=str(clone / "lib"), TQDM_DISABLE="1")  # the clone's library
    for name in NAMES:
        proc = subprocess.run([sys.executable, "-m", "fgvc.study.notebook",
                               str(clone / "notebooks" / name), str(tmp_path / name),
                               "--cwd", str(clone)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
    assert _git(clone, "status", "--porcelain") == ""
    # the training notebook's smoke run went to the git-ignored scratch folder
    assert list((clone / "scratch/results/runs").glob("*/metrics.json"))
    ignored = _git(clone, "status", "--porcelain", "--ignored")
    assert "!! scratch/" in ignored
