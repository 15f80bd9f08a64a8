"""One writer per run, and a run that outlives its tracking server's restart (real processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import forked
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from served import dsc_env, run_id, start

from dsc import tracking
from dsc.tracking.server import free_port, mlflow_server

TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]


def wait_for(what, client: MlflowClient, name: str, proc: subprocess.Popen, timeout: float = 300):
    """The run named ``name`` once ``what(run)`` holds (the process must still be running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = client.search_runs(["0"], f"attributes.run_name = '{name}'")
        if runs and what(runs[0]):
            return runs[0]
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise TimeoutError(f"run {name} not ready in {timeout:.0f} s")


def epochs_once(client: MlflowClient, rid: str) -> dict[str, list[int]]:
    """The steps of every per-epoch metric, sorted.

    ``best/*`` is logged once, at the best epoch; ``system/*`` (MLflow's monitor) is sampled
    by time, not by epoch.
    """
    return {
        k: sorted(m.step for m in client.get_metric_history(rid, k))
        for k in client.get_run(rid).data.metrics
        if not k.startswith(("best/", "system/"))
    }


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_second_signal_stops_at_once(store, tmp_path, cache_dir):
    client = MlflowClient(store)
    env = dsc_env(store, cache_dir)
    first = start("train", *TINY, "--epochs", "500", "--run-name", "first", "--no-register", env=env, cwd=tmp_path)
    run = wait_for(
        lambda r: tracking.HEARTBEAT_TAG in r.data.tags and int(r.data.tags.get("dsc.complete.checkpoints", -1)) >= 0,
        client,
        "first",
        first,
    )
    rid = run.info.run_id

    second = forked.run(
        [sys.executable, "-m", "dsc", "train", "--resume", rid, "--no-progress"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert second.returncode == 1 and len(errors) == 1, second.stderr[-2000:]
    assert f"is being trained by pid {first.pid}" in errors[0] and f"kill {first.pid}" in errors[0]
    assert "--takeover" in errors[0]
    assert client.get_run(rid).info.status == "RUNNING"  # the refused writer changed nothing

    first.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # two signals at once would reach Python's handler as one
    first.send_signal(signal.SIGTERM)  # the second: no graceful stop, the signal's default action
    first.communicate(timeout=120)
    assert first.returncode == -signal.SIGTERM
    for key, steps in epochs_once(client, rid).items():
        assert steps == list(range(len(steps))), key  # one writer: each epoch once


# Longer without the server than MLflow's first three retries wait (2, 4 and 8 s: backoff factor 2),
# well inside all seven of its defaults (about 4 minutes). The fourth comes about 30 s after the
# first failure: the new server, which takes seconds to start on a busy machine, is up by then,
# and the run carries on without waiting for the fifth (about 62 s).
OUTAGE_S = 15


@pytest.mark.slow
def test_a_server_restarted_mid_run_loses_nothing(tmp_path, cache_dir, monkeypatch):
    backend, artifacts, log = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log"
    port, epochs = free_port(), 4
    with mlflow_server(backend, artifacts, log, port=port) as uri:
        client = MlflowClient(uri)
        proc = start(
            "train",
            *TINY,
            "--epochs",
            str(epochs),
            "--run-name",
            "survivor",
            "--no-register",
            env=dsc_env(uri, cache_dir),
            cwd=tmp_path,
        )
        wait_for(lambda r: int(r.data.tags.get("dsc.complete.checkpoints", -1)) >= 1, client, "survivor", proc)
    time.sleep(OUTAGE_S)  # the server stays down mid-run
    assert proc.poll() is None  # the run retried through the outage, and carries on with the new server
    with mlflow_server(backend, artifacts, log, port=port) as uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        rid = run_id(out)
        run = client.get_run(rid)
        assert run.info.status == "FINISHED" and tracking.HEARTBEAT_TAG not in run.data.tags
        steps = epochs_once(client, rid)
        assert len(steps) > 50  # training, spectra, CKA, ... metrics
        for key, logged in steps.items():
            assert logged == list(range(epochs + 1)), key  # every point, exactly once
        assert len(client.get_metric_history(rid, "best/acc_val")) == 1
        assert sorted(tracking.list_checkpoints(rid)) == list(range(epochs + 1))
        assert tracking.snapshot.load(rid).epochs == list(range(epochs + 1))
