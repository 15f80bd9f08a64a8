"""One writer per run: a heartbeat tag that a training process renews while it holds its run.

The tag ``dsc.heartbeat`` holds JSON ``{"host", "pid", "time", "interval", "token"}`` and is
renewed every ``interval`` seconds through ``MlflowClient.set_tag``, so it works through a
tracking server, where no pid can be checked. A holder counts as alive while its heartbeat is
fresh: renewed within :data:`STALE_AFTER` intervals of now (both clocks are taken to agree
within that window, as NTP keeps them). On the holder's own host its pid is checked as well,
so a holder that died (SIGKILL, a crash) releases its run at once. A holder that ends,
however it ends short of dying, deletes the tag.

Public API: :data:`HEARTBEAT_TAG`, :class:`Holder`, :func:`holder_of`, :func:`busy_reason`,
:func:`require_free`, :class:`Heartbeat`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dsc.errors import TrackingError

HEARTBEAT_TAG = "dsc.heartbeat"
INTERVAL_S = 5.0  # how often a holder renews its heartbeat
STALE_AFTER = 3  # intervals without a renewal after which a holder counts as gone
CLAIM_SETTLE_S = 0.5  # a claimant re-reads the tag after this long: of two at once, one sees the other


@dataclass(frozen=True)
class Holder:
    """The process that last renewed a run's heartbeat; ``time`` in seconds since the epoch."""

    host: str
    pid: int
    time: float
    interval: float
    token: str

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.time

    def gone_in(self, now: float | None = None) -> float:
        """Seconds until the heartbeat is stale (0 when it is)."""
        return max(0.0, STALE_AFTER * self.interval - self.age(now))

    def dead_here(self) -> bool:
        """Whether the holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # it exists, owned by another user
            return False
        return False

    def alive(self, now: float | None = None) -> bool:
        return self.gone_in(now) > 0 and not self.dead_here()

    def to_tag(self) -> str:
        return json.dumps(
            {"host": self.host, "pid": self.pid, "time": self.time, "interval": self.interval, "token": self.token}
        )


def holder_of(run: Run) -> Holder | None:
    """The run's last heartbeat (None: no tag, or one that is not a dsc heartbeat)."""
    text = run.data.tags.get(HEARTBEAT_TAG)
    if not text:
        return None
    try:
        d = json.loads(text)
        return Holder(str(d["host"]), int(d["pid"]), float(d["time"]), float(d["interval"]), str(d["token"]))
    except (ValueError, KeyError, TypeError):
        return None


def busy_reason(run: Run, now: float | None = None) -> str | None:
    """Why ``run`` cannot take another writer now (one line), or None when it is free.

    For a sweep's retries as for ``dsc train --resume``: a run whose holder is alive is busy.
    """
    holder = holder_of(run)
    if holder is None or not holder.alive(now):
        return None
    return (
        f"run {run.info.run_id} is being trained by pid {holder.pid} on host {holder.host} "
        f"(heartbeat {holder.age(now):.0f} s ago): stop it with `kill {holder.pid}` on {holder.host} "
        f"(it stops after its current step and can then be resumed), or if that process is gone, "
        f"wait {holder.gone_in(now):.0f} s or pass --takeover"
    )


def require_free(run: Run, takeover: bool = False) -> None:
    """Raise a :class:`TrackingError` when ``run`` is held by a live writer (unless ``takeover``)."""
    reason = None if takeover else busy_reason(run)
    if reason:
        raise TrackingError(reason)


class Heartbeat:
    """Hold a run while training: a daemon thread renews its heartbeat every ``interval`` s.

    ``claim=True`` (continuing an existing run) writes the heartbeat, waits
    :data:`CLAIM_SETTLE_S` and reads it back: of two processes claiming one run together, the
    one whose heartbeat was overwritten refuses. On exit the thread stops and the tag is
    deleted. A renewal that fails (a server restarting) is tried again at the next beat; MLflow
    itself retries each request for minutes.
    """

    def __init__(self, run_id: str, interval: float = INTERVAL_S, claim: bool = False) -> None:
        self.run_id, self.interval, self.claim = run_id, interval, claim
        self.client = MlflowClient()
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dsc-heartbeat", daemon=True)

    def _write(self) -> None:
        holder = Holder(socket.gethostname(), os.getpid(), time.time(), self.interval, self.token)
        self.client.set_tag(self.run_id, HEARTBEAT_TAG, holder.to_tag())

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(MlflowException, OSError):
                self._write()

    def __enter__(self) -> Heartbeat:
        self._write()
        if self.claim:
            time.sleep(CLAIM_SETTLE_S)
            run = self.client.get_run(self.run_id)
            holder = holder_of(run)
            if holder is not None and holder.token != self.token:
                raise TrackingError(
                    busy_reason(run)
                    or f"run {self.run_id} was claimed by pid {holder.pid} on host {holder.host} at the same moment"
                )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with contextlib.suppress(MlflowException, OSError):
            self.client.delete_tag(self.run_id, HEARTBEAT_TAG)
