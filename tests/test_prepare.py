"""The prepared-image cache: bitwise-identical batches, discovery, staleness, bad images, CLI."""
from __future__ import annotations

import os
import pickle
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fgvc.data import CorruptImagesError, ImageDataset, build_data
from fgvc.data.__main__ import main as cli
from fgvc.data.prepare import (CachedImageDataset, PreparedImages, StaleCache, default_cache_dir,
                               prepare)

sys.path.insert(0, str(Path(__file__).parent))
from fixtures import make_aircraft, make_cub, write_garbage, write_jpeg  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FGVC_CACHE", str(tmp_path / "cache"))


def _items(ds, n=None):
    out = []
    for i in range(len(ds) if n is None else n):
        torch.manual_seed(i)  # the random crop / flip of item i, the same for both datasets
        out.append(ds[i])
    return out


def _assert_same(a, b):
    for split in ("train", "val", "test"):
        xa, xb = _items(getattr(a, split)), _items(getattr(b, split))
        assert len(xa) == len(xb) > 0
        for (ia, la), (ib, lb) in zip(xa, xb):
            assert la == lb
            assert torch.equal(ia, ib), split


@pytest.mark.parametrize("name", ["cub", "aircraft"])
def test_cache_gives_bitwise_identical_items(tmp_path, name):
    if name == "cub":
        root = make_cub(tmp_path, n_classes=3, per_class=4, size=(50, 37))  # incl. grayscale, CMYK
    else:
        root = make_aircraft(tmp_path, n_classes=2, per_class=9)          # banner cropped
    kw = dict(resize=48, crop=40, rotation=10.0, vflip=True)
    folder = prepare(name, 48, root, log=None)
    assert folder == default_cache_dir(name, 48, root)
    plain = build_data(name, root, cache=False, **kw)
    cached = build_data(name, root, cache=folder, **kw)
    auto = build_data(name, root, **kw)  # "auto": finds the default folder
    assert type(plain.train) is ImageDataset
    assert isinstance(cached.train, CachedImageDataset) and isinstance(auto.test, CachedImageDataset)
    _assert_same(plain, cached)
    # load() still gives the original image (for galleries and boxes in original pixels)
    assert cached.train.load(0).size == plain.train.load(0).size


def test_stale_or_other_size_cache_is_ignored_in_auto_and_refused_when_explicit(tmp_path):
    root = make_cub(tmp_path)
    folder = prepare("cub", 32, root, log=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another size has its own folder: silently none
        other = build_data("cub", root, resize=36, crop=32)
    assert type(other.train) is ImageDataset
    with pytest.raises(StaleCache, match="prepared at size 32, not 36"):
        build_data("cub", root, resize=36, crop=32, cache=folder)
    # an image changes after prepare
    first = sorted((root / "images").rglob("*.jpg"))[3]
    write_jpeg(first, (44, 33), seed=99)
    os.utime(first, ns=(1, 1))
    with pytest.warns(UserWarning, match="changed since"):
        bundle = build_data("cub", root, resize=32, crop=28)
    assert type(bundle.train) is ImageDataset
    with pytest.raises(StaleCache, match="changed since"):
        build_data("cub", root, resize=32, crop=28, cache=folder)
    with pytest.raises(FileNotFoundError, match="no prepared cache"):
        build_data("cub", root, resize=32, crop=28, cache=tmp_path / "nowhere")


def test_bad_images_are_listed_like_the_live_scan(tmp_path):
    root = make_cub(tmp_path)
    bad_file = sorted((root / "images").rglob("*.jpg"))[2]
    write_garbage(bad_file)
    folder = prepare("cub", 32, root, log=None)
    assert [p for p, _ in PreparedImages(folder).bad] == [str(bad_file)]
    with pytest.raises(CorruptImagesError, match=bad_file.name):
        build_data("cub", root, resize=32, crop=28, cache=folder)
    live = build_data("cub", root, resize=32, crop=28, cache=False, skip_bad_images=True)
    cached = build_data("cub", root, resize=32, crop=28, cache=folder, skip_bad_images=True)
    assert [p for p, _ in cached.bad_images] == [p for p, _ in live.bad_images] == [str(bad_file)]
    assert len(cached.train) + len(cached.val) == len(live.train) + len(live.val)


def test_cached_dataset_pickles_without_the_memory_map(tmp_path):
    root = make_cub(tmp_path)
    folder = prepare("cub", 32, root, log=None)
    ds = build_data("cub", root, resize=32, crop=28, cache=folder).train
    ds[0]  # opens the map in this process
    assert ds.cache._array is not None
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    assert clone.cache._array is None
    torch.manual_seed(0)
    a = clone[1][0]
    torch.manual_seed(0)
    assert torch.equal(a, ds[1][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    assert next(iter(loader))[0].shape == (4, 3, 28, 28)


def test_cli_prepare(tmp_path, capsys):
    root = make_cub(tmp_path)
    out = tmp_path / "my-cache"
    assert cli(["prepare", "cub", "--size", "32", "--root", str(root), "--out", str(out)]) == 0
    assert "prepared cache ready" in capsys.readouterr().out
    assert (out / "index.json").is_file() and (out / "images.npy").is_file()
    assert PreparedImages(out).array.shape == (12, 32, 32, 3)
    assert not list(tmp_path.glob(".my-cache.tmp-*"))  # no temporary folder left behind
