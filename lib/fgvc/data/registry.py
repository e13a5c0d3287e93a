"""Which datasets exist, what they are called and where they live: one :class:`DatasetInfo`
per dataset, discovered like the methods.

A dataset is one module of this package that calls :func:`register_dataset` at import with
its :class:`DatasetInfo`: its name (the CLI choice, the config's ``dataset``, ``data/<name>``),
its loader, its display name ("CUB-200-2011"), which paper column its numbers stand beside,
and its key in ``manifest.json``. The module also holds its loader and its genus rule (the
coarse level the loader writes into ``Split.genera``). Every public module of this folder except
the infrastructure of :data:`NOT_DATASETS` is imported on first use (:func:`dataset_modules`),
so a new module is found by itself: by ``python -m fgvc.data``, the train CLI, the config
validation, the grid, the results tables and figures (which keep no list of names).

Checksums and expected split counts stay in ``manifest.json`` beside this file (data, read
by :mod:`fgvc.data.download`), one entry per dataset under its :attr:`DatasetInfo.manifest_key`;
a dataset without an entry is not downloadable and is checked without expected counts.

Display order: :func:`list_datasets` returns names by (``order``, name); tables and figures
show datasets in that order.

A lower module of :mod:`fgvc.data` (which re-exports all of it), so that modules of the
package such as :mod:`fgvc.data.prepare` can load a split without importing the package
``__init__`` back.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fgvc.data.base import Split

# Modules of this package that are no dataset (shared code); every other public module is
# one dataset's module and registers it on import.
NOT_DATASETS = frozenset({"audit", "base", "download", "genera", "prepare", "registry", "samplers", "splits",
                          "transforms"})


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the study needs to know about one dataset, declared in its own module.

    - `load(root, **options) -> Split`: read (or, for a generated set, make) the official
      split; `options` are what :func:`load_split` passes (``remove_banner``, ``synth``), each
      loader takes the ones it needs.
    - `title`: the display name in tables and figures.
    - `paper`: the dataset whose column of the papers' tables stands beside ours ("cub" for
      SynthBirds); "" = none (no paper reports on it). `short`: how the papers' tables and
      the variants' notes name it ("CUB"), for datasets that are a paper column.
    - `claims`: the paper dataset whose claimed gains the claims table tests on it, where it
      stands beside no paper column (CUB-30, a subset of CUB: "cub"); "" = `paper`.
    - `order`: display order (ties by name).
    - `manifest`: its key in manifest.json ("" = the name).
    - `root(options) -> Path`: default root when it is not ``data/<name>`` (SynthBirds: one
      folder per generator spec); `inspect(root) -> Split`: read what is on disk without
      making anything (``check``), default `load`; `place(root, info, log) -> Path`: replaces
      the archive download (Stanford Cars: no public source, says where to put the files);
      `notes(root, manifest) -> list[str]`: extra lines for ``check``; `generate(root, seed)`:
      for a generated set, ``python -m fgvc.data generate``; `cut(source, root) -> Path`: for a
      subset of another dataset, ``python -m fgvc.data cut`` (CUB-30 from a user's CUB);
      `how_to_get`: said when a dataset has no download.
    """

    name: str
    title: str
    load: Callable[..., Split]
    paper: str = ""
    short: str = ""
    claims: str = ""
    order: int = 1000
    manifest: str = ""
    root: Callable[[dict | None], Path] | None = None
    inspect: Callable[[Path], Split] | None = None
    place: Callable[..., Path] | None = None
    notes: Callable[[Path, dict], list[str]] | None = None
    generate: Callable[..., Path] | None = None
    cut: Callable[..., Path] | None = None
    how_to_get: str = "see data/README.md"

    @property
    def manifest_key(self) -> str:
        return self.manifest or self.name


