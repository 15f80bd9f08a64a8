import math
import zipfile

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dsc.cli import main
from dsc.core import snapshot, snapshot_files
from dsc.core.atomic import write_atomic
from dsc.core.spectra import PHASES
from dsc.jobs.snapshots import probe_rows
from dsc.nn.capture import ActivationCapture, layer_weights, plan_grids
from dsc.nn.model import DenseVGG
from dsc.tracking.snapshot import load as load_snapshots


def test_plan_grids_fits_the_budget_and_keeps_linears_whole():
    model = DenseVGG()
    x = torch.zeros(1, 3, 128, 128)
    grids = plan_grids(model, x, n_probe=576, budget_bytes=0.95 * 4e6)
    assert grids["fc1"] is None and grids["fc2"] is None and grids["out"] is None
    per_image = 1024 * 2 + 5 + sum(3 * grids[f"conv{i}"] ** 2 for i in range(1, 6))
    assert per_image * 576 * 2 <= 0.95 * 4e6
    assert all(grids[f"conv{i}"] == grids["conv1"] for i in range(1, 6)) and grids["conv1"] >= 8
    # a large budget keeps conv maps at full resolution
    assert plan_grids(model, x, n_probe=10, budget_bytes=1e9)["conv1"] is None


@pytest.mark.parametrize("conv_kernel", ["torch", "dsc"])  # torch's layers, or dsc.nn.conv3
def test_capture_records_post_relu_pooled_activations(conv_kernel):
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, hidden=16).eval()
    model.conv_kernel = conv_kernel
    x = torch.randn(6, 3, 32, 32)
    cap = ActivationCapture(model, {"conv1": 8, "conv2": None, "fc1": None, "out": None})
    with cap.recording(), torch.no_grad():
        model(x[:4])
        model(x[4:])
    acts = cap.take()
    with torch.no_grad():
        c1 = model.features.conv1(x)
        expect_c1 = torch.nn.functional.adaptive_avg_pool2d(torch.relu(c1), 8)
        expect_c2 = torch.relu(model.features.conv2(torch.relu(c1)))
    assert acts["conv1"].dtype == np.float16 and acts["conv1"].shape == (6, 3, 8, 8)
    np.testing.assert_allclose(acts["conv1"], expect_c1.numpy(), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(acts["conv2"], expect_c2.numpy(), rtol=1e-2, atol=1e-3)
    assert acts["out"].min() < 0  # logits are not rectified
    assert cap.take() == {}  # buffers cleared; hooks removed outside recording
    model(x)
    assert cap.take() == {}


@pytest.mark.parametrize("conv_kernel,grid", [("dsc", 8), ("torch", 8), ("dsc", None), ("dsc", 40)])
def test_capture_at_one_grid_taps_the_conv_maps_as_hooks_would(conv_kernel, grid):
    """Every conv at one grid: DenseVGG pools its own maps (inside the kernel under dsc)."""
    torch.manual_seed(1)
    model = DenseVGG(num_classes=3, hidden=16).eval()
    model.conv_kernel = conv_kernel
    x = torch.randn(5, 3, 30, 30)
    grids = {f"conv{i}": grid for i in range(1, 6)} | {"fc1": None, "fc2": None, "out": None}
    cap = ActivationCapture(model, grids)
    assert cap.tapped
    with cap.recording(), torch.no_grad():
        model(x[:3])
        logits = model(x[3:])
    acts = cap.take()
    with torch.no_grad():
        model.conv_kernel = "torch"
        torch.testing.assert_close(torch.from_numpy(acts["out"][3:]).float(), logits, rtol=1e-2, atol=1e-3)
        h = x
        for i in range(1, 6):
            h = torch.relu(getattr(model.features, f"conv{i}")(h))
            expect = h if grid is None or grid >= 30 else torch.nn.functional.adaptive_avg_pool2d(h, grid)
            assert acts[f"conv{i}"].dtype == np.float16 and acts[f"conv{i}"].shape == (5, *expect.shape[1:])
            np.testing.assert_allclose(acts[f"conv{i}"], expect.numpy(), rtol=1e-2, atol=1e-3)
    assert set(acts) == set(grids) and cap.take() == {}
    model(x)  # outside recording nothing is tapped
    assert cap.take() == {} and model._tap is None


def test_probe_rows_caps_per_class():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2])
    assert probe_rows(labels, 0).tolist() == list(range(8))
    assert probe_rows(labels, 2).tolist() == [0, 1, 2, 3, 4, 6]


