"""Storage faults that lose nothing: files corrupted at rest are caught by the checksums recorded
when they were written, and named; every reader falls back, skips or refuses in one line."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
import torch
from click.testing import CliRunner
from conftest import fresh_store, kill_at, made_current
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.cli import main
from dsc.errors import TrackingError
from dsc.jobs.register import register_job
from dsc.jobs.resume import latest_full

pytestmark = pytest.mark.slow  # each test needs the module's server or trained run

TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]
EPOCHS = 3


@pytest.fixture(scope="module")
def _trained(tmp_path_factory, cache_dir, empty_store):
    tmp = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        store = fresh_store(tmp, mp, cache_dir, empty_store)
        res = CliRunner().invoke(
            main,
            ["train", *TINY, "--epochs", str(EPOCHS), "--state-every", "2", "--register-name", "faults"],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        yield store, MlflowClient().search_runs(["0"])[0]


@pytest.fixture
def trained(_trained, monkeypatch):
    """A store with one finished 3-epoch training run (snapshots every epoch, full states at 0, 2, 3), made current."""
    return made_current(*_trained, monkeypatch)[1]


def stored(run, artifact_path: str) -> Path:
    """Where the (local) artifact store keeps one of the run's files."""
    return Path(unquote(urlparse(run.info.artifact_uri).path)) / artifact_path


@contextlib.contextmanager
def corrupted(path: Path, how: str):
    """``path`` damaged at rest (``zeroed``: 64 bytes in its middle; ``truncated``: its second half
    gone; ``flipped``: one bit of its last byte), put back on exit."""
    original = path.read_bytes()
    data = bytearray(original)
    middle = len(data) // 2
    if how == "zeroed":
        data[middle : middle + 64] = bytes(64)
    elif how == "truncated":
        del data[middle:]
    else:
        data[-1] ^= 1
    path.write_bytes(bytes(data))
    try:
        yield
    finally:
        path.write_bytes(original)


def test_every_checkpoint_and_snapshot_has_its_checksum(trained):
    tags = trained.data.tags
    files = [
        *tracking.list_checkpoints(trained.info.run_id).values(),
        "snapshots/probe.npz",
        *(f"snapshots/epoch_{e:04d}.npz" for e in range(EPOCHS + 1)),
    ]
    for path in files:
        assert tags[tracking.CHECKSUM_TAG.format(path)] == tracking.integrity.sha256_of(stored(trained, path)), path


@pytest.mark.parametrize("how", ["zeroed", "truncated", "flipped"])
def test_a_corrupted_checkpoint_is_named_not_unpickled(trained, how):
    path = "checkpoints/epoch_0002.pt"
    with (
        corrupted(stored(trained, path), how),
        pytest.raises(
            TrackingError,
            match=rf"^checkpoint {path} of run {trained.info.run_id} fails its "
            r"checksum \(its SHA-256 is [0-9a-f]{12}\.\.\. \(\d+ bytes\), not the",
        ),
    ):
        tracking.load_checkpoint(trained.info.run_id, path)
    assert tracking.load_checkpoint(trained.info.run_id, path)["epoch"] == 2  # put back: it reads again


def test_resume_passes_over_a_corrupted_latest_state_to_the_one_before(trained):
    ckpts = tracking.list_checkpoints(trained.info.run_id)
    assert latest_full(trained, ckpts)[0] == EPOCHS
    with corrupted(stored(trained, ckpts[EPOCHS]), "zeroed"):
        start, ckpt = latest_full(trained, ckpts)
    assert start == EPOCHS - 1 and ckpt["epoch"] == EPOCHS - 1


def test_register_refuses_a_corrupted_checkpoint_in_one_line(trained):
    with (
        corrupted(stored(trained, "checkpoints/epoch_0001.pt"), "zeroed"),
        pytest.raises(TrackingError, match=r"checkpoint checkpoints/epoch_0001.pt of run \w+ fails its checksum"),
    ):
        register_job(trained.info.run_id, 1)
    assert len(MlflowClient().search_model_versions("name = 'faults'")) == 2  # final and best, nothing new


def test_snapshot_readers_refuse_or_skip_a_corrupted_epoch(trained):
    run_id = trained.info.run_id
    with corrupted(stored(trained, "snapshots/epoch_0002.npz"), "truncated"):
        with pytest.raises(TrackingError, match=r"snapshot snapshots/epoch_0002.npz of run \w+ fails its checksum"):
            tracking.snapshot.load(run_id)
        snaps, skipped = tracking.snapshot.load_verified(run_id)
    assert snaps.epochs == [0, 1, 3]
    assert list(skipped) == [2] and "snapshots/epoch_0002.npz fails its checksum" in skipped[2]
    with (
        corrupted(stored(trained, "snapshots/probe.npz"), "flipped"),
        pytest.raises(TrackingError, match=r"probe\.npz of run .* fails its checksum"),
    ):
        tracking.snapshot.load_verified(run_id)
    assert tracking.snapshot.load(run_id).epochs == list(range(EPOCHS + 1))


