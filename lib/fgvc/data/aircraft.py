"""FGVC-Aircraft 2013b (Maji et al. 2013), variant level (100 classes).

Layout (``root`` may be ``fgvc-aircraft-2013b`` itself or its parent)::

    fgvc-aircraft-2013b/data/
      images/<image_id>.jpg
      variants.txt                      one variant name per line (defines the class order)
      images_variant_trainval.txt       <image_id> <variant name>   6,667 lines
      images_variant_test.txt           <image_id> <variant name>   3,333 lines
      images_variant_train.txt / _val.txt   (the halves of trainval; not used by the standard protocol)
      images_box.txt                    <image_id> <xmin> <ymin> <xmax> <ymax>   (1-based, optional here)
      families.txt, images_family_{trainval,test}.txt   the 70 families (optional here): ``Split.genera``

The standard protocol trains on **trainval** (6,667) and tests on test (3,333); training on
``train`` alone (3,334) is a known mistake in FGVC code. Every image carries a copyright
banner about 20 px high along its bottom edge: ``remove_banner=True`` (default) sets
``Split.crop_bottom = 20`` so the loader cuts it off before any transform. Boxes stay in
original (uncropped) pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from fgvc.data.base import DatasetNotFound, MalformedIndex, Sample, Split, read_rows, require_file, xyxy1_to_xywh
from fgvc.data.registry import DatasetInfo, register_dataset

NAME = "FGVC-Aircraft"
BANNER_PX = 20
HOW_TO_GET = ("Get it with `python -m fgvc.data download aircraft --root R` (the Oxford VGG archive "
              "fgvc-aircraft-2013b.tar.gz), or extract that archive so that "
              "R/fgvc-aircraft-2013b/data/variants.txt exists.")
FIX = "Re-extract fgvc-aircraft-2013b.tar.gz (or re-run `python -m fgvc.data download aircraft`)."


def find_aircraft_dir(root: str | os.PathLike) -> Path:
    """The ``data`` folder of the dataset, under `root` or `root/fgvc-aircraft-2013b`."""
    root = Path(root).expanduser()
    for cand in (root / "data", root / "fgvc-aircraft-2013b" / "data", root):
        if (cand / "variants.txt").is_file():
            return cand.resolve()
    where = "does not exist" if not root.exists() else "has no data/variants.txt (nor fgvc-aircraft-2013b/data/variants.txt)"
    raise DatasetNotFound(f"{NAME} not found: {root} {where}.\n{HOW_TO_GET}")


def load_aircraft(root: str | os.PathLike, remove_banner: bool = True) -> Split:
    """Read FGVC-Aircraft (variant level, trainval/test) into a :class:`Split`."""
    data = find_aircraft_dir(root)
    classes = [line.strip() for line in require_file(data / "variants.txt", NAME, HOW_TO_GET)
               .read_text(encoding="utf-8").splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classes)}

    boxes = {}
    if (data / "images_box.txt").is_file():
        for image_id, x1, y1, x2, y2 in read_rows(data / "images_box.txt", (str, float, float, float, float),
                                                  NAME, how_to_fix=FIX):
            boxes[image_id] = xyxy1_to_xywh(x1, y1, x2, y2)

    def read(split: str) -> list[Sample]:
        path = require_file(data / f"images_variant_{split}.txt", NAME, HOW_TO_GET)
        out = []
        for image_id, variant in read_rows(path, (str, str), NAME, text_last=True, how_to_fix=FIX):
            if variant not in index:
                raise MalformedIndex(f"{NAME}: variant {variant!r} of image {image_id} in {path} "
                                     f"is not listed in {data / 'variants.txt'}. {FIX}")
            out.append(Sample(str(data / "images" / f"{image_id}.jpg"), index[variant], boxes.get(image_id)))
        return out

    return Split(train=read("trainval"), test=read("test"), classes=classes,
                 crop_bottom=BANNER_PX if remove_banner else 0,
                 genera=aircraft_families(data, classes, NAME, FIX))


def aircraft_families(data: Path, classes: Sequence[str], dataset: str = "FGVC-Aircraft",
                      fix: str = "") -> list[str] | None:
    """The family of each variant in `classes`, from the family files in the ``data`` folder.

    None when ``images_family_trainval.txt`` / ``images_family_test.txt`` are absent. A variant
    seen with two families, a variant without any image in the family files, or a family not
    in ``families.txt`` (when that file is there) raises :class:`MalformedIndex`.
    """
    data = Path(data)
    family_files = [data / f"images_family_{s}.txt" for s in ("trainval", "test")]
    if not all(p.is_file() for p in family_files):
        return None
    variant_of: dict[str, str] = {}
    for s in ("trainval", "test"):
        for image_id, variant in read_rows(data / f"images_variant_{s}.txt", (str, str), dataset,
                                           text_last=True, how_to_fix=fix):
            variant_of[image_id] = variant
    family: dict[str, str] = {}
    for path in family_files:
        for image_id, fam in read_rows(path, (str, str), dataset, text_last=True, how_to_fix=fix):
            variant = variant_of.get(image_id)
            if variant is None:
                continue  # an image without a variant line: no class to name
            if family.setdefault(variant, fam) != fam:
                raise MalformedIndex(f"{dataset}: variant {variant!r} has two families in {data} "
                                     f"({family[variant]!r} and {fam!r}, image {image_id}). {fix}".rstrip())
    missing = [v for v in classes if v not in family]
    if missing:
        raise MalformedIndex(f"{dataset}: no family for variant(s) {missing} in "
                             f"{family_files[0].name} / {family_files[1].name} under {data}. {fix}".rstrip())
    out = [family[v] for v in classes]
    listed = data / "families.txt"
    if listed.is_file():
        known = {line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()}
        unknown = sorted(set(out) - known)
        if unknown:
            raise MalformedIndex(f"{dataset}: families {unknown} are not listed in {listed}. {fix}".rstrip())
    return out


def _load(root: Path, remove_banner: bool = True, **options) -> Split:
    return load_aircraft(root, remove_banner=remove_banner)


DATASET = register_dataset(DatasetInfo(name="aircraft", title=NAME, load=_load, paper="aircraft", short="Aircraft",
                                       order=40))
