"""Checkpoints: weights every epoch, the resuming state only where due, and what a resume starts from."""

import mlflow
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.cli import main
from dsc.errors import TrackingError
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.resume import latest_full
from dsc.nn.checkpoint import is_full, resume_state, weights_payload
from dsc.nn.train import EpochReport

TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]


def _report(epoch: int) -> EpochReport:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return EpochReport(epoch, {"acc/val": 0.1 * epoch}, model, optimizer)


@pytest.mark.parametrize("epoch, full", [(0, True), (1, False), (2, False), (3, True), (5, True), (6, True)])
def test_full_state_at_epoch_zero_every_kth_and_the_last(epoch, full):
    assert EpochLogger({}, state_every=3, last_epoch=5).full_due(epoch) == full


def test_weights_checkpoint_is_deflated_and_reads_with_torch_load(tmp_path):
    report = _report(1)
    path = tmp_path / "epoch_0001.pt"
    torch.save(weights_payload(report, {"classes": ["a", "b"]}), path)
    stored = path.stat().st_size
    loaded = torch.load(tracking.deflate(path), weights_only=True)
    assert path.stat().st_size < stored
    assert not is_full(loaded) and loaded["classes"] == ["a", "b"]
    assert torch.equal(loaded["model_state"]["weight"], report.model.weight.detach())
    assert is_full({**loaded, **resume_state(report.optimizer)})


def _logged_run(tmp_path, payloads: dict[int, dict | bytes], full: list[int]) -> mlflow.entities.Run:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    for epoch, payload in payloads.items():
        path = tmp_path / tracking.CHECKPOINT_FMT.format(epoch)
        if isinstance(payload, bytes):
            path.write_bytes(payload)
        else:
            torch.save(payload, path)
        client.log_artifact(run_id, str(path), tracking.CHECKPOINT_DIR)
    tracking.mark_complete(run_id, tracking.CHECKPOINT_DIR, max(payloads))
    for epoch in full:
        tracking.mark_full(run_id, epoch)
    return client.get_run(run_id)


@pytest.mark.slow
def test_resume_starts_from_the_latest_readable_full_state(store, tmp_path):
    full = {"epoch": 0, "optimizer_state": {}, "model_state": {}}
    run = _logged_run(
        tmp_path,
        {0: full, 1: {"epoch": 1, "model_state": {}}, 2: b"half-written", 3: {"epoch": 3, "model_state": {}}},
        full=[0, 2],
    )
    assert tracking.full_epochs(run) == [0, 2]
    start, ckpt = latest_full(run, tracking.list_checkpoints(run.info.run_id))
    assert start == 0 and ckpt["epoch"] == 0  # epoch 2's full state is corrupt: the one before


def test_old_runs_count_every_checkpoint_as_full(store, tmp_path):
    run = _logged_run(tmp_path, {e: {"epoch": e, "optimizer_state": {}, "model_state": {}} for e in (0, 1)}, [])
    assert tracking.full_epochs(run) is None
    assert latest_full(run, tracking.list_checkpoints(run.info.run_id))[0] == 1


def test_no_readable_full_state_is_one_line(store, tmp_path):
    run = _logged_run(tmp_path, {0: b"garbage", 1: {"epoch": 1, "model_state": {}}}, full=[0])
    with pytest.raises(TrackingError, match=r"no readable checkpoint with the optimizer state .*tried: 0 "):
        latest_full(run, tracking.list_checkpoints(run.info.run_id))


@pytest.mark.slow
def test_training_keeps_weights_every_epoch_and_state_where_due(store):
    res = CliRunner().invoke(
        main, ["train", *TINY, "--epochs", "3", "--state-every", "2", "--register-name", "c"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    run = mlflow.search_runs(output_format="list")[0]
    assert tracking.full_epochs(run) == [0, 2, 3]
    ckpts = tracking.list_checkpoints(run.info.run_id)
    assert sorted(ckpts) == [0, 1, 2, 3]
    assert [is_full(tracking.load_checkpoint(run.info.run_id, p)) for p in ckpts.values()] == [True, False, True, True]


def test_deflate_stores_what_does_not_compress_and_reads_back_both(tmp_path):
    """Mostly-zero activations and float32 weights (8% smaller, Huffman alone) are deflated; random bytes are stored."""
    import zipfile
    import zlib

    import numpy as np

    from dsc.core import zips

    rng = np.random.default_rng(0)
    arrays = {
        "acts": np.maximum(rng.normal(size=(64, 512)), 0).astype(np.float32) * (rng.random((64, 512)) < 0.1),
        "weights": rng.normal(scale=0.05, size=(256, 256)).astype(np.float32),
        "noise": rng.integers(0, 256, size=200_000, dtype=np.uint8),
    }
    path = tmp_path / "snap.npz"
    np.savez(path, **arrays)
    tracking.deflate(path)
    with zipfile.ZipFile(path) as z:
        kinds = {i.filename: i.compress_type for i in z.infolist()}
        ratio = z.getinfo("weights.npy").compress_size / z.getinfo("weights.npy").file_size
    assert kinds == {
        "acts.npy": zipfile.ZIP_DEFLATED,
        "weights.npy": zipfile.ZIP_DEFLATED,
        "noise.npy": zipfile.ZIP_STORED,
    }
    assert 0.85 < ratio < 0.98
    assert zips.choose(arrays["weights"].tobytes()) == zlib.Z_HUFFMAN_ONLY
    with np.load(path) as back:
        assert all(np.array_equal(back[k], v) for k, v in arrays.items())
