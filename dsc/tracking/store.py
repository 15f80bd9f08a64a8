"""Runs in the tracking store: create or attach, params and metrics, lookups, history.

The store is whatever ``MLFLOW_TRACKING_URI`` names (default ``sqlite:///mlflow.db`` here).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient

from dsc.errors import ConfigError, Interrupted, TrackingError
from dsc.tracking.auth import failed_line, redact, require_experiment_write

KIND_TAG = "dsc.kind"  # what wrote a run: train, compare, snapshot, analyze
# MLflow retries an HTTP request for about four minutes (7 retries, backoff factor 2): right
# once a run is under way, where a server restart must cost nothing, too slow to learn at
# start-up that no server answers. The start-up probe uses these instead (about 20 s at most; a
# refused connection fails at once). 5 s a try: a server with MLflow's auth app hashes each
# request's password (PBKDF2) before it answers, which is slow while its CPU is busy.
PROBE_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@contextlib.contextmanager
def _probe_http() -> Iterator[None]:
    """MLflow's HTTP retry settings of :data:`PROBE_HTTP` inside, the caller's again after."""
    saved = {k: os.environ.get(k) for k in PROBE_HTTP}
    os.environ.update(PROBE_HTTP)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _probe_server(uri: str) -> None:
    """One quick request to an HTTP tracking server: it answers, and accepts the credentials given.

    A TrackingError saying what to do if either fails (a 401: :func:`dsc.tracking.auth.failed_line`).
    """
    try:
        with _probe_http():
            MlflowClient().search_experiments(max_results=1)
    except mlflow.exceptions.MlflowException as exc:
        if "error code 401 " in str(exc.message):
            raise TrackingError(failed_line(uri)) from None
        errno_text = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc.message))
        cause = errno_text.group(0).strip() if errno_text else str(exc.message).splitlines()[0][:200]
        raise TrackingError(
            f"cannot reach the tracking server {redact(uri)} ({cause}); start it, correct "
            "MLFLOW_TRACKING_URI, or unset it to use sqlite:///mlflow.db here"
        ) from None


def _probe_database(uri: str) -> None:
    """One connection to a database store (PostgreSQL, MySQL, ...); a one-line TrackingError if it fails.

    Tried with SQLAlchemy directly, once, with a short connect timeout (``connect_timeout``): MLflow's own store
    retries a refused connection for about two minutes before it gives up.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    args = {"connect_timeout": 5} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # SQLAlchemy's and the driver's errors: a missing driver, a refused connection
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("(Background")]
        cause = next((ln for ln in lines if "refused" in ln or "could not" in ln.lower()), lines[0] if lines else "")
        raise TrackingError(
            f"cannot reach the tracking database {redact(uri)} ({type(exc).__name__}: "
            f"{redact(cause)[:200]}); start it, correct MLFLOW_TRACKING_URI, or unset it to use "
            "sqlite:///mlflow.db here"
        ) from None
    MlflowClient().search_experiments(max_results=1)


def ensure_store() -> None:
    """Check the tracking store answers, and create its tables once, even when several runs start at once.

    A server is probed with few retries (:data:`PROBE_HTTP`), its credentials checked (a
    server with MLflow's auth app), a database store with one query. MLflow creates a SQLite store's
    schema on first use, and two processes doing it together collide ("table already
    exists"); a file lock beside the database serialises that step.
    """
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        _probe_server(uri)
        return
    if not uri.startswith("sqlite:///"):
        _probe_database(uri)
        return
    import fcntl

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient().search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def preflight(experiment: str = "", run_id: str | None = None) -> None:
    """What a job that writes runs checks before it prepares anything, each failure one line.

    The store answers (:func:`ensure_store`), a server with auth accepts the credentials, and
    the user may write runs to the experiment (:func:`dsc.tracking.auth.require_experiment_write`:
    ``experiment`` by name, or that of ``run_id``).
    """
    ensure_store()
    require_experiment_write(experiment, run_id)


