"""Runs that survive faults: a killed or stopped run resumed, parallel runs on one store, half-written files."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked
import mlflow
import numpy as np
import pytest
import torch
from conftest import fresh_store, made_current
from mlflow.tracking import MlflowClient
from served import histories

from dsc import tracking
from dsc.core import snapshot
from dsc.errors import TrackingError
from dsc.tracking.snapshot import load as load_snapshots

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--identities", "2", "--image-size", "16", "--hidden", "32", "--no-progress"]


def env_for(store: str) -> dict:
    # One thread: the same arithmetic in every process, whatever the machine's load.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
    }
    return {**inherited, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}


def dsc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dsc", *args]


def run_named(name: str):
    runs = MlflowClient().search_runs(["0"], f"attributes.run_name = '{name}'")
    return runs[0] if runs else None


def final_weights(run_id: str, epoch: int) -> dict[str, torch.Tensor]:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"checkpoints/epoch_{epoch:04d}.pt")
    return torch.load(path, weights_only=True)["model_state"]


EPOCHS = 5
COMMON = [*TINY, "--epochs", str(EPOCHS), "--seed", "3", "--register-name", "resumed"]


@pytest.fixture(scope="module")
def _reference_store(tmp_path_factory, cache_dir, empty_store):
    tmp = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        store = fresh_store(tmp, mp, cache_dir, empty_store)
        ref = forked.run(
            dsc("train", *COMMON, "--run-name", "reference"),
            env=env_for(store),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ref.returncode == 0, ref.stderr[-2000:]
        yield store, run_named("reference")


@pytest.fixture
def reference(_reference_store, monkeypatch):
    """A store holding one uninterrupted training run, made current; (store URI, that run)."""
    return made_current(*_reference_store, monkeypatch)


def start_victim(store: str, name: str, log: Path, args: list[str] = COMMON) -> tuple[subprocess.Popen, str]:
    """A training process (its stderr to ``log``), once its checkpoint of epoch 2 is complete.

    The loop starts epoch 3 right after marking that checkpoint, so a signal sent now arrives
    mid-epoch, between optimizer steps. Returns the process and its run id.
    """
    with open(log, "w") as err:
        victim = forked.Popen(
            dsc("train", *args, "--run-name", name), env=env_for(store), stdout=subprocess.DEVNULL, stderr=err
        )
    deadline = time.time() + 300
    while time.time() < deadline:
        run = run_named(name)
        if run and int(run.data.tags.get("dsc.complete.checkpoints", -1)) >= 2:
            return victim, run.info.run_id
        assert victim.poll() is None, log.read_text()[-2000:]
        time.sleep(0.02)
    raise TimeoutError(f"{name} wrote no checkpoint of epoch 2 in 300 s")


def assert_resumed_like(reference_run, run_id: str) -> None:
    """The resumed run has the reference's every metric point (each step once) and final weights."""
    resumed = MlflowClient().get_run(run_id)
    assert resumed.info.status == "FINISHED"
    want, got = histories(reference_run.info.run_id), histories(run_id)
    assert sorted(got) == sorted(want) and len(want) > 50  # training, spectra, CKA, ... metrics
    for key in want:  # every value at every step, each step once
        assert got[key] == want[key], key
    assert [s for s, _ in want["acc/val"]] == list(range(EPOCHS + 1))
    a, b = final_weights(reference_run.info.run_id, EPOCHS), final_weights(run_id, EPOCHS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert MlflowClient().get_model_version_by_alias("resumed", "final").run_id == run_id
    assert load_snapshots(run_id).epochs == list(range(EPOCHS + 1))


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path):
    store, ref = reference
    victim, rid = start_victim(store, "victim", tmp_path / "victim.log")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    killed = MlflowClient().get_run(rid)
    done = int(killed.data.tags["dsc.complete.checkpoints"])
    assert killed.info.status == "RUNNING" and 2 <= done < EPOCHS
    assert tracking.HEARTBEAT_TAG in killed.data.tags  # left behind, and fresh: its pid is dead here

    # Continue through the MLproject entry point, into the same run.
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "resume", "--run-id", rid, "--env-manager", "local"]
    proc = subprocess.run(cmd, env=env_for(store), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert MlflowClient().get_run(rid).data.tags["dsc.resumed_from"] == str(done)
    assert_resumed_like(ref, rid)


@pytest.mark.slow
def test_killed_step_budget_run_resumes_to_the_same_weights(store, tmp_path):
    """``--steps 100`` at 29 steps an epoch: epochs 1-3 whole, epoch 4 partial (13 steps)."""
    args = [*TINY, "--steps", "100", "--seed", "3", "--snapshot-every", "0", "--register-name", "budget"]
    ref = forked.run(
        dsc("train", *args, "--run-name", "whole"), env=env_for(store), capture_output=True, text=True, timeout=600
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    whole = run_named("whole")
    assert whole.data.params["steps_epochs"] == "4" and whole.data.params["steps_last_epoch"] == "13"
    victim, rid = start_victim(store, "killed", tmp_path / "victim.log", args)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    res = forked.run(
        dsc("train", "--resume", rid, "--no-progress"), env=env_for(store), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    want, got = histories(whole.info.run_id), histories(rid)
    assert got["train/steps"] == want["train/steps"] and want["train/steps"][-1] == (4, 100.0)
    a, b = final_weights(whole.info.run_id, 4), final_weights(rid, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
# Both signals go through one handler: the stop is checked for each, the resume once.
@pytest.mark.parametrize("sig,resume", [(signal.SIGTERM, True), (signal.SIGINT, False)], ids=["SIGTERM", "SIGINT"])
def test_stopped_run_ends_killed_and_resumes_to_the_uninterrupted_result(reference, sig, resume, tmp_path):
    store, ref = reference
    victim, rid = start_victim(store, sig.name, tmp_path / "victim.log")
    victim.send_signal(sig)
    assert victim.wait(timeout=120) == 128 + sig  # 143, 130: the shells' convention
    lines = (tmp_path / "victim.log").read_text().strip().splitlines()
    found = re.fullmatch(
        rf"interrupted at epoch (\d+) by {sig.name} \(epochs 0-\d+ kept\); "
        rf"continue with dsc train --resume {rid}",
        lines[-1],
    )
    assert found, lines[-3:]
    stopped = MlflowClient().get_run(rid)
    assert stopped.info.status == "KILLED" and sig.name in stopped.data.tags["error"]
    assert tracking.HEARTBEAT_TAG not in stopped.data.tags  # released: resumable at once
    assert int(stopped.data.tags["dsc.complete.checkpoints"]) == int(found.group(1)) - 1
    if not resume:
        return

    res = forked.run(
        dsc("train", "--resume", rid, "--no-progress"), env=env_for(store), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert sig.name in MlflowClient().get_run(rid).data.tags["dsc.previous_error"]
    assert_resumed_like(ref, rid)


@pytest.mark.slow
def test_four_runs_at_once_on_a_new_sqlite_store(tmp_path, cache_dir):
    """Four processes create one SQLite store together, train and register into one model name."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"  # does not exist yet: all four race to create it
    env = {**env_for(store), "DSC_CACHE_DIR": str(cache_dir)}
    procs = [
        forked.Popen(
            dsc("train", *TINY, "--epochs", "2", "--seed", str(i), "--run-name", f"p{i}", "--register-name", "shared"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(e[-1500:] for e in errors)
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs(["0"])
    assert sorted(r.info.run_name for r in runs) == ["p0", "p1", "p2", "p3"]
    for r in runs:
        assert r.info.status == "FINISHED"
        for key in ("loss/train", "loss/val", "acc/train", "acc/val"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1, 2]
    versions = client.search_model_versions("name = 'shared'")
    # each run registers its final model (and its best, when that is another epoch)
    by_run = {}
    for v in versions:
        by_run.setdefault(v.run_id, set()).add(int(v.version))
    assert sorted(by_run) == sorted(r.info.run_id for r in runs)
    numbers = [n for vs in by_run.values() for n in vs]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))  # distinct, none lost


def test_checkpoints_past_the_completion_mark_are_not_listed(store, tmp_path):
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    for e in range(4):
        path = tmp_path / tracking.CHECKPOINT_FMT.format(e)
        path.write_bytes(b"half-written" if e == 3 else b"complete")
        client.log_artifact(run_id, str(path), tracking.CHECKPOINT_DIR)
    assert sorted(tracking.list_checkpoints(run_id)) == [0, 1, 2, 3]  # no mark: older runs list all
    tracking.mark_complete(run_id, tracking.CHECKPOINT_DIR, 2)
    assert sorted(tracking.list_checkpoints(run_id)) == [0, 1, 2]
    with pytest.raises(TrackingError, match="unreadable"):
        tracking.load_checkpoint(run_id, "checkpoints/epoch_0001.pt")


def _snapshot_dir(tmp_path: Path, epochs: int) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 10)
    for e in range(epochs):
        acts = {"fc1": rng.normal(size=(20, 16)), "out": rng.normal(size=(20, 2))}
        weights = {"fc1": rng.normal(size=(16, 24)), "out": rng.normal(size=(2, 16))}
        snapshot.write(snapshot.compute(e, acts, weights), tmp_path)
    snapshot.write_probe(tmp_path, labels, np.arange(20), ["a", "b"], ["fc1", "out"], {})
    return tmp_path


def test_half_written_snapshot_is_ignored_past_the_mark_and_an_error_before_it(tmp_path):
    directory = _snapshot_dir(tmp_path, 3)
    whole = (directory / "epoch_0002.npz").read_bytes()
    (directory / "epoch_0002.npz").write_bytes(whole[: len(whole) // 2])  # the process died mid-copy
    assert snapshot.read_dir(directory, through=1).epochs == [0, 1]
    with pytest.raises(TrackingError, match=r"epoch_0002\.npz is unreadable"):
        snapshot.read_dir(directory)