_DATASETS: dict[str, DatasetInfo] = {}
_loaded = False


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make dataset `info` known under ``info.name`` (one name, one declaration); returns it."""
    if not info.name:
        raise ValueError(f"a dataset without a name: {info!r}")
    old = _DATASETS.get(info.name)
    if old is not None and old.load is not info.load:
        raise ValueError(f"dataset name {info.name!r} is taken (loader {old.load.__module__}.{old.load.__qualname__})")
    _DATASETS[info.name] = info
    return info


def dataset_modules() -> list[str]:
    """Names of the dataset modules of this package: every module in its folder except
    :data:`NOT_DATASETS` and private (``_``-prefixed) ones, sorted."""
    folder = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([folder])
                  if not m.ispkg and m.name not in NOT_DATASETS and not m.name.startswith("_"))


def _load_all() -> None:
    """Import every dataset module once; a module that fails to import is an error with its cause."""
    global _loaded
    if _loaded:
        return
    for mod in dataset_modules():
        name = f"{__package__}.{mod}"
        try:
            importlib.import_module(name)
        except Exception as e:
            raise ImportError(f"dataset module {name} failed to import: {type(e).__name__}: {e}", name=name) from e
    _loaded = True


def list_datasets() -> list[str]:
    """Every registered dataset's name in display order: by its ``order``, then name."""
    _load_all()
    return sorted(_DATASETS, key=lambda d: (_DATASETS[d].order, d))


def dataset_info(name: str) -> DatasetInfo:
    """The declaration of dataset `name`; an unknown name is an error listing the valid ones."""
    _load_all()
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def display_name(name: str) -> str:
    """The title of dataset `name` for tables and figures (the name itself if unknown)."""
    _load_all()
    return _DATASETS[name].title if name in _DATASETS else name


def paper_dataset(name: str) -> str:
    """The dataset whose paper numbers stand beside ours on `name` (CUB's for SynthBirds);
    `name` itself where its declaration names none or it is unknown."""
    _load_all()
    info = _DATASETS.get(name)
    return (info.paper if info is not None and info.paper else name)


def claims_dataset(name: str) -> str:
    """The paper dataset whose claimed gains are tested on `name`: its declared `claims`, else
    :func:`paper_dataset` (CUB's for SynthBirds and for CUB-30, whose own tables show no
    paper numbers)."""
    _load_all()
    info = _DATASETS.get(name)
    return info.claims if info is not None and info.claims else paper_dataset(name)


def paper_datasets() -> list[str]:
    """The datasets that are a column of the papers' tables (their own `paper`), in display order."""
    return [d for d in list_datasets() if _DATASETS[d].paper == d]


class _Datasets(Mapping):
    """:data:`DATASETS`: name -> :class:`DatasetInfo` in display order, filled on first use."""

    def __getitem__(self, name: str) -> DatasetInfo:
        _load_all()
        return _DATASETS[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list_datasets())

    def __len__(self) -> int:
        _load_all()
        return len(_DATASETS)

    def __repr__(self) -> str:
        return f"DATASETS({list_datasets()})"


DATASETS: Mapping[str, DatasetInfo] = _Datasets()


def default_root(name: str) -> Path:
    """Where dataset `name` lives by default: ``fgvc.paths.data_dir() / name``."""
    from fgvc.paths import data_dir

    return data_dir() / name


def dataset_root(name: str, options: dict | None = None) -> Path:
    """The default root of dataset `name` with these generator `options` (SynthBirds: one
    folder per spec); ``default_root(name)`` for a dataset that declares no `root`."""
    info = dataset_info(name)
    return info.root(options) if info.root is not None else default_root(name)


def load_split(name: str, root: str | os.PathLike | None = None, *, remove_banner: bool = True,
               synth: dict | None = None) -> Split:
    """The official Split of dataset `name` (root relative to the repository root; default per name)."""
    from fgvc.paths import resolve

    info = dataset_info(name)
    root = resolve(root) if root is not None else dataset_root(name, synth)
    return info.load(root, remove_banner=remove_banner, synth=synth)

