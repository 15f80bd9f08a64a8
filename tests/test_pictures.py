"""Each snapshot's pictures for the image grid: cheap reused canvases, drawn once per epoch and key."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.core import snapshot
from dsc.figures.epoch_images import EpochImages
from dsc.jobs.pictures import missing_pictures, picture_keys

CLASSES = ["a", "b", "c"]
LAYERS = ["conv1", "conv2", "conv3", "fc1", "fc2", "out"]


def _epoch(canvas, i):
    rng = np.random.default_rng(i)
    labels = np.repeat(np.arange(3), 20)
    ev = np.sort(rng.chisquare(3, 200)) * (i + 1)
    mx = np.linspace(0.5, 8, 50)
    return (
        canvas.pca(rng.standard_normal((60, 2)) * (i + 1), labels, CLASSES, f"epoch {i}"),
        canvas.esd([("fc1", ev, mx, np.exp(-mx)), ("fc2", 2 * ev, None, None)], f"epoch {i}"),
        canvas.cka(rng.random((len(LAYERS), len(LAYERS))), LAYERS, f"epoch {i}"),
    )


def test_a_reused_canvas_draws_what_a_fresh_one_draws():
    reused = EpochImages()
    first = _epoch(reused, 0)
    later = _epoch(reused, 3)  # drawn after epoch 0 on the same figures
    fresh = _epoch(EpochImages(), 3)
    for a, b, c in zip(first, later, fresh):
        assert a.shape == b.shape == c.shape and a.dtype == np.uint8 and a.shape[2] == 3
        assert np.array_equal(b, c)  # nothing of epoch 0 is left
        assert not np.array_equal(a, b)  # and the picture did change


def test_a_new_layout_rebuilds_the_picture():
    canvas = EpochImages()
    _epoch(canvas, 1)
    coords, labels = np.random.default_rng(0).standard_normal((40, 2)), np.repeat([0, 2], 20)
    two = canvas.pca(coords, labels, CLASSES, "two classes")  # a class missing: another legend
    assert np.array_equal(two, EpochImages().pca(coords, labels, CLASSES, "two classes"))
    empty = canvas.esd([("fc1", np.zeros(5), None, None)], "no eigenvalues")  # one panel, nothing to show
    assert np.array_equal(empty, EpochImages().esd([("fc1", np.zeros(5), None, None)], "no eigenvalues"))


def _snapshots(epochs):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    weights = {
        "conv1": rng.standard_normal((3, 3, 3, 3)),
        "fc1": rng.standard_normal((16, 12)),
        "fc2": rng.standard_normal((16, 16)),
        "out": rng.standard_normal((3, 16)),
    }
    by_epoch = {}
    for e in epochs:
        acts = {
            "conv1": rng.random((30, 3, 2, 2)),
            "fc1": rng.random((30, 16)),
            "fc2": rng.random((30, 16)) + labels[:, None] * e,
            "out": rng.random((30, 3)),
        }
        by_epoch[e] = snapshot.compute(e, acts, {k: w * (1 + e) for k, w in weights.items()})
    snaps = snapshot.Snapshots(list(epochs), labels, np.arange(30), CLASSES, list(weights), {}, by_epoch)
    return snaps, {n: w.shape[:2] for n, w in weights.items()}


def test_only_the_pictures_a_run_lacks_are_drawn():
    snaps, shapes = _snapshots([0, 1, 2])
    assert picture_keys(snaps.by_epoch[0]) == ["pca_fc2", "esd", "cka"]
    everything = missing_pictures(snaps, shapes, {})
    assert {e: sorted(p) for e, p in everything.items()} == {e: ["cka", "esd", "pca_fc2"] for e in (0, 1, 2)}
    logged = {"pca_fc2": {0, 1, 2}, "cka": {0, 1, 2}, "esd": {0, 2}}  # a process died before epoch 1's ESD
    rest = missing_pictures(snaps, shapes, logged)
    assert list(rest) == [1] and list(rest[1]) == ["esd"]
    assert np.array_equal(rest[1]["esd"], everything[1]["esd"])
    assert missing_pictures(snaps, shapes, {**logged, "esd": {0, 1, 2}}) == {}


def test_image_steps_reads_back_what_log_image_wrote(store):
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    picture = np.zeros((8, 8, 3), np.uint8)
    for key, step in (("pca_fc2", 0), ("pca_fc2", 3), ("by/layer", 3), ("cka", 0)):
        client.log_image(run_id, picture, key=key, step=step)
    client.log_image(run_id, picture, artifact_file="images/plain.png")  # no step: not a grid picture
    assert tracking.image_steps(run_id) == {"pca_fc2": {0, 3}, "by/layer": {3}, "cka": {0}}
    assert tracking.image_steps(client.create_run("0").info.run_id) == {}


@pytest.mark.parametrize(
    "name, key, step",
    [
        ("esd%step%12%timestamp%1700000000000%0a1b.png", "esd", 12),  # MLflow before 3.5
        ("esd+step+4+timestamp+1700000000000+0a1b+compressed.webp", None, None),
    ],
)
def test_image_steps_reads_both_name_forms(store, tmp_path, name, key, step):
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    (tmp_path / name).write_bytes(b"")
    client.log_artifact(run_id, str(tmp_path / name), tracking.IMAGE_DIR)
    assert tracking.image_steps(run_id) == ({key: {step}} if key else {})
