"""CUB-200-2011 (Caltech-UCSD Birds), read from its official on-disk layout.

Layout (``root`` may be the ``CUB_200_2011`` folder itself or its parent)::

    CUB_200_2011/
      images/NNN.Name/*.jpg
      images.txt              <image_id> <relative path>
      image_class_labels.txt  <image_id> <class_id>        (1-based)
      train_test_split.txt    <image_id> <is_training_image>
      classes.txt             <class_id> <class name>
      bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (optional here)
      parts/parts.txt         <part_id> <part name>                 (optional here)
      parts/part_locs.txt     <image_id> <part_id> <x> <y> <visible> (optional here)

Real CUB: 5,994 train / 5,794 test images, 200 classes, 15 parts. ``Split.genera`` gives each
class its bird group, the last word of its name (``001.Black_footed_Albatross`` ->
``Albatross``); a SynthBirds set gives its generator's genera instead. SynthBirds is written in
the same layout and read by the same function. Boxes and parts are kept exactly as the
files give them (pixels of the original image); a part that is not visible has (0, 0, 0).
"""
from __future__ import annotations

import os
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from fgvc.data.base import (VAL_FILE, DatasetNotFound, MalformedIndex, Sample, Split, read_rows,
                             require_file)
from fgvc.data.registry import DatasetInfo, register_dataset

NAME = "CUB-200-2011"
HOW_TO_GET = ("Get it with `python -m fgvc.data download cub --root R` (the Caltech archive "
              "CUB_200_2011.tgz), or extract CUB_200_2011.tgz yourself so that R/CUB_200_2011/images.txt exists.")
FIX = "Re-extract CUB_200_2011.tgz (or re-run `python -m fgvc.data download cub`)."
SYNTHBIRDS_META = "synthbirds.json"  # fgvc.data.synthbirds.META_FILE (not imported: the generator reads with this loader)


def find_cub_dir(root: str | os.PathLike) -> Path:
    """The folder holding images.txt: `root` itself or `root/CUB_200_2011`."""
    root = Path(root).expanduser()
    for cand in (root, root / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand.resolve()
    where = "does not exist" if not root.exists() else "has no images.txt (nor CUB_200_2011/images.txt)"
    raise DatasetNotFound(f"{NAME} not found: {root} {where}.\n{HOW_TO_GET}")


def load_cub(root: str | os.PathLike) -> Split:
    """Read CUB-200-2011 (or a dataset in its layout) into a :class:`Split`."""
    base = find_cub_dir(root)

    def need(rel: str) -> Path:
        return require_file(base / rel, NAME, HOW_TO_GET)

    def rows(path: Path, types, text_last=False):
        return read_rows(path, types, NAME, text_last=text_last, how_to_fix=FIX)

    images = dict(rows(need("images.txt"), (int, str), text_last=True))
    labels = dict(rows(need("image_class_labels.txt"), (int, int)))
    is_train = dict(rows(need("train_test_split.txt"), (int, int)))
    class_rows = rows(need("classes.txt"), (int, str), text_last=True)
    classes = [name for _, name in sorted(class_rows)]
    if [i for i, _ in sorted(class_rows)] != list(range(1, len(classes) + 1)):
        raise MalformedIndex(f"{NAME}: class ids in {base / 'classes.txt'} are not 1..{len(classes)}. {FIX}")

    boxes = {}
    if (base / "bounding_boxes.txt").is_file():
        boxes = {i: (x, y, w, h) for i, x, y, w, h in rows(base / "bounding_boxes.txt", (int, float, float, float, float))}

    part_names, parts = None, {}
    if (base / "parts" / "parts.txt").is_file() and (base / "parts" / "part_locs.txt").is_file():
        part_names = [n for _, n in sorted(rows(base / "parts" / "parts.txt", (int, str), text_last=True))]
        locs: dict[int, dict[int, tuple[float, float, int]]] = defaultdict(dict)
        for i, p, x, y, v in rows(base / "parts" / "part_locs.txt", (int, int, float, float, float)):
            locs[i][p] = (x, y, int(v))
        missing = (0.0, 0.0, 0)
        parts = {i: tuple(d.get(p, missing) for p in range(1, len(part_names) + 1)) for i, d in locs.items()}

    # A SynthBirds extension of the layout: the ids of the set's own validation images
    # (is_training_image 1 in train_test_split.txt, so a CUB reader sees them as training images).
    val_ids = ({i for (i,) in rows(base / VAL_FILE, (int,))}
               if (base / VAL_FILE).is_file() else set())
    train, val, test = [], [], []
    for image_id, rel in sorted(images.items()):
        if image_id not in labels or image_id not in is_train:
            table = "image_class_labels.txt" if image_id not in labels else "train_test_split.txt"
            raise MalformedIndex(f"{NAME}: image id {image_id} ({rel}) has no entry in {base / table}. {FIX}")
        label = labels[image_id] - 1
        if not 0 <= label < len(classes):
            raise MalformedIndex(f"{NAME}: image id {image_id} has class {labels[image_id]}, "
                                 f"outside 1..{len(classes)} of classes.txt. {FIX}")
        sample = Sample(str(base / "images" / rel), label, boxes.get(image_id), parts.get(image_id))
        (test if is_train[image_id] != 1 else val if image_id in val_ids else train).append(sample)
    return Split(train=train, test=test, classes=classes, part_names=part_names,
                 genera=_genera(base, classes), val=val)


def _genera(base: Path, classes: list[str]) -> list[str]:
    """The genus of each class: a SynthBirds set's own genera (its synthbirds.json), else the
    CUB rule, the last word of the class name (:func:`cub_genus`)."""
    return synthbirds_genera(base, classes) or [cub_genus(c) for c in classes]


def species_name(folder: str) -> str:
    """A CUB class folder's species, its ``NNN.`` prefix dropped: ``136.Barn_Swallow`` ->
    ``Barn_Swallow`` (a name without the prefix is returned as it is)."""
    number, dot, rest = folder.partition(".")
    return rest if dot and number.isdigit() else folder


def cub_genus(class_name: str) -> str:
    """The CUB bird group of a class name: its last word (``NNN.`` prefix and ``_`` separators)."""
    return species_name(class_name).replace(" ", "_").strip("_").split("_")[-1]


def synthbirds_genera(base: Path, classes: Sequence[str]) -> list[str] | None:
    """The genus of each class of a SynthBirds set in CUB layout, from its synthbirds.json
    (the generator's genera x species); None for a folder that is not such a set, or whose
    classes are not those of `classes` (``NNN.<name>``, in order)."""
    try:
        meta = json.loads((Path(base) / SYNTHBIRDS_META).read_text())
        names = [g["name"] for g in meta["genera"]]
        if [c["name"] for c in meta["classes"]] != [c.partition(".")[2] for c in classes]:
            return None
        return [names[c["genus"]] for c in meta["classes"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _load(root: Path, **options) -> Split:
    return load_cub(root)


DATASET = register_dataset(DatasetInfo(name="cub", title=NAME, load=_load, paper="cub", short="CUB", order=20))

