"""Paths of the study, resolved from the repository root (never from the cwd)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
NOTEBOOKS = ROOT / "notebooks"


def results_dir() -> Path:
    """Where run records, tables and figures go (env FGVC_RESULTS overrides)."""
    return Path(os.environ.get("FGVC_RESULTS", ROOT / "results"))


def checkpoints_dir() -> Path:
    """Where checkpoints go: git-ignored, never in the repository (env FGVC_CHECKPOINTS)."""
    return Path(os.environ.get("FGVC_CHECKPOINTS", ROOT / ".checkpoints"))


def data_dir() -> Path:
    """Default parent of dataset roots (env FGVC_DATA overrides)."""
    return Path(os.environ.get("FGVC_DATA", ROOT / "data"))


def resolve(path: str | os.PathLike) -> Path:
    """A relative path is taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
