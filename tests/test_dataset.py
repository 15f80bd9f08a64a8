from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsc.data import cache, folder
from dsc.data.base import ImageSet
from dsc.data.dataset import load_imageset, prepare, split_indices
from dsc.errors import DataError
from dsc.settings import DataConfig


def make_folder(root, classes=("cat", "dog"), n=6, sizes=((40, 30),), mode="L"):
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            arr = np.full((h, w) if mode == "L" else (h, w, 3), 40 * ci + i, np.uint8)
            Image.fromarray(arr, mode).save(root / c / f"{i}.png")
    return root


def test_folder_mixed_sizes_are_resized(tmp_path):
    ims = folder.load(make_folder(tmp_path / "f", sizes=((40, 30), (17, 90), (128, 128))), size=24)
    assert ims.images.shape == (12, 1, 24, 24)
    assert ims.classes == ("cat", "dog")
    assert ims.class_counts() == {"cat": 6, "dog": 6}


def test_folder_keeps_colour(tmp_path):
    root = make_folder(tmp_path / "f", mode="RGB")
    img = np.zeros((10, 10, 3), np.uint8)
    img[..., 0] = 255
    Image.fromarray(img).save(root / "cat" / "red.png")
    ims = folder.load(root, size=8)
    assert ims.images.shape[1] == 3


@pytest.mark.parametrize("setup, match", [
    (lambda p: None, "not an existing directory"),
    (lambda p: p.mkdir(), "Couldn't find any class folder|expected"),
    (lambda p: make_folder(p, classes=("only",)), "needs at least 2"),
])
def test_folder_bad_trees(tmp_path, setup, match):
    root = tmp_path / "f"
    setup(root)
    with pytest.raises(DataError, match=match):
        folder.load(root, size=16)


def test_folder_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "f")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        folder.load(root, size=16)


def test_split_is_stratified_disjoint_and_reproducible():
    labels = np.repeat(np.arange(5), 576)
    tr, va = split_indices(labels, 0.2, seed=3)
    assert len(va) == 576 and len(tr) == 2304
    assert not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [115] * 4 + [116] or sorted(np.bincount(labels[va])) == [115, 115, 115, 115, 116]
    assert np.array_equal(va, split_indices(labels, 0.2, seed=3)[1])
    assert not np.array_equal(va, split_indices(labels, 0.2, seed=4)[1])


@pytest.mark.parametrize("labels, match", [(np.zeros(10, int), "needs at least 2"),
                                           (np.array([0, 0, 0, 1]), "too small to split")])
def test_split_refuses_degenerate_sets(labels, match):
    with pytest.raises(DataError, match=match):
        split_indices(labels, 0.5, 0)


def test_prepare_normalises_with_training_statistics():
    rng = np.random.default_rng(0)
    ims = ImageSet(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), np.repeat([0, 1], 20), ("a", "b"))
    data = prepare(ims, DataConfig(val_fraction=0.25))
    train = data.x[data.train_idx]
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4
    xb, yb = data.batch(data.val_idx[:3], device=__import__("torch").device("cpu"), channels_last=True)
    assert xb.shape == (3, 3, 8, 8) and xb.is_contiguous(memory_format=__import__("torch").channels_last)
    assert (xb[:, 0] == xb[:, 2]).all()


@pytest.mark.parametrize("kw, match", [({"data": "imagenet"}, "use 'synthetic'"), ({"data": "yale:"}, "use 'synthetic'"),
                                       ({"data": "synthetic:x"}, "use 'synthetic'"), ({"val_fraction": 1.0}, "must be in")])
def test_bad_data_options(kw, match):
    with pytest.raises(DataError, match=match):
        DataConfig(**kw)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_imageset(DataConfig(data=f"folder:{tmp_path / 'nope'}"))


@pytest.mark.parametrize(("chosen", "env", "expected"), [
    ("{tmp}/chosen", "{tmp}/env", "{tmp}/chosen"),
    ("", "{tmp}/env", "{tmp}/env"),
    (None, "{tmp}/env", "{tmp}/env"),
    ("", "", "{tmp}/home/.cache/dsc"),
    (None, None, "{tmp}/home/.cache/dsc"),
    ("~/mine", "", "{tmp}/home/mine"),
])
def test_cache_root_treats_empty_as_unset(tmp_path, monkeypatch, chosen, env, expected):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if env is None:
        monkeypatch.delenv("DSC_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("DSC_CACHE_DIR", env.format(tmp=tmp_path))
    chosen = chosen.format(tmp=tmp_path) if chosen is not None else None
    assert cache.root(chosen) == Path(expected.format(tmp=tmp_path))
