"""The prepared-image cache: every image decoded and resized once, so training does not decode
full-size JPEGs every epoch.

    python -m fgvc.data prepare NAME --size S [--root R] [--out DIR] [--workers N]

Format (our choice, and why): one uint8 array ``images.npy`` of shape (N, S, S, 3), read
memory-mapped, plus ``index.json``. Each row is the image exactly as the shared transforms
produce it first — RGB from :func:`load_rgb` (banner removed), then
``v2.Resize((S, S), antialias=True)`` on the uint8 tensor — so with S = the profile's
``data.resize`` a batch read from the cache is **bitwise identical** to one decoded from the
original files (the transforms' own Resize is then an identity, and no random draw
changes). The cache is therefore a pure speed option, like the number of loader workers: it
is picked up automatically when present and valid, and it does not enter the run's
config hash. Price: S*S*3 bytes per image on disk (CUB at 550: 0.91 MB x 11,788 = 10.7 GB;
scratch profile at 72: 15.6 kB per image); JPEG q95 would be 10x smaller but lossy and still
needs a decode, PNG lossless but slower to decode than the originals.

Validity: ``index.json`` records every source path with its size and mtime, the resize and
the banner crop; a cache whose sources changed is stale and ignored (``cache="auto"``) or
refused (an explicit cache path). Images that could not be decoded are listed in the index
(rows left black) and skipped or reported by ``build_data`` exactly like the live scan.

Default location: ``$FGVC_CACHE`` or ``data_dir()/cache``, then ``<name>-<S>-<hash of root>``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fgvc.data.base import BadImage, ImageDataset, Sample, load_rgb
from fgvc.data.registry import dataset_root, load_split

VERSION = 1
INDEX, ARRAY = "index.json", "images.npy"


class StaleCache(RuntimeError):
    """A prepared cache that does not match the dataset (sources changed, other size or banner)."""


def cache_root() -> Path:
    """Parent folder of prepared caches (env FGVC_CACHE, else data_dir()/cache)."""
    from fgvc.paths import data_dir

    return Path(os.environ.get("FGVC_CACHE", data_dir() / "cache"))


def default_cache_dir(name: str, size: int, root: str | os.PathLike) -> Path:
    """``cache_root()/<name>-<size>-<8 hex of the resolved dataset root>``."""
    tag = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return cache_root() / f"{name}-{size}-{tag}"


def _resizer(size: int) -> v2.Compose:
    # The first two ops of fgvc.data.transforms.build_transforms, unchanged.
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True)])


def _stat(path: str) -> list[int] | None:
    """[size, mtime_ns] of a file, None if it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _unique_paths(samples: Sequence[Sample]) -> list[str]:
    return list(dict.fromkeys(s.path for s in samples))


def prepare_samples(samples: Sequence[Sample], size: int, out: str | os.PathLike, *,
                    crop_bottom: int = 0, workers: int | None = None,
                    log: Callable[[str], None] | None = print) -> Path:
    """Write the cache of `samples` (unique paths, in order) at `size` into folder `out`.

    Written into a temporary sibling folder and renamed into place, so an interrupted
    prepare never leaves a half cache that looks valid.
    """
    out = Path(out)
    paths = _unique_paths(samples)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arr = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=np.uint8,
                                    shape=(len(paths), size, size, 3))
    resize = _resizer(size)
    bad: dict[str, str] = {}
    start = time.perf_counter()

    def one(i: int) -> None:
        try:
            img = load_rgb(paths[i], crop_bottom)
        except BadImage as e:
            bad[paths[i]] = e.reason
            return
        arr[i] = resize(img).permute(1, 2, 0).numpy()  # (S, S, 3) uint8

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel over images instead (PIL and torch release the GIL)
    try:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for k, _ in enumerate(pool.map(one, range(len(paths))), 1):
                if log and (k % 2000 == 0 or k == len(paths)):
                    log(f"prepared {k}/{len(paths)} images ({k / (time.perf_counter() - start):.0f}/s)")
    finally:
        torch.set_num_threads(threads)
    arr.flush()
    del arr
    index = {"version": VERSION, "size": size, "crop_bottom": crop_bottom, "paths": paths,
             "stat": [_stat(p) for p in paths],
             "bad": [[p, bad[p]] for p in paths if p in bad]}
    (tmp / INDEX).write_text(json.dumps(index))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def prepare(name: str, size: int, root: str | os.PathLike | None = None, *,
            out: str | os.PathLike | None = None, remove_banner: bool = True,
            synth: dict | None = None, workers: int | None = None,
            log: Callable[[str], None] | None = print) -> Path:
    """Prepare the cache of dataset `name` (train and test) at `size`; return its folder."""
    from fgvc.paths import resolve

    split = load_split(name, root, remove_banner=remove_banner, synth=synth)
    root = resolve(root) if root is not None else dataset_root(name, synth)  # the folder load_split read
    out = Path(out) if out is not None else default_cache_dir(name, size, root)
    return prepare_samples(split.samples, size, out, crop_bottom=split.crop_bottom,
                           workers=workers, log=log)


