"""Shared fixtures: every test gets its own SQLite tracking store and data cache."""

from __future__ import annotations

import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import forked
import mlflow
import pytest

# The files whose tests take longest, longest first. Each xdist worker takes a whole file at a
# time (``--dist loadfile``: a module's fixtures are built once), in collection order; starting
# with these leaves the short files to fill in at the end, where a long file would otherwise
# keep one worker busy after the other has finished.
LONGEST_FIRST = (
    "test_sweep_ray.py",
    "test_resume.py",
    "test_sweep.py",
    "test_cli_train.py",
    "test_recorder.py",
    "test_storage_faults.py",
    "test_conv3.py",
    "test_analyze.py",
    "test_reliability.py",
    "test_ui.py",
    "test_server.py",
    "test_compare.py",
    "test_sqlite_store.py",
    "test_hostile.py",
    "test_auth.py",
    "test_train.py",
    "test_cli_startup.py",
    "test_synthetic.py",
    "test_register.py",
    "test_checkpoints.py",
    "test_snapshot.py",
)


def pytest_collection_modifyitems(items):
    """Collect the files of :data:`LONGEST_FIRST` first, in its order; each file's tests keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _restore_mlflow_environment():
    """MLflow's fluent API writes some of these (set_experiment sets MLFLOW_EXPERIMENT_ID):
    put them back after each test so that none leaks into the next one's subprocesses."""
    keys = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One data cache for the session: generated faces are reused across tests."""
    return tmp_path_factory.mktemp("dsc-cache")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """An empty, fully migrated SQLite store, built once (MLflow's schema setup takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


def fresh_store(tmp_path, monkeypatch, cache_dir, empty_store) -> str:
    """Copy the empty store into ``tmp_path``, work there and point MLflow at it; returns its URI."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    # The template's Default experiment points at the template's folder: give it this test's own.
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            ((tmp_path / "mlruns" / "0").as_uri(),),
        )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DSC_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    # mlflow.set_experiment in an earlier test leaves its id active in this process; the id
    # would not exist in this fresh store.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    return uri


def made_current(store: str, run, monkeypatch):
    """Point MLflow (and the subprocesses a test starts) at a store built once for a module."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    return store, run


@pytest.fixture
def store(tmp_path, monkeypatch, cache_dir, empty_store):
    """A fresh SQLite tracking store in a temporary working directory; returns its URI."""
    yield fresh_store(tmp_path, monkeypatch, cache_dir, empty_store)
    while mlflow.active_run():
        mlflow.end_run()


def kill_at(stage: str, args: list[str], timeout: float = 300) -> str:
    """Run ``python -m dsc ARGS`` until it pauses at ``stage`` (``DSC_TEST_PAUSE_AT``), then SIGKILL it.

    Returns what it wrote to stderr; fails the test if it ends, or takes ``timeout`` s, before pausing.
    """
    env = {**os.environ, "DSC_TEST_PAUSE_AT": stage}
    cmd = [sys.executable, "-m", "dsc", *args]
    proc = forked.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"dsc {args[0]} did not pause at {stage} in {timeout} s: {''.join(seen)[-2000:]}")
            if line is None:
                pytest.fail(f"dsc {args[0]} ended ({proc.wait()}) before pausing at {stage}: {''.join(seen)[-2000:]}")
            seen.append(line)
            if line.strip() == f"dsc: paused at {stage}":
                return "".join(seen)
    finally:
        proc.kill()
        proc.wait()
