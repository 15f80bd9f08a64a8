"""The heartbeat that keeps one writer per run, and the signal handling that stops training gracefully."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from dsc.errors import TrackingError
from dsc.jobs.train import GracefulStop
from dsc.tracking.heartbeat import (
    HEARTBEAT_TAG,
    Heartbeat,
    Holder,
    busy_reason,
    holder_of,
    require_free,
)

HERE = socket.gethostname()


def _run_held_by(holder: Holder | None):
    client = MlflowClient()
    tags = {HEARTBEAT_TAG: holder.to_tag()} if holder else {}
    return client.get_run(client.create_run("0", tags=tags).info.run_id)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.parametrize(
    "host, pid, age, busy",
    [
        (None, 0, 0, False),
        (HERE, os.getpid(), 0, True),  # alive, here
        ("elsewhere", 1, 5, True),  # fresh, on a host whose pids cannot be checked from here
        ("elsewhere", 1, 16, False),  # three intervals without a renewal
    ],
    ids=["no-heartbeat", "alive-here", "fresh-elsewhere", "stale-elsewhere"],
)
def test_a_run_is_busy_while_its_holder_is_alive(store, host, pid, age, busy):
    run = _run_held_by(Holder(host, pid, time.time() - age, 5.0, "t") if host else None)
    assert (busy_reason(run) is not None) == busy
    require_free(run, takeover=True)  # the override always passes


def test_a_dead_holder_on_this_host_releases_its_run_at_once(store):
    run = _run_held_by(Holder(HERE, _dead_pid(), time.time(), 5.0, "t"))
    assert holder_of(run).gone_in() > 0 and busy_reason(run) is None


def test_the_refusal_names_the_holder_and_what_to_do(store):
    run = _run_held_by(Holder("gpu7", 4242, time.time() - 2, 5.0, "t"))
    with pytest.raises(
        TrackingError,
        match=r"trained by pid 4242 on host gpu7 \(heartbeat \d+ s ago\): "
        r"stop it with `kill 4242` on gpu7 .* wait \d+ s or pass --takeover",
    ):
        require_free(run)


def test_heartbeat_is_renewed_while_held_and_deleted_after(store):
    client = MlflowClient()
    rid = client.create_run("0").info.run_id
    with Heartbeat(rid, interval=0.05):
        first = holder_of(client.get_run(rid))
        assert (first.host, first.pid) == (HERE, os.getpid())
        time.sleep(0.3)
        assert holder_of(client.get_run(rid)).time > first.time
    assert HEARTBEAT_TAG not in client.get_run(rid).data.tags


def test_of_two_claims_at_once_the_overwritten_one_refuses(store):
    client = MlflowClient()
    rid = client.create_run("0").info.run_id
    other = Holder("elsewhere", 1, time.time(), 5.0, "other")
    # the other claimant writes while this one waits to read its own heartbeat back
    threading.Timer(0.1, client.set_tag, (rid, HEARTBEAT_TAG, other.to_tag())).start()
    with pytest.raises(TrackingError, match="on host elsewhere"), Heartbeat(rid, claim=True):
        pass
    assert holder_of(client.get_run(rid)).token == "other"  # the other's heartbeat is left alone


def test_a_signal_asks_for_a_stop_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler at the next bytecode boundary
        assert stop() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