def _fake_snapshot(epoch=3, n=40):
    rng = np.random.default_rng(epoch)
    torch.manual_seed(epoch)
    model = DenseVGG(num_classes=4, hidden=32)
    acts = {f"conv{i}": rng.random((n, 3, 6, 6)).astype(np.float16) for i in range(1, 6)}
    acts.update(
        fc1=rng.random((n, 32)).astype(np.float16),
        fc2=rng.random((n, 32)).astype(np.float16),
        out=rng.standard_normal((n, 4)).astype(np.float16),
    )
    return snapshot.compute(epoch, acts, layer_weights(model))


def test_the_snapshot_is_the_same_on_one_thread_and_on_several():
    """The parallel compute (one-thread BLAS per task) matches a serial one with the default BLAS."""
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    model = DenseVGG(num_classes=5, hidden=300)  # fc1 300 x 1200: an eigensolver of some size
    acts = {f"conv{i}": np.maximum(rng.normal(size=(60, 3, 4, 4)), 0).astype(np.float16) for i in range(1, 6)}
    acts.update(
        fc1=rng.random((60, 300)).astype(np.float16),
        fc2=rng.random((60, 300)).astype(np.float16),
        out=rng.standard_normal((60, 5)).astype(np.float16),
    )
    weights = layer_weights(model)
    one, many = snapshot.compute(2, acts, weights, threads=1), snapshot.compute(2, acts, weights, threads=3)
    assert one.layers == many.layers == list(weights) and one.phases == many.phases
    for n in one.layers:
        np.testing.assert_allclose(
            many.eigenvalues[n], one.eigenvalues[n], rtol=1e-5, atol=1e-7 * one.eigenvalues[n].max()
        )
    for k in snapshot.SPECTRAL_KEYS:
        np.testing.assert_allclose(many.spectra[k], one.spectra[k], rtol=1e-4, equal_nan=True, err_msg=k)
    np.testing.assert_allclose(many.cka, one.cka, rtol=1e-12)
    assert many.corr == pytest.approx(one.corr, rel=1e-12)


def test_snapshot_round_trip(tmp_path):
    snap = _fake_snapshot()
    back = snapshot.read(snapshot.write(snap, tmp_path))
    assert back.epoch == snap.epoch and back.layers == snap.layers and back.phases == snap.phases
    for n in snap.layers:
        np.testing.assert_array_equal(back.activations[n], snap.activations[n])
        np.testing.assert_array_equal(back.eigenvalues[n], snap.eigenvalues[n])
    for k in snapshot.SPECTRAL_KEYS:
        np.testing.assert_array_equal(back.spectra[k], snap.spectra[k])
    np.testing.assert_allclose(back.cka, snap.cka, rtol=1e-6)
    assert back.corr == pytest.approx(snap.corr)
    assert list(tmp_path.iterdir()) == [tmp_path / "epoch_0003.npz"]  # no temp files left


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "epoch_0001.npz"
    snapshot_files._atomic_savez(path, {"a": np.arange(3)})

    def broken(f):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, broken)
    assert list(tmp_path.iterdir()) == [path]
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_snapshot_metrics_names_and_values():
    snap = _fake_snapshot()
    m = snap.metrics()
    i = snap.layers.index("fc1")
    assert ("alpha/fc1" in m) == bool(np.isfinite(snap.spectra["alpha"][i]))
    assert m["spikes/fc1"] == snap.spectra["num_spikes"][i]
    assert PHASES[int(m["phase/conv1"])] == snap.phases[0]
    assert m["cka/conv1-conv2"] == pytest.approx(snap.cka[0, 1])
    assert set(snap.corr) == {"conv1-conv2", "conv2-conv3", "conv3-conv4", "conv4-conv5", "fc1-fc2"}
    assert all(np.isfinite(v) for v in m.values())


def test_diagonal_of_cka_is_one():
    snap = _fake_snapshot()
    np.testing.assert_allclose(np.diag(snap.cka), 1.0, atol=1e-6)


TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]


@pytest.mark.slow
def test_training_snapshots_equal_recomputed_ones(store):
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "2", "--register-name", "t"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run_id = mlflow.search_runs(output_format="list")[0].info.run_id
    live = load_snapshots(run_id)
    assert live.epochs == [0, 1, 2]
    assert live.activations("fc2").shape == (3, 230, 32)
    hist = mlflow.MlflowClient().get_metric_history(run_id, "alpha/fc1")
    assert sorted(m.step for m in hist) == [0, 1, 2]

    # recompute into a child run: identical arrays
    res = CliRunner().invoke(main, ["snapshot", "--run-id", run_id, "--child", "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    child = next(r for r in mlflow.search_runs(output_format="list") if r.info.run_id != run_id)
    assert child.data.tags["mlflow.parentRunId"] == run_id and child.info.status == "FINISHED"
    again = load_snapshots(child.info.run_id)
    assert again.epochs == live.epochs and np.array_equal(again.indices, live.indices)
    for e in live.epochs:
        a, b = live.by_epoch[e], again.by_epoch[e]
        for n in a.layers:
            np.testing.assert_array_equal(a.activations[n], b.activations[n])
            np.testing.assert_array_equal(a.eigenvalues[n], b.eigenvalues[n])
        assert a.phases == b.phases

    # the source run already has snapshots: refused without --overwrite
    res = CliRunner().invoke(main, ["snapshot", "--run-id", run_id, "--no-progress"])
    assert res.exit_code == 1 and "already has snapshots/" in res.stderr


def test_snapshot_of_unknown_run_is_one_line(store):
    res = CliRunner().invoke(main, ["snapshot", "--run-id", "0123456789abcdef"])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 1 and len(errors) == 1 and errors[0].startswith("error: no run with id")


def test_default_snapshot_fits_four_megabytes(tmp_path):
    model = DenseVGG()
    grids = plan_grids(model, torch.zeros(1, 3, 128, 128), 576, 0.95 * 4e6)
    rng = np.random.default_rng(0)
    acts = {}
    for name, g in grids.items():
        shape = (576, 1024) if name.startswith("fc") else (576, 5) if name == "out" else (576, 3, g, g)
        acts[name] = rng.random(shape).astype(np.float16)
    path = snapshot.write(snapshot.compute(0, acts, layer_weights(model)), tmp_path)
    assert path.stat().st_size <= 4e6
    assert math.isfinite(path.stat().st_size)


def test_record_writes_what_compute_and_write_do(tmp_path):
    """`record` (entries packed beside the computations) = `compute` + `write`, entry by entry."""
    rng = np.random.default_rng(4)
    torch.manual_seed(4)
    weights = layer_weights(DenseVGG(num_classes=4, hidden=32))
    acts = {f"conv{i}": np.maximum(rng.normal(size=(40, 3, 6, 6)), 0).astype(np.float16) for i in range(1, 6)}
    acts.update(
        fc1=np.maximum(rng.normal(size=(40, 32)), 0).astype(np.float16),
        fc2=np.maximum(rng.normal(size=(40, 32)), 0).astype(np.float16),
        out=rng.standard_normal((40, 4)).astype(np.float16),
    )
    (tmp_path / "ref").mkdir()
    ref = snapshot.write(snapshot.compute(4, acts, weights), tmp_path / "ref")
    rec, path = snapshot.record(4, acts, weights, tmp_path)
    assert path == tmp_path / "epoch_0004.npz" and rec.layers == list(weights)
    with zipfile.ZipFile(ref) as za, zipfile.ZipFile(path) as zb:
        assert za.testzip() is None and zb.testzip() is None
        assert za.namelist() == zb.namelist()
        assert all(za.read(n) == zb.read(n) for n in za.namelist())
        kinds = {i.filename: i.compress_type for i in zb.infolist()}
    assert kinds["act__conv1.npy"] == zipfile.ZIP_DEFLATED  # half zeros: deflated
    back = snapshot.read(path)
    for n in rec.layers:
        np.testing.assert_array_equal(back.activations[n], acts[n])
    np.testing.assert_array_equal(back.cka, rec.cka.astype(np.float32))
