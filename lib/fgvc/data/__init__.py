"""Datasets of the study: loaders for the official on-disk layouts, and :func:`build_data`.

    >>> bundle = build_data("synthbirds", resize=128, crop=112)     # doctest: +SKIP
    >>> bundle.train[0][0].shape                                     # doctest: +SKIP
    torch.Size([3, 112, 112])

Every loader returns a :class:`Split` (official train/test, class names, boxes/parts);
:func:`build_data` adds the seeded stratified validation split carved from train, the
shared transforms, and a one-time scan for unreadable images. Command line:
``python -m fgvc.data {check,download,generate} ...`` (see ``__main__.py``). Which datasets
exist, their names and order: :mod:`fgvc.data.registry` (one module per dataset, discovered).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from fgvc.data.aircraft import load_aircraft
from fgvc.data.base import (BadImage, CorruptImagesError, DatasetNotFound, ImageDataset, MalformedIndex, Sample, Split,
                   load_rgb, scan_images)
from fgvc.data.cars import load_cars
from fgvc.data.cub import load_cub
from fgvc.data.genera import CARS_MULTIWORD_MAKES, aircraft_families, cars_make, cub_genus, genus_index, synthbirds_genera
from fgvc.data.registry import (DATASETS, DatasetInfo, dataset_info, dataset_root, default_root, display_name,
                                list_datasets, load_split, paper_dataset, paper_datasets, register_dataset)
from fgvc.data.samplers import PairedBatchSampler
from fgvc.data.splits import stratified_split
from fgvc.data.synthbirds import default_root as synthbirds_root
from fgvc.data.synthbirds import load_synthbirds
from fgvc.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms, denormalize


@dataclass
class DataBundle:
    """Everything a run needs from the data side."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    classes: list[str]
    num_classes: int
    split: Split
    bad_images: list[tuple[str, str]] = field(default_factory=list)

    @property
    def genera(self) -> list[str] | None:
        """Genus name of each class (fgvc.data.genera), aligned with `classes`; None if unknown."""
        return self.split.genera

    @property
    def genus_index(self) -> list[int] | None:
        """Per class, its genus index: what fgvc.engine.evaluate takes as `genus`."""
        return self.split.genus_index


def build_data(name: str, root: str | os.PathLike | None = None, *, resize: int, crop: int,
               val_fraction: float = 0.1, seed: int = 0, rotation: float = 0.0, vflip: bool = False,
               hflip: bool = True, remove_banner: bool = True, check_images: bool = True,
               skip_bad_images: bool = False, synth: dict | None = None,
               cache: bool | str | os.PathLike | None = "auto") -> DataBundle:
    """Load dataset `name`, carve a stratified validation split from train (unless the dataset
    has its own, ``Split.val``), attach transforms.

    - `root`: dataset root (relative paths are taken from the repository root); default
      ``dataset_root(name, synth)``.
    - `val_fraction`, `seed`: validation split (see :func:`stratified_split`); test is untouched.
      Unused when the dataset defines its own validation split (SynthBirds' val_per_class).
    - `check_images`: decode every image once before training. A bad image (missing,
      truncated, unreadable) raises :class:`CorruptImagesError` listing each path and reason,
      unless `skip_bad_images`, which drops them and records them in ``bundle.bad_images``.
    - `remove_banner`: FGVC-Aircraft only; `synth`: keyword arguments for SynthBirds generation.
    - `cache`: read images from the prepared cache (``python -m fgvc.data prepare``, see
      :mod:`fgvc.data.prepare`): "auto"/True = the default cache folder when it exists and is
      valid for these files at `resize`, a path = that folder (must be valid), False = never.
      Batches are bitwise identical either way; the cache only saves decoding and resizing.
    """
    split = load_split(name, root, remove_banner=remove_banner, synth=synth)
    # --- prepared-image cache (fgvc.data.prepare) -----------------------------------------
    from fgvc.paths import resolve as _resolve_path

    from fgvc.data.prepare import CachedImageDataset, find_cache

    data_root = _resolve_path(root) if root is not None else dataset_root(name, synth)
    prepared = find_cache(name, data_root, split.samples, resize, split.crop_bottom, cache)
    # ---------------------------------------------------------------------------------------
    bad: list[tuple[str, str]] = []
    if check_images:
        if prepared is not None:  # prepare decoded every image already; it lists the bad ones
            bad = prepared.bad_of(split.samples)
        else:
            bad = scan_images(split.samples, split.crop_bottom)
        if bad and not skip_bad_images:
            raise CorruptImagesError(bad, "Fix or remove these files, or pass skip_bad_images=True to skip them.")
        bad_paths = {p for p, _ in bad}
        split = Split(train=[s for s in split.train if s.path not in bad_paths],
                      test=[s for s in split.test if s.path not in bad_paths],
                      classes=split.classes, part_names=split.part_names, crop_bottom=split.crop_bottom,
                      genera=split.genera, val=[s for s in split.val if s.path not in bad_paths])

    if split.val:  # the dataset's own validation split: train is all of train, val_fraction unused
        train_samples, val_samples = split.train, split.val
    else:
        train_idx, val_idx = stratified_split([s.label for s in split.train], val_fraction, seed)
        train_samples = [split.train[i] for i in train_idx]
        val_samples = [split.train[i] for i in val_idx]
    train_tf = build_transforms(resize, crop, train=True, rotation=rotation, hflip=hflip, vflip=vflip)
    eval_tf = build_transforms(resize, crop, train=False)
    cb = split.crop_bottom

    def dataset(samples, tf) -> ImageDataset:
        if prepared is not None:
            return CachedImageDataset(samples, tf, cb, cache=prepared)
        return ImageDataset(samples, tf, cb)

    return DataBundle(
        train=dataset(train_samples, train_tf),
        val=dataset(val_samples, eval_tf),
        test=dataset(split.test, eval_tf),
        classes=split.classes,
        num_classes=len(split.classes),
        split=split,
        bad_images=bad,
    )


__all__ = [
    "BadImage", "CARS_MULTIWORD_MAKES", "CorruptImagesError", "DATASETS", "DataBundle", "DatasetInfo",
    "DatasetNotFound", "dataset_info", "dataset_root", "display_name", "list_datasets", "paper_dataset",
    "paper_datasets", "register_dataset",
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageDataset", "MalformedIndex", "PairedBatchSampler", "Sample", "Split",
    "aircraft_families", "build_data", "build_transforms", "cars_make", "cub_genus", "default_root", "denormalize",
    "genus_index", "load_aircraft", "load_cars", "load_cub", "load_rgb", "load_split", "load_synthbirds",
    "scan_images", "stratified_split", "synthbirds_genera",
]