class PreparedImages:
    """A prepared cache opened for reading: ``image(path) -> tv_tensors.Image (3, S, S) uint8``.

    The array is memory-mapped lazily in each process (safe to pickle into loader workers).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / INDEX).is_file() or not (self.folder / ARRAY).is_file():
            raise FileNotFoundError(f"no prepared cache in {self.folder} (create one with "
                                    "`python -m fgvc.data prepare NAME --size S`)")
        index = json.loads((self.folder / INDEX).read_text())
        self.size: int = index["size"]
        self.crop_bottom: int = index["crop_bottom"]
        self.version: int = index.get("version", 0)
        self.paths: list[str] = index["paths"]
        self.stat: list = index["stat"]
        self.bad: list[tuple[str, str]] = [tuple(b) for b in index["bad"]]
        self.row = {p: i for i, p in enumerate(self.paths)}
        self.bad_paths = {p for p, _ in self.bad}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def problem(self, samples: Sequence[Sample], size: int, crop_bottom: int) -> str | None:
        """Why this cache cannot stand in for the originals of `samples` (None if it can)."""
        if self.version != VERSION:
            return f"format version {self.version}, expected {VERSION}"
        if self.size != size:
            return f"prepared at size {self.size}, not {size}"
        if self.crop_bottom != crop_bottom:
            return f"prepared with crop_bottom={self.crop_bottom}, not {crop_bottom}"
        for p in _unique_paths(samples):
            i = self.row.get(p)
            if i is None:
                return f"{p} is not in the cache"
            if _stat(p) != self.stat[i]:
                return f"{p} changed since the cache was prepared"
        return None

    def bad_of(self, samples: Sequence[Sample]) -> list[tuple[str, str]]:
        """(path, reason) of the images among `samples` that could not be decoded, in order."""
        bad = dict(self.bad)
        return [(p, bad[p]) for p in _unique_paths(samples) if p in bad]

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.folder / ARRAY, mmap_mode="r")
        return self._array

    def image(self, path: str) -> tv_tensors.Image:
        hwc = torch.from_numpy(np.array(self.array[self.row[path]]))  # copy out of the map
        return tv_tensors.Image(hwc.permute(2, 0, 1))  # (3, S, S) uint8


class CachedImageDataset(ImageDataset):
    """An :class:`ImageDataset` whose ``__getitem__`` reads the prepared cache instead of decoding.

    ``load(i)`` (used for display and Grad-CAM galleries) still returns the original image.
    """

    def __init__(self, samples: list[Sample], transform: Callable | None = None,
                 crop_bottom: int = 0, cache: PreparedImages | None = None):
        super().__init__(samples, transform, crop_bottom)
        self.cache = cache

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.samples[i].path
        if path in self.cache.bad_paths:  # as decoding the original would
            raise BadImage(path, dict(self.cache.bad)[path])
        x = self.cache.image(path)
        if self.transform is not None:
            x = self.transform(x)
        else:
            x = x.as_subclass(torch.Tensor).float().div_(255)
        return x, self.samples[i].label


def find_cache(name: str, root: str | os.PathLike, samples: Sequence[Sample], size: int,
               crop_bottom: int, cache: bool | str | os.PathLike | None) -> PreparedImages | None:
    """The valid cache to use, or None.

    `cache`: False/None = never; True or "auto" = the default cache folder if it exists and
    is valid (else None: decode the originals); a path = that folder, which must be valid
    (:class:`StaleCache` or FileNotFoundError otherwise).
    """
    if cache in (None, False):
        return None
    explicit = cache not in (True, "auto")
    folder = Path(cache) if explicit else default_cache_dir(name, size, root)
    if not explicit and not (folder / INDEX).is_file():
        return None
    prepared = PreparedImages(folder)
    why = prepared.problem(samples, size, crop_bottom)
    if why is None:
        return prepared
    if explicit:
        raise StaleCache(f"prepared cache {folder} cannot be used: {why}. Prepare it again "
                         f"with `python -m fgvc.data prepare {name} --size {size}`.")
    import warnings

    warnings.warn(f"ignoring stale prepared cache {folder}: {why}; decoding the originals "
                  f"(re-run `python -m fgvc.data prepare {name} --size {size}`)", stacklevel=2)
    return None