@contextlib.contextmanager
def run_context(
    experiment: str = "",
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run, or attach to the one ``mlflow run`` created (``MLFLOW_RUN_ID``) or to ``run_id``.

    ``system_metrics``: MLflow's monitor logs CPU, memory, disk (and GPU, with pynvml) as
    ``system/*`` metrics while the run is active (its System metrics tab).

    Any exception marks the run FAILED (with the error as the ``error`` tag) and propagates;
    metrics and artifacts logged before it stay. A stop asked for (:class:`Interrupted`, or
    Ctrl-C outside training) marks it KILLED, with the reason in the same tag.
    """
    ensure_store()
    attached = run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id and os.environ.get("MLFLOW_RUN_ID", run_id) != run_id:
        raise ConfigError(
            f"MLFLOW_RUN_ID is {os.environ['MLFLOW_RUN_ID']} but run {run_id} was asked for; "
            f"use `mlflow run . -e resume --run-id {run_id}` or unset MLFLOW_RUN_ID"
        )
    if experiment and not attached:
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(
        run_id=run_id,
        run_name=run_name if not run_id else None,
        tags=dict(tags or {}),
        log_system_metrics=system_metrics or None,
    )
    try:
        yield run
    except BaseException as exc:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:4000])
        mlflow.end_run(status="KILLED" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def active_run_id() -> str:
    """The id of the active MLflow run, for code that runs inside one (training, its callbacks)."""
    run = mlflow.active_run()
    assert run is not None, "called outside an MLflow run"
    return run.info.run_id


def log_params_once(params: Mapping[str, object]) -> None:
    """Log params, skipping keys the run already has (``mlflow run -P`` logs them as typed)."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params if run else {}
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def clash_retried(call: Callable[[], object], attempts: int = 4) -> object:
    """``call()``, tried again when a concurrent run inserted the same row first.

    MLflow's stores look a row up, then insert it (a dataset, a model alias): runs of one
    experiment starting or finishing together (a sweep) can all miss it, and every insert
    but the first breaks the unique key. The next try finds the row and updates or links it.
    """
    for attempt in range(attempts):
        try:
            return call()
        except mlflow.exceptions.MlflowException as exc:
            clash = any(s in str(exc) for s in ("UNIQUE constraint", "duplicate key", "IntegrityError"))
            if not clash or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return None  # attempts < 1: nothing was tried


class LoggedSteps:
    """Which (metric, step) pairs a run already has, so that a resumed run logs nothing twice.

    dsc logs every metric with increasing steps, so a key's latest step bounds what is there.
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.latest: dict[str, int] = {}
        if run_id:
            client = MlflowClient()
            for key in client.get_run(run_id).data.metrics:
                self.latest[key] = max(m.step for m in client.get_metric_history(run_id, key))

    def fresh(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if step > self.latest.get(k, -1)}


def log_metrics_to(run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log metrics with ``step`` to any run (active or finished) in one batch."""

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 1000):  # MLflow's per-request metric limit
        MlflowClient().log_batch(run_id, metrics=batch[i : i + 1000])


def require_run(run_id: str) -> mlflow.entities.Run:
    """The run with this id, or a TrackingError that says how to find one."""
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise TrackingError(
            f"no run with id {run_id!r} in {mlflow.get_tracking_uri()}; "
            "list runs with `mlflow runs list --experiment-id ID`"
        ) from None


def metric_history(run_id: str, key: str, client: MlflowClient | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A metric's history as ``(steps, values)``, shape (n,), ascending by step.

    Where a step was logged more than once (a resumed run), the point with the latest
    timestamp wins (the later of equal timestamps in MLflow's order). The points MLflow
    returns are read straight into arrays and sorted there: a long history costs its one
    object per point and no more.
    """
    points = (client or MlflowClient()).get_metric_history(run_id, key)
    n = len(points)
    steps = np.fromiter((m.step for m in points), np.int64, n)
    stamps = np.fromiter((m.timestamp for m in points), np.int64, n)
    values = np.fromiter((m.value for m in points), np.float64, n)
    del points
    order = np.lexsort((np.arange(n), stamps, steps))  # by step, then time, then MLflow's order
    last = np.ones(n, dtype=bool)
    last[:-1] = steps[order[1:]] != steps[order[:-1]]  # the last point of each step
    keep = order[last]
    return steps[keep].astype(int), values[keep]


def run_kind(run: Run) -> str | None:
    """The ``dsc.kind`` tag of a run (None: not written by dsc, or by a dsc too old to tag)."""
    return run.data.tags.get(KIND_TAG)


def is_finished_training_run(run: Run) -> bool:
    """A FINISHED, active run of ``dsc train`` (untagged runs count, as older dsc wrote them)."""
    return run.info.status == "FINISHED" and run.info.lifecycle_stage == "active" and run_kind(run) in (None, "train")
