"""Which datasets exist and where they live: :data:`DATASETS`, :func:`default_root`,
:func:`load_split` (the official Split of a dataset by name).

A lower module of :mod:`fgvc.data` (which re-exports all of it), so that modules of the
package such as :mod:`fgvc.data.prepare` can load a split without importing the package
``__init__`` back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from fgvc.data.aircraft import load_aircraft
from fgvc.data.base import Split
from fgvc.data.cars import load_cars
from fgvc.data.cub import load_cub


def load_synthbirds(root: str | os.PathLike, seed: int = 0, **size_kwargs) -> Split:
    """Generate SynthBirds in CUB layout under `root` if absent, then read it with :func:`load_cub`."""
    from fgvc.data import synthbirds  # lazy: written in parallel, and generation needs nothing else from here

    return load_cub(synthbirds.ensure(root, seed=seed, **size_kwargs))


DATASETS: dict[str, Callable[..., Split]] = {
    "cub": load_cub,
    "cars": load_cars,
    "aircraft": load_aircraft,
    "synthbirds": load_synthbirds,
}


def default_root(name: str) -> Path:
    """Where dataset `name` lives by default: ``fgvc.paths.data_dir() / name``."""
    from fgvc.paths import data_dir

    return data_dir() / name


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")


def load_split(name: str, root: str | os.PathLike | None = None, *, remove_banner: bool = True,
               synth: dict | None = None) -> Split:
    """The official Split of dataset `name` (root relative to the repository root; default per name)."""
    from fgvc.paths import resolve

    _check_name(name)
    if root is not None:
        root = resolve(root)
    else:
        root = synthbirds_root(synth) if name == "synthbirds" else default_root(name)
    if name == "aircraft":
        return load_aircraft(root, remove_banner=remove_banner)
    if name == "synthbirds":
        return load_synthbirds(root, **(synth or {}))
    return DATASETS[name](root)


def synthbirds_root(synth: dict | None = None) -> Path:
    """Default root of a SynthBirds set: ``data/synthbirds/<spec>``, one folder per generator
    spec ("default" for the default one), so runs with different sizes never share a folder."""
    import hashlib
    import json

    from fgvc.data import synthbirds

    synth = dict(synth or {})
    sp = synthbirds.spec(**synth)
    name = "default" if sp == synthbirds.spec() else \
        "spec-" + hashlib.sha256(json.dumps(sp, sort_keys=True).encode()).hexdigest()[:10]
    return default_root("synthbirds") / name
