"""The synthetic Yale B stand-in: layout, determinism, cache, shading conventions, difficulty."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from dsc.data import faces, synthetic
from dsc.data.base import DataError
from dsc.data.lights import YALE_LIGHTS, YALE_POSES, light_vector
from dsc.data.synthetic import GENERATOR_VERSION, generate, load, render_face

PER_IDENTITY = len(YALE_POSES) * len(YALE_LIGHTS)  # 576


@pytest.fixture(scope="module")
def small():
    """Two identities at 32x32: every layout test reads the same set."""
    return generate(n_identities=2, size=32, seed=0)


def test_counts_shapes_and_dtypes(small):
    assert PER_IDENTITY == 576
    assert small.images.shape == (2 * 576, 1, 32, 32)
    assert small.images.dtype == np.uint8
    assert small.labels.dtype == np.int64
    assert small.classes == ("face1", "face2")
    assert small.class_counts() == {"face1": 576, "face2": 576}
    assert small.name == "synthetic"
    assert small.source == (f"synthetic(n_identities=2,size=32,seed=0,noise=0.02,v={GENERATOR_VERSION})")


def test_metadata_order_is_identity_pose_light(small):
    m = small.meta
    assert set(m) == {"identity", "pose", "azimuth", "elevation"}
    assert all(col.dtype == np.int64 for col in m.values())
    np.testing.assert_array_equal(m["identity"], np.repeat([0, 1], 576))
    np.testing.assert_array_equal(small.labels, m["identity"])
    np.testing.assert_array_equal(m["pose"], np.tile(np.repeat(np.arange(9), 64), 2))
    az, el = np.array(YALE_LIGHTS).T
    np.testing.assert_array_equal(m["azimuth"], np.tile(az, 18))
    np.testing.assert_array_equal(m["elevation"], np.tile(el, 18))


def test_same_seed_same_bytes_other_seed_differs(small):
    again = generate(n_identities=2, size=32, seed=0)
    assert again.images.tobytes() == small.images.tobytes()
    assert generate(n_identities=2, size=32, seed=1).digest() != small.digest()


def test_light_from_the_right_brightens_the_right_half(small):
    """Known answer of the convention: the brighter half has the sign of the light's x."""
    m = small.meta
    for light, (az, el) in enumerate(YALE_LIGHTS):
        lx, _, lz = light_vector(az, el)
        if abs(lx) < 0.3 or lz <= 0:  # near-frontal or behind: no clear side
            continue
        img = small.images[(m["pose"] == 0) & (m["azimuth"] == az) & (m["elevation"] == el), 0]
        right_minus_left = img[:, :, 16:].mean() - img[:, :, :16].mean()  # over both people
        assert np.sign(right_minus_left) == np.sign(lx), (light, az, el, right_minus_left)


def test_lights_behind_the_face_give_dark_images(small):
    behind = np.abs(small.meta["azimuth"]) > 90
    front = np.abs(small.meta["azimuth"]) <= 25
    assert small.images[behind].mean() < 0.3 * small.images[front].mean()


@pytest.mark.parametrize(
    ("azimuth", "elevation", "expected"), [(0, 0, 1.0), (60, 0, 0.5), (-60, 0, 0.5), (0, 60, 0.5), (120, 0, 0.0)]
)
def test_render_face_follows_lamberts_law_on_a_plane(azimuth, elevation, expected):
    flat, ones = np.zeros((32, 32)), np.ones((32, 32))
    light = light_vector(azimuth, elevation)[None]  # (1, 3)
    img = render_face(flat, ones, ones, 0, 0, light, ambient=0.05)
    np.testing.assert_allclose(img, expected + 0.05, atol=1e-5)


@pytest.mark.parametrize("yaw", [-24, 0, 24])
def test_yaw_moves_the_nose_tip_where_the_rotation_says(yaw):
    """Known answer: a dark spot on the tip of a bump (height 0.3) is seen at u = 0.3 sin(yaw)."""
    size = 64
    x, y = faces.grid(size)
    nose = 0.3 * np.exp(-0.5 * (x**2 + y**2) / 0.15**2)
    ones = np.ones((size, size))
    spotted = 1 - 0.5 * np.exp(-0.5 * (x**2 + y**2) / 0.03**2)
    light = light_vector(0, 0)[None]
    plain = render_face(nose, ones, ones, yaw, 0, light, shadows=False)[0]
    spot = plain - render_face(nose, spotted, ones, yaw, 0, light, shadows=False)[0]  # (S, S)
    col = (spot.sum(0) * np.arange(size)).sum() / spot.sum()
    expected = (0.3 * np.sin(np.radians(yaw)) + 1) / 2 * size - 0.5  # u -> column index
    assert col == pytest.approx(expected, abs=0.5)


