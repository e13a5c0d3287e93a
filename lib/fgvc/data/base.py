"""What every dataset loader shares: samples, splits, robust image loading, index-file parsing.

A loader (``load_cub``, ``load_cars``, ``load_aircraft``) reads a dataset's official index
files and returns a :class:`Split`: plain lists of :class:`Sample` (absolute path, 0-based
label, optional box and part keypoints, all in original-image pixels). Images are decoded
only later, by :class:`ImageDataset`, through :func:`load_rgb`, which converts every
colour mode to RGB and turns an unreadable file into a :class:`BadImage` naming the path.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from fgvc.cli import UserError

Box = tuple[float, float, float, float]
Parts = tuple[tuple[float, float, int], ...]


class DatasetNotFound(FileNotFoundError):
    """A dataset root or one of its files is missing; the message says what, where and how to get it."""


class MalformedIndex(DatasetNotFound):
    """An index file exists but a line cannot be parsed (corrupt or truncated extraction)."""


class BadImage(Exception):
    """An image file that cannot be decoded: missing, truncated or not an image."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CorruptImagesError(UserError, RuntimeError):
    """Some images of a dataset cannot be decoded; `.bad` lists ``(path, reason)`` for each."""

    def __init__(self, bad: Sequence[tuple[str, str]], hint: str = ""):
        self.bad = list(bad)
        lines = [f"{len(self.bad)} unreadable image(s):"] + [f"  {p}: {r}" for p, r in self.bad]
        super().__init__("\n".join(lines + ([hint] if hint else [])))


@dataclass(frozen=True)
class Sample:
    """One image of a dataset. Boxes are (x, y, w, h) and parts (x, y, visible), in original pixels."""

    path: str
    label: int
    box: Box | None = None
    parts: Parts | None = None


VAL_FILE = "validation_images.txt"  # a dataset's own validation image ids (SynthBirds' extension)


@dataclass
class Split:
    """The official train/test split of a dataset. Validation is carved later from train,
    unless the dataset defines its own (`val`: SynthBirds generated with val_per_class > 0,
    whose validation images are drawn apart from train and listed in validation_images.txt)."""

    train: list[Sample]
    test: list[Sample]
    classes: list[str]
    part_names: list[str] | None = None
    crop_bottom: int = 0  # pixels cut from the bottom of every image (FGVC-Aircraft banner)
    genera: list[str] | None = None  # genus name of each class (fgvc.data.genera); None: unknown
    val: list[Sample] = field(default_factory=list)  # the dataset's own validation split, if any

    @property
    def samples(self) -> list[Sample]:
        """Every image of the dataset: train, its own validation split (if any), test."""
        return self.train + self.val + self.test

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def genus_index(self) -> list[int] | None:
        """Per class, its genus index (genera in order of first appearance); None if unknown."""
        return genus_index(self.genera)


def genus_index(genera: Sequence[str] | None) -> list[int] | None:
    """Per class, the index of its genus (genera numbered in order of first appearance)."""
    if genera is None:
        return None
    ids: dict[str, int] = {}
    return [ids.setdefault(g, len(ids)) for g in genera]


# ----------------------------------------------------------------------------- images

def load_rgb(path: str | os.PathLike, crop_bottom: int = 0) -> Image.Image:
    """Decode an image fully and return it as RGB, with `crop_bottom` pixel rows removed.

    Grayscale, CMYK, palette and 16-bit images are converted; images with transparency are
    composited on white. Any failure (missing file, truncated data, not an image) raises
    :class:`BadImage`. PIL's ``LOAD_TRUNCATED_IMAGES`` is deliberately left off, so a
    truncated JPEG is an error rather than silently grey-filled pixels.
    """
    try:
        with Image.open(path) as im:
            im.load()
            img = _to_rgb(im)
    except FileNotFoundError:
        raise BadImage(path, "missing file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(path, f"unreadable ({type(e).__name__}: {e})") from None
    if crop_bottom > 0:
        w, h = img.size
        if h <= crop_bottom:
            raise BadImage(path, f"height {h} px is not larger than crop_bottom={crop_bottom}")
        img = img.crop((0, 0, w, h - crop_bottom))
    return img


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # 16/32-bit grayscale: scale to 8 bits before converting.
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    return im.convert("RGB")  # L, 1, P, CMYK (incl. Adobe-inverted), YCbCr, LAB, HSV


def scan_images(samples: Sequence[Sample], crop_bottom: int = 0,
                workers: int | None = None) -> list[tuple[str, str]]:
    """Fully decode every image once; return ``(path, reason)`` for each bad one, in input order.

    Decoding runs in a thread pool (PIL releases the GIL while decoding).
    """
    paths = list(dict.fromkeys(s.path for s in samples))  # unique, order kept

    def check(path: str) -> tuple[str, str] | None:
        try:
            load_rgb(path, crop_bottom)
        except BadImage as e:
            return (e.path, e.reason)
        return None

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for r in pool.map(check, paths) if r is not None]


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over samples: ``ds[i] -> (image tensor, label)``.

    Without a transform the image is returned as a float tensor in [0, 1], shape (3, H, W).
    """

    def __init__(self, samples: list[Sample], transform: Callable | None = None, crop_bottom: int = 0):
        self.samples = list(samples)
        self.targets = [s.label for s in self.samples]
        self.transform = transform
        self.crop_bottom = crop_bottom

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL image (banner removed), before any transform."""
        return load_rgb(self.samples[i].path, self.crop_bottom)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.load(i)
        x = self.transform(img) if self.transform is not None else to_tensor(img)
        return x, self.samples[i].label


# ----------------------------------------------------------------------------- index files

def require_file(path: Path, dataset: str, how_to_get: str) -> Path:
    """Return `path` if it is a file, else raise DatasetNotFound naming it and how to get it."""
    if not path.is_file():
        raise DatasetNotFound(f"{dataset}: missing file {path}.\n{how_to_get}")
    return path


def read_rows(path: Path, types: Sequence[type], dataset: str, text_last: bool = False,
              how_to_fix: str = "") -> list[tuple]:
    """Parse a whitespace-separated index file into typed tuples, one per non-blank line.

    `types` gives the converter of each column. With ``text_last=True`` the last column
    takes the rest of the line, spaces included (class names like ``"Boeing 737-200"``).
    A line with the wrong number of fields or an unparsable value raises
    :class:`MalformedIndex` naming the file and line number.
    """
    n = len(types)
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise MalformedIndex(f"{dataset}: {path} is not a text index file ({e}). {how_to_fix}".rstrip()) from None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(maxsplit=n - 1) if text_last else line.split()
        try:
            if len(fields) != n:
                raise ValueError(f"expected {n} fields, got {len(fields)}")
            rows.append(tuple(t(v) for t, v in zip(types, fields)))
        except ValueError as e:
            raise MalformedIndex(
                f"{dataset}: malformed line {lineno} in {path}: {line!r} ({e}).\n"
                f"The file is corrupt or truncated. {how_to_fix}".rstrip()
            ) from None
    return rows


def xyxy1_to_xywh(x1: float, y1: float, x2: float, y2: float) -> Box:
    """A 1-based inclusive (MATLAB-style) corner box -> 0-based (x, y, w, h)."""
    return (float(x1) - 1.0, float(y1) - 1.0, float(x2) - float(x1) + 1.0, float(y2) - float(y1) + 1.0)