@pytest.mark.slow
def test_analyze_skips_a_corrupted_snapshot_epoch_and_checkpoint_and_says_why(trained):
    """Epoch 2's snapshot flipped, epoch 1's checkpoint zeroed: the analysis runs on epochs 0, 1
    and 3, and its summary, report and warnings name both files and the checksum that failed."""
    run_id = trained.info.run_id
    with (
        corrupted(stored(trained, "snapshots/epoch_0002.npz"), "flipped"),
        corrupted(stored(trained, "checkpoints/epoch_0001.pt"), "zeroed"),
    ):
        res = CliRunner().invoke(
            main, ["analyze", "--run-id", run_id, "--no-progress", "--modes-max-images", "64", "--no-epoch-images"]
        )
    assert res.exit_code == 0, res.output
    assert "warning: epoch 2 is left out of the analysis: snapshot snapshots/epoch_0002.npz fails its checksum" in (
        res.stderr
    )
    assert "NC3 and NC4 skip epoch 1: checkpoint checkpoints/epoch_0001.pt" in res.stderr
    analysis = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="analysis"))
    summary = json.loads((analysis / "summary.json").read_text())
    assert summary["epochs"] == [0, 1, 3]
    assert list(summary["skipped_epochs"]) == ["2"]
    assert re.match(
        r"snapshot snapshots/epoch_0002\.npz fails its checksum \(its SHA-256 is [0-9a-f]{12}\.\.\.",
        summary["skipped_epochs"]["2"],
    )
    assert list(summary["collapse"]["skipped_checkpoints"]) == ["1"]
    assert (
        f"checkpoints/epoch_0001.pt of run {run_id} fails its checksum"
        in (summary["collapse"]["skipped_checkpoints"]["1"])
    )
    assert summary["collapse"]["weight_epochs"] == [0, 3]
    page = (analysis / "report.html").read_text()
    assert "Skipped epochs" in page and "snapshots/epoch_0002.npz fails its checksum" in page
    assert "checkpoint of epoch 1" in page


def _files(run_id: str, path: str) -> set[str]:
    out = set()
    for f in MlflowClient().list_artifacts(run_id, path):
        out |= _files(run_id, f.path) if f.is_dir else {f.path}
    return out


def _points(run_id: str) -> dict[tuple[str, int], int]:
    """How many points each (metric, step) of a run has."""
    client, out = MlflowClient(), {}
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            out[key, m.step] = out.get((key, m.step), 0) + 1
    return out


@pytest.mark.slow
def test_an_analysis_killed_halfway_is_not_complete_and_the_next_replaces_it(trained, tmp_path):
    """Over an earlier analysis (a figure the next one does not draw), one is killed with its
    files uploaded and its metrics not yet logged: the run holds no complete analysis and no new
    metric point; the next analysis leaves exactly its own files, one new point per metric and
    step, and the completion tag."""
    run_id, tag = trained.info.run_id, tracking.COMPLETE_TAG.format("analysis")
    (tmp_path / "stale.png").write_bytes(b"a figure of an earlier analysis")
    MlflowClient().log_artifact(run_id, str(tmp_path / "stale.png"), "analysis/figures")
    tracking.mark_complete(run_id, "analysis", EPOCHS)
    before = _points(run_id)
    args = ["analyze", "--run-id", run_id, "--no-progress", "--modes-max-images", "64", "--no-epoch-images"]
    kill_at("analyze-uploaded", args)
    assert tag not in MlflowClient().get_run(run_id).data.tags  # not presented as complete
    assert "analysis/figures/stale.png" not in _files(run_id, "analysis")  # the old analysis is gone
    assert _points(run_id) == before
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert MlflowClient().get_run(run_id).data.tags[tag] == str(EPOCHS)
    summary = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="analysis/summary.json")).read_text()
    )
    assert _files(run_id, "analysis") == {"analysis/summary.json", "analysis/report.html"} | {
        f"analysis/figures/{name}" for name in summary["figures"]
    }
    grown = {key: n - before.get(key, 0) for key, n in _points(run_id).items()}
    assert set(grown.values()) == {0, 1}  # no point logged twice
    new = {key for key, n in grown.items() if n}
    assert {(name, 0) for name in summary["logged_metrics"]} <= new
    assert all(name.startswith("nc/") or (step == 0 and name in summary["logged_metrics"]) for name, step in new)


