"""The ray engine of ``dsc sweep``: every member a Ray task that runs one ``dsc train`` process.

The driver (``dsc sweep --engine ray``) joins a cluster (:func:`connected`: a local Ray
instance, ``auto`` or ``ray://HOST:10001``), refuses a tracking store that the cluster's nodes
cannot reach (:func:`store_for_cluster`), creates each member's run (SCHEDULED until its
training starts) and submits one task per member, reserving ``--cpus-per-run`` CPUs and
``--gpus-per-run`` GPUs. On its node the task (:func:`run_member`) runs ``python -m dsc train``
attached to that run, exactly as the local engine does, and reports why it failed, if it did.

Faults. A member whose node dies, or whose training process is killed (SIGKILL), is retried
by Ray (``--max-retries``). The retry waits until the run's heartbeat says no process still
writes it (:func:`dsc.tracking.busy_reason`), then continues the *same* run from its last full
checkpoint (``dsc train --resume``), so the member keeps one run whose weights and metric
history equal an uninterrupted training's. A member that fails by itself (a diverging loss,
bad data) exits with its one-line error and is not retried. The training process dies with
the Ray worker that started it (Linux's parent-death signal), so a lost worker leaves no
writer behind.

Ray is an optional dependency (``uv sync --group ray``), imported only here and only when
this engine is asked for.

Public API: :func:`connected`, :func:`store_for_cluster`, :func:`train_all`, :func:`run_member`,
:class:`Cluster`, :class:`MemberLost`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from dsc.errors import ConfigError, TrackingError
from dsc.jobs.sweep.members import THREAD_VARS, Member, Plan, member_outcome, member_run
from dsc.settings import SweepConfig

RAY_HINT = (
    "--engine ray needs Ray, an optional dependency: install it with `uv sync --group ray` "
    "(or `pip install 'ray[default]'`), or use --engine local"
)
ATTEMPTS_TAG = "dsc.attempts"  # how many times a member's training was started
NODE_TAG = "dsc.ray_node"  # the Ray node id of the member's latest attempt
FREE_WAIT_S = 600.0  # how long a retry waits for a previous attempt's heartbeat to go stale
_STOP_WAIT_S = 60.0  # a cancelled member's graceful stop: its current step and checkpoint
_FILE_SCHEMES = ("", "file", "sqlite")  # stores that are files on the driver's machine


class MemberLost(Exception):
    """A member's training process was killed from outside (SIGKILL): Ray runs the task again."""


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a sweep runs on, as the driver found it."""

    tracking_uri: str  # what every member logs to (an absolute path for a file store)
    cwd: str  # the driver's working directory, where relative data paths are read on each node
    nodes: int  # alive nodes when the sweep started


def _ray():
    # Under `uv run`, Ray would otherwise ship the working directory to every worker and start
    # it with `uv run` there, building a new environment per node (a download of torch, or a
    # hang offline). Nodes run the environment they were started in; opt in by setting it to 1.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    return ray


def _is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def store_for_cluster(uri: str, node_ips: Sequence[str], shared: bool = False, remote: bool = False) -> str:
    """The tracking URI members log to; a one-line :class:`ConfigError` where they cannot reach it.

    ``node_ips`` holds the address of each alive node (one entry per node); ``remote``: the
    driver joined through Ray Client (``ray://``), so no node shares its disk or loopback.
    A SQLite database or file store is refused on a cluster of more than one node (or a
    remote one) unless ``shared`` declares its path mounted on every node; a server on a
    loopback address is refused where the nodes are more than one machine. A file store's
    path is made absolute: a member's working directory is the Ray worker's.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme if len(parsed.scheme) > 1 else ""  # "C:" is a drive, not a scheme
    if scheme in _FILE_SCHEMES:
        path = uri[len("sqlite:///") :] if scheme == "sqlite" else (parsed.path if scheme else uri)
        absolute = str(Path(path).expanduser().resolve())
        uri = f"sqlite:///{absolute}" if scheme == "sqlite" else (f"file://{absolute}" if scheme else absolute)
        if (len(node_ips) > 1 or remote) and not shared:
            where = "a remote Ray cluster" if remote else f"the {len(node_ips)} nodes of the Ray cluster"
            raise ConfigError(
                f"the tracking store {uri} is a file on this machine, which {where} cannot all reach: "
                "start `mlflow server --backend-store-uri URI --artifacts-destination DIR --host 0.0.0.0` "
                "and set MLFLOW_TRACKING_URI=http://THIS_HOST:5000, or pass --shared-store if that path "
                "is on a filesystem every node mounts"
            )
        return uri
    machines = len(set(node_ips))
    if _is_loopback(parsed.hostname) and (machines > 1 or remote):
        raise ConfigError(
            f"the tracking store {uri} is on a loopback address, which the other machines of the Ray "
            "cluster cannot reach: serve it on an address they reach (`mlflow server --host 0.0.0.0`) "
            "and set MLFLOW_TRACKING_URI to that"
        )
    return uri


@contextlib.contextmanager
def connected(config: SweepConfig) -> Iterator[Cluster]:
    """Join (or start) the Ray cluster of ``config.ray_address`` and check the tracking store.

    An empty address starts a local Ray instance for this sweep (stopped after it); ``auto``
    joins the cluster ``ray start`` made on this machine; ``ray://HOST:10001`` joins a remote
    one through Ray Client. The driver disconnects on exit.
    """
    import mlflow

    ray = _ray()
    address = config.ray_address.strip() or "local"
    kwargs = {"include_dashboard": False} if address == "local" else {}
    joined = not ray.is_initialized()
    if joined:
        try:
            ray.init(address=address, log_to_driver=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingError(
                f"--ray-address {config.ray_address}: cannot join the Ray cluster ({first}); "
                "start one with `ray start --head`, or correct the address"
            ) from None
    try:
        ips = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
        uri = store_for_cluster(
            mlflow.get_tracking_uri(), ips, config.shared_store, remote=address.startswith("ray://")
        )
        yield Cluster(uri, os.getcwd(), len(ips))
    finally:
        if joined:
            ray.shutdown()


def _die_with_parent() -> None:
    """In the training process: be killed when the Ray worker that started it dies (Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_free(run_id: str, wait_s: float = FREE_WAIT_S):
    """The run, once no previous attempt's process may still write it (its heartbeat is stale)."""
    from dsc import tracking

    deadline = time.monotonic() + wait_s
    while (reason := tracking.busy_reason(run := tracking.require_run(run_id))) is not None:
        if time.monotonic() > deadline:
            raise TrackingError(f"not retried: {reason}")
        time.sleep(1.0)
    return run


def run_member(
    argv: Sequence[str], run_id: str, tracking_uri: str, cwd: str, threads: int, use_gpus: bool
) -> dict[str, object]:
    """One attempt at a member, in a Ray task: ``dsc train`` attached to its run, or ``--resume`` it.

    Resumes where the run already has a checkpoint (a previous attempt was lost), once no
    process holds it. Returns ``{"why": why it failed or "", "attempt": n, "resumed": bool}``;
    raises :class:`MemberLost` (which Ray retries) when the training process was SIGKILLed.
    """
    import mlflow

    from dsc import tracking

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    attempt = int(_wait_free(run_id).data.tags.get(ATTEMPTS_TAG, "0")) + 1
    client.set_tag(run_id, ATTEMPTS_TAG, str(attempt))
    client.set_tag(run_id, NODE_TAG, _ray().get_runtime_context().get_node_id())
    resumed = bool(tracking.list_checkpoints(run_id))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    }
    env.update({var: str(threads) for var in THREAD_VARS}, MLFLOW_TRACKING_URI=tracking_uri)
    if not use_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # none reserved: leave the node's GPUs to members that are
    if resumed:
        cmd = [sys.executable, "-m", "dsc", "train", "--resume", run_id, "--no-progress"]
    else:
        cmd = [sys.executable, "-m", "dsc", "train", *argv]
        env["MLFLOW_RUN_ID"] = run_id
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd if os.path.isdir(cwd) else None,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            returncode = proc.wait()
        except BaseException:  # cancelled (Ray raises KeyboardInterrupt here): stop as Ctrl-C would
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_STOP_WAIT_S)
            proc.kill()
            raise
        log.seek(0)
        text = log.read()
    if returncode == -signal.SIGKILL and tracking.require_run(run_id).info.status == "RUNNING":
        raise MemberLost(f"the training process of run {run_id} was killed (attempt {attempt})")
    return {"why": member_outcome(run_id, returncode, text), "attempt": attempt, "resumed": resumed}