def test_load_caches_and_keys_on_every_parameter(tmp_path, monkeypatch):
    first = load(n_identities=2, size=16, seed=0, cache_dir=tmp_path)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    assert files[0].stat().st_mode & 0o777 == 0o644  # shared by every user of the folder

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache holds the set")

    monkeypatch.setattr(synthetic, "generate", fail)
    hit = load(n_identities=2, size=16, seed=0, cache_dir=tmp_path)
    assert hit.images.tobytes() == first.images.tobytes()
    assert hit.classes == first.classes and hit.source == first.source
    for key in first.meta:
        np.testing.assert_array_equal(hit.meta[key], first.meta[key])
    monkeypatch.undo()

    load(n_identities=2, size=16, seed=1, cache_dir=tmp_path)
    load(n_identities=2, size=16, seed=0, noise=0.0, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3  # one file per parameter set, no temp files left


@pytest.mark.parametrize(("value", "expected"), [("{tmp}/env", "{tmp}/env"), ("", "{tmp}/home/.cache/dsc")])
def test_load_uses_the_cache_dir_from_the_environment(tmp_path, monkeypatch, value, expected):
    """An empty DSC_CACHE_DIR counts as unset: ~/.cache/dsc, never the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DSC_CACHE_DIR", value.format(tmp=tmp_path))
    monkeypatch.chdir(tmp_path)
    load(n_identities=2, size=16)
    assert len(list(Path(expected.format(tmp=tmp_path)).glob("synthetic-*.npz"))) == 1
    assert not list(tmp_path.glob("synthetic-*.npz"))


def test_corrupt_cache_is_regenerated(tmp_path):
    good = load(n_identities=2, size=16, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a zip file")
    again = load(n_identities=2, size=16, cache_dir=tmp_path)
    assert again.digest() == good.digest()
    assert np.load(path)["images"].shape == good.images.shape  # the file was rewritten


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        load(n_identities=2, size=16, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_identities": 1}, "n_identities must be an integer >= 2, got 1"),
        ({"n_identities": 2.5}, "got 2.5"),
        ({"size": 8}, "size must be an integer >= 16, got 8"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"noise": -0.1}, r"noise must be a finite number >= 0, got -0.1"),
        ({"noise": float("nan")}, "got nan"),
    ],
)
@pytest.mark.parametrize("fn", [generate, load])
def test_bad_arguments_raise_data_error(fn, kwargs, match, tmp_path):
    extra = {"cache_dir": tmp_path} if fn is load else {}
    with pytest.raises(DataError, match=match):
        fn(**kwargs, **extra)


@pytest.mark.slow
def test_identity_is_learnable_but_not_linearly_trivial():
    """The default task (5 people x 9 poses x 64 lights), rendered at 64 and pooled to 32x32.

    A linear probe on raw pixels must not be perfect (the task would be trivial), yet identity
    must be clearly learnable: PCA(50) + logistic regression far above chance (20%).
    """
    data = generate(size=64, seed=0)
    n = len(data.labels)
    x = data.images.reshape(n, 32, 2, 32, 2).mean((2, 4)).reshape(n, -1) / 255  # (2880, 1024)
    x_tr, x_va, y_tr, y_va = train_test_split(x, data.labels, test_size=0.2, stratify=data.labels, random_state=0)
    # One BLAS thread: on a small shared machine, more threads make lbfgs several times slower.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; the bound still holds
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(x_tr, y_tr)
        pca = make_pipeline(StandardScaler(), PCA(50, random_state=0), LogisticRegression(max_iter=1000)).fit(
            x_tr, y_tr
        )
    assert 0.6 < linear.score(x_va, y_va) < 1.0
    assert pca.score(x_va, y_va) > 0.6
