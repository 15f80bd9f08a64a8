"""Shared fixtures: every test gets its own SQLite tracking store and data cache."""
from __future__ import annotations

import os
import shutil
import sqlite3

import mlflow
import pytest


def _seconds(item) -> float:
    marker = item.get_closest_marker("slow")
    return marker.kwargs.get("seconds", 0) if marker else 0


def pytest_collection_modifyitems(items):
    """The longest tests (``@pytest.mark.slow(seconds=N)``, a rough idle duration) spread over the
    xdist workers and started first. ``--dist worksteal`` first hands each worker a contiguous
    share of this order, of len(items) // workers tests, and an idle worker later steals from the
    end of another's queue; so each share starts with its long tests, given greedily to the
    share with the fewest long seconds, and the rest follow in file order. Started last, a
    three-minute test would keep one worker busy long after the other ran out of tests."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    long = sorted((it for it in items if _seconds(it)), key=_seconds, reverse=True)
    rest = [it for it in items if not _seconds(it)]
    shares, load = [[] for _ in range(workers)], [0.0] * workers
    for item in long:
        k = load.index(min(load))
        shares[k].append(item)
        load[k] += _seconds(item)
    size = len(items) // workers
    for share in shares[:-1]:
        take = max(size - len(share), 0)
        share.extend(rest[:take])
        rest = rest[take:]
    shares[-1].extend(rest)
    items[:] = [item for share in shares for item in share]


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
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   ((tmp_path / "mlruns" / "0").as_uri(),))
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
