"""Paths of the study, resolved from the repository root (never from the cwd)."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
NOTEBOOKS = ROOT / "notebooks"
# The committed study (tracked): read by the reports and the reproduction; written only by the
# maintainers' commands, which name it as their destination (FGVC_RESULTS=results, --write).
STUDY = ROOT / "results"
# Git-ignored: where everything else writes by default, so that nothing run with its defaults
# (a notebook, a command) touches a tracked file.
SCRATCH = ROOT / "scratch"


def results_dir() -> Path:
    """Where run records, tables and figures go: env FGVC_RESULTS (a relative path is taken
    from the repository root), else the git-ignored scratch/results."""
    env = os.environ.get("FGVC_RESULTS")
    return resolve(env) if env else SCRATCH / "results"


def checkpoints_for(results_root: str | os.PathLike) -> Path:
    """The checkpoints of a results root, one folder per root, so that a run never resumes from
    the checkpoint of the same run id in another root (a scratch run from a study run's):
    .checkpoints/ for the committed study, `<root>/.checkpoints` for any other root."""
    root = resolve(results_root)
    return ROOT / ".checkpoints" if root.resolve() == STUDY.resolve() else root / ".checkpoints"


def checkpoints_dir() -> Path:
    """Where checkpoints go: git-ignored, never in the repository; env FGVC_CHECKPOINTS, else
    those of the results root (checkpoints_for(results_dir()))."""
    env = os.environ.get("FGVC_CHECKPOINTS")
    return resolve(env) if env else checkpoints_for(results_dir())


def data_dir() -> Path:
    """Default parent of dataset roots (env FGVC_DATA overrides; generated data is git-ignored)."""
    env = os.environ.get("FGVC_DATA")
    return resolve(env) if env else ROOT / "data"


def resolve(path: str | os.PathLike) -> Path:
    """A relative path is taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def portable(text: str) -> str:
    """`text` with this machine's paths replaced: the results, checkpoints and data folders by
    their path in the repository or by $FGVC_RESULTS / $FGVC_CHECKPOINTS / $FGVC_DATA, the
    repository by a relative path, the home folder by ~."""
    places = []
    for var, folder in (("FGVC_RESULTS", results_dir()), ("FGVC_CHECKPOINTS", checkpoints_dir()),
                        ("FGVC_DATA", data_dir())):
        for path in {str(folder), str(folder.resolve())}:
            try:
                label = str(Path(path).resolve().relative_to(ROOT.resolve()))
            except ValueError:
                label = f"${var}"
            places.append((path, label))
    places += [(str(ROOT), "."), (str(ROOT.resolve()), "."), (str(Path.home()), "~")]
    for path, label in sorted(places, key=lambda p: -len(p[0])):
        if len(path) > 1:  # a whole path only: followed by "/" or by no further name character
            text = re.sub(re.escape(path) + r"(/|(?![\w.-]))",
                          lambda m, label=label: "" if label == "." and m[1] else label + m[1],
                          text)
    return text
