"""Several processes writing one SQLite store: each waits for the lock as long as it takes.

MLflow's sessions wait 20 s for SQLite's write lock; dsc's processes wait
``dsc.tracking.sqlite.BUSY_TIMEOUT_MS`` (5 minutes), so that writers queued behind a busy one
(a local sweep's members) never fail with "database is locked".
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _get_store

from dsc.tracking import sqlite as sqlite_hooks
from dsc.tracking.sqlite import BUSY_TIMEOUT_MS

WRITERS, BATCHES, KEYS = 4, 100, 10
HELD_S = 22  # the lock is held longer than MLflow's own 20 s wait
# One writer: its run made, it says so and waits for the word, then logs BATCHES batches of KEYS
# metrics (step = batch) and prints its run id. It sets up its connections as importing
# dsc.tracking does, from that one module (the package would import torch: seconds a process).
WRITER = f"""
import importlib.util, pathlib, sys, time
spec = importlib.util.spec_from_file_location("dsc_sqlite", {str(Path(sqlite_hooks.__file__))!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.configure()
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
client = MlflowClient()
run_id = client.create_run("0").info.run_id
print("ready", flush=True)
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.05)
for step in range({BATCHES}):
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"m{{k}}", float(step), now, step) for k in range({KEYS})])
print(run_id, flush=True)
"""


def test_every_session_of_a_sqlite_store_waits_five_minutes_for_the_lock(store):
    engine = sqlalchemy.create_engine(store)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS  # from connecting
        conn.exec_driver_sql("PRAGMA busy_timeout = 20000;")  # what MLflow runs at each session's start
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
    engine.dispose()
    MlflowClient().search_experiments()
    with _get_store().ManagedSessionMaker() as session:  # one of MLflow's own sessions
        assert session.execute(sqlalchemy.text("PRAGMA busy_timeout")).scalar() == BUSY_TIMEOUT_MS


@pytest.mark.slow
def test_writers_queued_behind_a_lock_held_past_mlflows_wait_all_finish(store, tmp_path):
    """Four processes make their runs; the write lock is then held for 22 s while they start
    logging (without dsc's wait, each fails with "database is locked" after 20 s); every one
    then logs its 100 batches, and each point is in the store once."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(WRITERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        db = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")  # the write lock, as a long write transaction holds it
        go.touch()
        time.sleep(HELD_S)
        db.execute("COMMIT")
        db.close()
        outs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0 and "locked" not in err, err[-2000:]
    client = MlflowClient()
    for run_id in (out.split()[-1] for out, _ in outs):
        for k in range(KEYS):
            steps = sorted(m.step for m in client.get_metric_history(run_id, f"m{k}"))
            assert steps == list(range(BATCHES)), (run_id, k)