def train_all(
    the_plan: Plan, sweep_id: str, experiment_id: str, cluster: Cluster, bar, echo: Callable[[str], None]
) -> list[tuple[Member, str, str]]:
    """Run every member as a Ray task; ``(member, run id, why it failed or "")`` in member order."""
    import mlflow

    ray = _ray()
    cfg = the_plan.config
    task = ray.remote(
        num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run, max_retries=cfg.max_retries, retry_exceptions=[MemberLost]
    )(run_member)
    client = mlflow.MlflowClient()
    pending: dict = {}
    done: dict[int, tuple[Member, str, str]] = {}
    try:
        for member in the_plan.members:
            run_id = member_run(the_plan, member, sweep_id, experiment_id)
            client.update_run(run_id, status="SCHEDULED")  # RUNNING once its training starts
            ref = task.remote(
                the_plan.argv(member),
                run_id,
                cluster.tracking_uri,
                cluster.cwd,
                max(1, int(cfg.cpus_per_run)),
                cfg.gpus_per_run > 0,
            )
            pending[ref] = (member, run_id)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                member, run_id = pending.pop(ref)
                why, note = _result(ray, ref, run_id, cfg.max_retries)
                done[member.index] = (member, run_id, why)
                echo(f"run {run_id} ({member.label}) " + (f"failed: {why}" if why else f"finished{note}"))
                bar.update()
    except BaseException:
        _cancel(ray, pending)
        raise
    return [done[i] for i in sorted(done)]


