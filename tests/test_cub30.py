"""CUB-30, the real-photo subset: cut from a CUB-200-2011 in its real on-disk layout (a fixture
written here), matched by species name, CUB's split kept, images 227 x 227; read back and
checked by name."""
import random

import pytest
from PIL import Image

from fgvc.data import load_split
from fgvc.data.__main__ import main as data_cli
from fgvc.data.base import DatasetNotFound, MalformedIndex
from fgvc.data.cub30 import SIZE, SPECIES, cut, load_cub30
from fixtures import make_cub


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    """A CUB-200-2011 with the 30 species in another order and numbering, among two others."""
    names = list(SPECIES) + ["Black_footed_Albatross", "Laysan_Albatross"]
    random.Random(0).shuffle(names)
    root = tmp_path_factory.mktemp("cub")
    make_cub(root, names=names, per_class=2, size=(50, 31))
    return root


def test_cut_keeps_the_thirty_species_by_name_with_cubs_split_at_227(cub, tmp_path):
    dest = cut(cub, tmp_path / "cub30")
    src = load_split("cub", cub)
    split = load_split("cub30", tmp_path / "cub30")
    assert split.num_classes == 30
    # classes numbered in SPECIES order; each folder keeps the source's name (its number too)
    assert [c.partition(".")[2] for c in split.classes] == list(SPECIES)
    assert all(c in src.classes for c in split.classes)
    # every image of those species and no other, with CUB's train / test flag
    by_name = {}
    for part, samples in (("train", src.train), ("test", src.test)):
        for s in samples:
            by_name[s.path.split("/images/")[1]] = (part, src.classes[s.label])
    got = {}
    for part, samples in (("train", split.train), ("test", split.test)):
        for s in samples:
            got[s.path.split("/images/")[1]] = (part, split.classes[s.label])
    want = {rel: v for rel, v in by_name.items() if "Albatross" not in rel}
    assert got == want and len(got) == 60
    for s in split.train[:3] + split.test[:3]:   # the fixture's first images are L and CMYK
        with Image.open(s.path) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    assert split.genera[:2] == ["Swallow", "Swallow"] and split.part_names is None
    assert dest == tmp_path / "cub30" / "CUB_200_2011"


def test_cut_names_a_species_the_source_lacks(tmp_path):
    make_cub(tmp_path / "src", names=list(SPECIES[:29]) + ["Laysan_Albatross"], per_class=1)
    with pytest.raises(DatasetNotFound, match="species not found in classes.txt: Rock_Wren"):
        cut(tmp_path / "src", tmp_path / "out")


def test_a_cub_root_that_is_not_the_thirty_species_is_refused(cub):
    with pytest.raises(MalformedIndex, match="not in the list: .*Albatross.*"):
        load_cub30(cub)


def test_the_data_cli_cuts_and_reports(cub, tmp_path, capsys):
    assert data_cli(["cut", "cub30", "--source", str(cub), "--root", str(tmp_path / "c")]) == 0
    assert "CUB-30: 30 train / 30 test images of 30 classes" in capsys.readouterr().out
    assert data_cli(["cut", "cub30", "--source", str(tmp_path / "none"),
                     "--root", str(tmp_path / "d")]) == 1