def test_dsc_snapshot_refuses_a_corrupted_checkpoint(trained):
    with corrupted(stored(trained, "checkpoints/epoch_0000.pt"), "zeroed"):
        res = CliRunner().invoke(main, ["snapshot", "--run-id", trained.info.run_id, "--child", "--no-progress"])
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]  # after the download bars
    assert line.startswith("error: checkpoint checkpoints/epoch_0000.pt of run ") and "fails its checksum" in line
    child = MlflowClient().search_runs(["0"], f"tags.mlflow.parentRunId = '{trained.info.run_id}'")
    assert [r.info.status for r in child] == ["FAILED"]


def test_a_file_written_before_checksums_were_kept_is_read_as_it_is(store, tmp_path):
    run_id = MlflowClient().create_run("0").info.run_id
    path = tmp_path / tracking.CHECKPOINT_FMT.format(0)
    torch.save({"epoch": 0, "model_state": {}}, path)
    MlflowClient().log_artifact(run_id, str(path), tracking.CHECKPOINT_DIR)
    assert tracking.load_checkpoint(run_id, "checkpoints/epoch_0000.pt")["epoch"] == 0


@contextlib.contextmanager
def small_filesystem(path: Path, size: int):
    """A tmpfs of ``size`` bytes mounted at ``path`` (needs root); skips the test where mounting is refused."""
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield lambda bigger: subprocess.run(["mount", "-o", f"remount,size={bigger}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _pages(size: int) -> int:
    return -(-size // 4096)


@pytest.mark.slow
def test_a_full_artifact_store_fails_the_run_in_one_line_and_resume_finishes_it(trained, tmp_path):
    """The artifact root of an experiment on a tmpfs with room for the files of epochs 0 and 1
    (and not those of epoch 2) of the reference run, which trained alike to the end: the run ends
    FAILED with one line, its earlier epochs' files intact; once the tmpfs is made bigger,
    `--resume` finishes it with the reference's final weights."""
    ref = trained.info.run_id
    sizes = {
        f: stored(trained, f).stat().st_size
        for f in [
            "snapshots/probe.npz",
            *(f"{d}/epoch_{e:04d}.{x}" for e in (0, 1) for d, x in (("snapshots", "npz"), ("checkpoints", "pt"))),
        ]
    }
    room = 4096 * (
        sum(_pages(s) for s in sizes.values()) + _pages(stored(trained, "snapshots/epoch_0002.npz").stat().st_size) // 2
    )
    args = ["train", *TINY, "--epochs", str(EPOCHS), "--state-every", "2", "--register-name", "faults-full"]
    with small_filesystem(tmp_path / "small", room) as enlarge:
        experiment = MlflowClient().create_experiment("full", artifact_location=(tmp_path / "small").as_uri())
        res = CliRunner().invoke(main, [*args, "--experiment", "full"])
        assert res.exit_code == 1
        run = MlflowClient().search_runs([experiment])[0]
        line = res.output.strip().splitlines()[-1]
        assert line.startswith(f"error: the artifact store {run.info.artifact_uri} is full: ")
        assert re.search(
            r"is full: snapshots/epoch_0002\.npz needs \d+ bytes, \d+ free there; .* "
            rf"`dsc train --resume {run.info.run_id}`$",
            line,
        ), line
        assert run.info.status == "FAILED" and "is full" in run.data.tags["error"]
        assert tracking.complete_through(run, "checkpoints") == 1 and tracking.complete_through(run, "snapshots") == 1
        for path in sizes:  # every earlier epoch's files: there, whole, as they were written
            assert tracking.CHECKSUM_TAG.format(path) in run.data.tags, path
            assert tracking.integrity.corruption(run, path, stored(run, path)) is None, path
        assert tracking.load_checkpoint(run.info.run_id, "checkpoints/epoch_0001.pt")["epoch"] == 1
        enlarge(64 << 20)
        res = CliRunner().invoke(main, ["train", "--resume", run.info.run_id, "--no-progress"])
        assert res.exit_code == 0, res.output
        resumed = MlflowClient().get_run(run.info.run_id)
        assert resumed.info.status == "FINISHED"
        assert tracking.snapshot.load(run.info.run_id).epochs == list(range(EPOCHS + 1))
        final = {
            r: tracking.load_checkpoint(r, f"checkpoints/epoch_{EPOCHS:04d}.pt")["model_state"]
            for r in (ref, run.info.run_id)
        }
        assert all(torch.equal(final[ref][k], final[run.info.run_id][k]) for k in final[ref])