def _result(ray, ref, run_id: str, max_retries: int) -> tuple[str, str]:
    """A finished task's (why it failed or "", a note on its attempts); a lost run is marked FAILED."""
    import mlflow

    try:
        out = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # raised in the task: MemberLost past its retries, or a bug
        cause = exc.cause if exc.cause is not None else exc
        why = (
            f"{cause} and was not retried further (--max-retries {max_retries})"
            if isinstance(cause, MemberLost)
            else str(cause).strip().splitlines()[-1]
        )
    except ray.exceptions.RuntimeEnvSetupError as exc:
        why = f"its Ray worker could not start ({_first_line(exc)})"
    except ray.exceptions.RayError as exc:  # the worker or node died once more than the retries allow
        why = f"lost with its Ray worker or node {max_retries + 1} times ({type(exc).__name__}: {_first_line(exc)})"
    else:
        attempts = int(out["attempt"])
        return str(out["why"]), f" (attempt {attempts}, resumed from its last checkpoint)" if out["resumed"] else ""
    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run_id, "FAILED")
    return why, ""


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _cancel(ray, pending: dict) -> None:
    """Interrupted: stop the members still training (gracefully), mark their runs KILLED."""
    import mlflow

    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    with contextlib.suppress(Exception):
        ray.wait(list(pending), num_returns=len(pending), timeout=_STOP_WAIT_S + 10)
    client = mlflow.MlflowClient()
    for _, run_id in pending.values():
        with contextlib.suppress(Exception):
            if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run_id, "KILLED")


__all__ = [
    "ATTEMPTS_TAG",
    "NODE_TAG",
    "Cluster",
    "MemberLost",
    "connected",
    "run_member",
    "store_for_cluster",
    "train_all",
]
