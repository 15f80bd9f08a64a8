from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsc.data import cache, folder
from dsc.data.base import ImageSet
from dsc.data.dataset import load_imageset, per_class_subset, prepare, split_indices
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


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: None, "not an existing directory"),
        (lambda p: p.mkdir(), "Couldn't find any class folder|expected"),
        (lambda p: make_folder(p, classes=("only",)), "needs at least 2"),
    ],
)
def test_folder_bad_trees(tmp_path, setup, match):
    root = tmp_path / "f"
    setup(root)
    with pytest.raises(DataError, match=match):
        folder.load(root, size=16)


def test_folder_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "f")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        folder.load(root, size=16)


def test_split_is_stratified_disjoint_and_reproducible():
    labels = np.repeat(np.arange(5), 576)
    tr, va = split_indices(labels, 0.2, seed=3)
    assert len(va) == 576 and len(tr) == 2304
    assert not set(tr) & set(va)
    assert np.bincount(labels[va]).tolist() == [115] * 4 + [116] or sorted(np.bincount(labels[va])) == [
        115,
        115,
        115,
        115,
        116,
    ]
    assert np.array_equal(va, split_indices(labels, 0.2, seed=3)[1])
    assert not np.array_equal(va, split_indices(labels, 0.2, seed=4)[1])


@pytest.mark.parametrize(
    "labels, match", [(np.zeros(10, int), "needs at least 2"), (np.array([0, 0, 0, 1]), "too small to split")]
)
def test_split_refuses_degenerate_sets(labels, match):
    with pytest.raises(DataError, match=match):
        split_indices(labels, 0.5, 0)


def test_prepare_normalises_with_training_statistics():
    rng = np.random.default_rng(0)
    ims = ImageSet(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), np.repeat([0, 1], 20), ("a", "b"))
    data = prepare(ims, DataConfig(val_fraction=0.25))
    train = data.x[data.train_idx]
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-4
    xb, _ = data.batch(data.val_idx[:3], device=__import__("torch").device("cpu"), channels_last=True)
    assert xb.shape == (3, 3, 8, 8) and xb.is_contiguous(memory_format=__import__("torch").channels_last)
    assert (xb[:, 0] == xb[:, 2]).all()


def test_density_subsets_are_nested_and_leave_validation_unchanged():
    labels = np.repeat(np.arange(4), 60)
    ims = ImageSet(
        np.random.default_rng(0).integers(0, 256, (240, 1, 8, 8), dtype=np.uint8), labels, ("a", "b", "c", "d")
    )
    full = prepare(ims, DataConfig())
    by_k = {k: prepare(ims, DataConfig(exemplars_per_class=k)) for k in (5, 10, 48)}
    for k, data in by_k.items():
        assert np.array_equal(data.val_idx, full.val_idx)
        assert np.bincount(labels[data.train_idx]).tolist() == [k] * 4
        assert set(data.train_idx) <= set(full.train_idx)
    assert set(by_k[5].train_idx) <= set(by_k[10].train_idx) <= set(by_k[48].train_idx)
    assert np.array_equal(by_k[5].train_idx, prepare(ims, DataConfig(exemplars_per_class=5)).train_idx)
    other_seed = per_class_subset(labels, full.train_idx, 5, seed=1)
    assert not np.array_equal(other_seed, by_k[5].train_idx)
    assert np.array_equal(prepare(ims, DataConfig(exemplars_per_class=0)).train_idx, full.train_idx)


def test_density_larger_than_a_class_names_the_class():
    labels = np.array([0] * 30 + [1] * 10)
    train, _ = split_indices(labels, 0.25, 0)
    with pytest.raises(DataError, match=r"^--exemplars-per-class 9: class 'b' has 8 training images$"):
        per_class_subset(labels, train, 9, 0, ("a", "b"))


def test_folder_classes_by_count_and_by_name(tmp_path):
    root = make_folder(tmp_path / "f", classes=("ant", "bee", "cat", "dog"), n=3)
    drawn = folder.load(root, size=8, classes=2, seed=1)
    assert len(drawn.classes) == 2 and set(drawn.classes) <= {"ant", "bee", "cat", "dog"}
    assert drawn.classes == folder.load(root, size=8, classes=2, seed=1).classes
    named = load_imageset(DataConfig(data=f"folder:{root}", image_size=16, pick_classes="dog,bee"))
    assert named.classes == ("bee", "dog") and named.labels.tolist() == [0] * 3 + [1] * 3
    assert named.images[3:, 0, 0, 0].tolist() == [120, 121, 122]  # dog's pixels, relabelled 1
    with pytest.raises(DataError, match=r"no class 'eel' in folder dataset .*it has: ant, bee, cat, dog"):
        folder.load(root, size=8, classes=["ant", "eel"])
    with pytest.raises(DataError, match=r"--pick-classes 5: folder dataset .* has 4 classes"):
        folder.load(root, size=8, classes=5)


@pytest.mark.parametrize(
    "text, match", [("cat", "name at least 2 classes"), ("1", "at least 2 classes"), ("3,", "name at least 2")]
)
def test_bad_pick_classes(text, match):
    with pytest.raises(DataError, match=match):
        DataConfig(pick_classes=text)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"data": "imagenet"}, "use 'synthetic'"),
        ({"data": "yale:"}, "use 'synthetic'"),
        ({"data": "synthetic:x"}, "use 'synthetic'"),
        ({"val_fraction": 1.0}, "must be in"),
    ],
)
def test_bad_data_options(kw, match):
    with pytest.raises(DataError, match=match):
        DataConfig(**kw)


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_imageset(DataConfig(data=f"folder:{tmp_path / 'nope'}"))


@pytest.mark.parametrize(
    ("chosen", "env", "expected"),
    [
        ("{tmp}/chosen", "{tmp}/env", "{tmp}/chosen"),
        ("", "{tmp}/env", "{tmp}/env"),
        (None, "{tmp}/env", "{tmp}/env"),
        ("", "", "{tmp}/home/.cache/dsc"),
        (None, None, "{tmp}/home/.cache/dsc"),
        ("~/mine", "", "{tmp}/home/mine"),
    ],
)
def test_cache_root_treats_empty_as_unset(tmp_path, monkeypatch, chosen, env, expected):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if env is None:
        monkeypatch.delenv("DSC_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("DSC_CACHE_DIR", env.format(tmp=tmp_path))
    chosen = chosen.format(tmp=tmp_path) if chosen is not None else None
    assert cache.root(chosen) == Path(expected.format(tmp=tmp_path))
