"""CUB-30: thirty species of CUB-200-2011 as real photographs, the study's real-photo set.

    python -m fgvc.data cut cub30 --source <your CUB_200_2011> [--root data/cub30]

The species of :data:`SPECIES` (swallows, tanagers, vireos, twelve warblers, a waterthrush,
waxwings, six woodpeckers, three wrens: 1,776 images, no boxes or parts). Its own dataset, its
own name on every table and run id, no paper numbers beside it (no paper reports on these 30
species). The subset the maintainers measured on is distributed apart from this repository
(its images are CUB's, whose terms allow research and education only; they are never
committed): its folder numbers (``070.Barn_Swallow``) and file names are not CUB's, its images
are 227 x 227. `cut` makes the same subset from a user's own CUB-200-2011: the species matched
by name, CUB's official train/test split, every image resized to 227 x 227 as the distributed
copy is. A rerun on a cut copy is bounded, not exact: the resampling of the distributed copy
is not known, so its pixels can differ.

Layout: CUB's (read by :func:`fgvc.data.cub.load_cub`), classes numbered 1-30 in the order of
:data:`SPECIES`, which :func:`load_cub30` checks by name.
"""
from __future__ import annotations

import os
from pathlib import Path

from fgvc.data.base import DatasetNotFound, MalformedIndex, Split, read_rows
from fgvc.data.cub import find_cub_dir, load_cub, species_name
from fgvc.data.registry import DatasetInfo, register_dataset

NAME = "CUB-30"
SIZE = 227   # pixels per side of every image of the distributed subset
SPECIES = (
    "Barn_Swallow", "Tree_Swallow", "Scarlet_Tanager", "Summer_Tanager", "Black_capped_Vireo",
    "Blue_headed_Vireo", "Bay_breasted_Warbler", "Black_and_white_Warbler", "Cape_May_Warbler",
    "Cerulean_Warbler", "Chestnut_sided_Warbler", "Golden_winged_Warbler", "Magnolia_Warbler",
    "Mourning_Warbler", "Nashville_Warbler", "Prairie_Warbler", "Wilson_Warbler",
    "Worm_eating_Warbler", "Louisiana_Waterthrush", "Bohemian_Waxwing", "Cedar_Waxwing",
    "American_Three_toed_Woodpecker", "Pileated_Woodpecker", "Red_bellied_Woodpecker",
    "Red_cockaded_Woodpecker", "Red_headed_Woodpecker", "Downy_Woodpecker", "Cactus_Wren",
    "Carolina_Wren", "Rock_Wren",
)
HOW_TO_GET = ("Cut it from your own CUB-200-2011 with `python -m fgvc.data cut cub30 --source "
              "<CUB_200_2011 folder> --root data/cub30` (or pass the distributed subset's folder "
              "as the data root).")


def load_cub30(root: str | os.PathLike) -> Split:
    """Read a CUB-30 root (CUB layout) and check that its classes are :data:`SPECIES`, in order."""
    split = load_cub(root)
    names = [species_name(c) for c in split.classes]
    if names != list(SPECIES):
        extra, missing = sorted(set(names) - set(SPECIES)), sorted(set(SPECIES) - set(names))
        raise MalformedIndex(f"{NAME}: the classes of {find_cub_dir(root)} are not its 30 species in "
                             f"order (not in the list: {extra or 'none'}; missing: "
                             f"{missing or 'none'}). {HOW_TO_GET}")
    return split


def cut(cub_root: str | os.PathLike, out: str | os.PathLike, size: int = SIZE) -> Path:
    """Write CUB-30 from a CUB-200-2011 root into `out`/CUB_200_2011: the species of
    :data:`SPECIES` found by name in its classes.txt (whatever their numbers), every image of
    them with CUB's official train/test flag, resized to `size` x `size` (RGB JPEG, quality 95),
    classes renumbered 1-30 in :data:`SPECIES` order, images renumbered in CUB's image order.
    A species missing from the source is an error naming it."""
    from PIL import Image

    src = find_cub_dir(cub_root)

    def rows(name, types):
        return read_rows(src / name, types, "CUB-200-2011", text_last=types[-1] is str)

    classes = rows("classes.txt", (int, str))
    folders = {species_name(f): f for _, f in classes}
    ids = {species_name(f): cid for cid, f in classes}
    missing = [s for s in SPECIES if s not in folders]
    if missing:
        raise DatasetNotFound(f"{src}: species not found in classes.txt: {', '.join(missing)}")
    new_class = {ids[s]: i for i, s in enumerate(SPECIES, 1)}
    labels = dict(rows("image_class_labels.txt", (int, int)))
    is_train = dict(rows("train_test_split.txt", (int, int)))
    dest = Path(out).expanduser() / "CUB_200_2011"
    index = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    n = 0
    for image_id, rel in sorted(rows("images.txt", (int, str))):
        label = new_class.get(labels.get(image_id))
        if label is None:
            continue
        n += 1
        target = dest / "images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src / "images" / rel) as im:
            im.convert("RGB").resize((size, size), Image.BICUBIC).save(target, quality=95)
        index["images.txt"].append(f"{n} {rel}")
        index["image_class_labels.txt"].append(f"{n} {label}")
        index["train_test_split.txt"].append(f"{n} {is_train[image_id]}")
    index["classes.txt"] = [f"{i} {folders[s]}" for i, s in enumerate(SPECIES, 1)]
    for name, lines in index.items():
        (dest / name).write_text("\n".join(lines) + "\n")
    load_cub30(dest)   # what was written reads back as CUB-30
    return dest


def _load(root: Path, **options) -> Split:
    return load_cub30(root)


# no paper column beside its accuracy (paper ""), the papers' CUB gains beside its claims
DATASET = register_dataset(DatasetInfo(name="cub30", title=NAME, load=_load, order=25, cut=cut, claims="cub",
                                       how_to_get=HOW_TO_GET))

