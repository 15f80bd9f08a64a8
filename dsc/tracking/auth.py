"""Who a tracking server with MLflow's auth app says the user is, and where they may write.

A server started with ``mlflow server --app-name basic-auth`` asks every request for HTTP
basic credentials, which MLflow's client takes from ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (``MLFLOW_TRACKING_TOKEN`` is sent as a bearer token instead, for
a server or proxy that accepts one; ``MLFLOW_TRACKING_INSECURE_TLS`` and
``MLFLOW_TRACKING_SERVER_CERT_PATH`` are honoured, as MLflow's own requests honour them).
Each user holds a permission per experiment and per registered model (``READ``, ``USE``,
``EDIT``, ``MANAGE``; the server's ``default_permission`` where none was granted); writing runs
or model versions needs ``EDIT``. The checks here ask the server (its
``/users/current`` and ``/users/permissions/get`` endpoints, which any user may call about
themselves) before a job writes anything, so that a refusal is one line at start-up rather
than a ``403`` halfway through. Against a server without auth, or a database or file store,
every check passes at once.

Public API: :func:`current_user`, :func:`failed_line`, :func:`permission`,
:func:`require_experiment_write`, :func:`require_model_write`, :func:`editable`, :func:`redact`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from dsc.errors import TrackingError

CURRENT_USER = "/api/2.0/mlflow/users/current"
USER_PERMISSION = "/api/3.0/mlflow/users/permissions/get"
WRITE = ("EDIT", "MANAGE")  # the permissions under which runs and model versions may be written
CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
GRANT_HINT = (
    "ask its owner or an admin to grant you EDIT "
    "(POST /api/3.0/mlflow/users/permissions/grant, or the UI's permissions page)"
)
# A start-up check: one retry, a short timeout (MLflow's defaults wait minutes on a dead server).
_QUICK = {"max_retries": 1, "backoff_factor": 0, "timeout": 5}


@dataclasses.dataclass(frozen=True)
class User:
    """A user of a server with auth: ``name`` and whether they are an admin (who may do anything)."""

    name: str
    admin: bool


def redact(uri: str) -> str:
    """``uri`` with the password of its ``user:password@`` part (if any) replaced by ``***``.

    >>> redact("postgresql+psycopg2://u:secret@db:5432/mlflow")
    'postgresql+psycopg2://u:***@db:5432/mlflow'
    """
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", uri)


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _get(uri: str, endpoint: str, **params: str):
    return http_request(get_default_host_creds(uri), endpoint, "GET", params=params or None, **_QUICK)


def failed_line(uri: str) -> str:
    """The one line of a server that refused the credentials (or their absence): which variables to set."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        given = f"the server refused the password of user {user!r}"
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        given = "the server refused the token"
    elif user:
        given = f"user {user!r} without a password"
    else:
        given = "no credentials were given"
    return (
        f"authentication failed at the tracking server {redact(uri)} ({given}); "
        f"set {CREDENTIALS} to an account of that server"
    )


def current_user(uri: str | None = None) -> User | None:
    """The user the server authenticates the request as; None for a server without auth.

    Raises
    ------
    TrackingError
        The server refused the credentials (or none were given): the one line says which
        variables to set.
    """
    uri = uri or mlflow.get_tracking_uri()
    if not _is_http(uri):
        return None
    resp = _get(uri, CURRENT_USER)
    if resp.status_code == 401:
        raise TrackingError(failed_line(uri))
    if resp.status_code == 404:  # no auth app: the route does not exist
        return None
    if resp.status_code != 200:
        raise TrackingError(
            f"the tracking server {redact(uri)} answered {resp.status_code} to {CURRENT_USER}: "
            f"{resp.text.strip()[:200]}"
        )
    user = resp.json()["user"]
    return User(user["username"], bool(user.get("is_admin")))


def permission(user: User, resource_type: str, resource_id: str, uri: str | None = None) -> str:
    """The permission (``READ``, ``USE``, ``EDIT``, ``MANAGE``, ...) ``user`` holds on one resource.

    ``resource_type`` is ``"experiment"`` (``resource_id``: its id) or ``"registered_model"``
    (its name). A resource without a grant has the server's ``default_permission``.
    """
    uri = uri or mlflow.get_tracking_uri()
    resp = _get(uri, USER_PERMISSION, username=user.name, resource_type=resource_type, resource_id=resource_id)
    if resp.status_code != 200:
        raise TrackingError(
            f"the tracking server {redact(uri)} did not say what user {user.name!r} may do with "
            f"{resource_type} {resource_id!r} ({resp.status_code}: {resp.text.strip()[:200]})"
        )
    return resp.json()["permission"]


def _checked_user() -> User | None:
    """The user to check (None: no server with auth, or an admin, for whom every check passes)."""
    user = current_user()
    return None if user is None or user.admin else user


def _target_experiment(experiment: str, run_id: str | None) -> mlflow.entities.Experiment | None:
    """The experiment a job will write to; None when it does not exist yet (its creator manages it)."""
    client = MlflowClient()
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        try:
            return client.get_experiment(client.get_run(run_id).info.experiment_id)
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # the job's own lookup says there is no such run, and what to do
            raise
    if experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return client.get_experiment_by_name(experiment or os.environ["MLFLOW_EXPERIMENT_NAME"])
    return client.get_experiment(os.environ.get("MLFLOW_EXPERIMENT_ID") or "0")


def require_experiment_write(experiment: str = "", run_id: str | None = None) -> None:
    """Refuse in one line a job that would write runs where the user may not (``EDIT`` needed).

    The experiment is the run's (``run_id``, or ``MLFLOW_RUN_ID``), else ``experiment`` by
    name, else ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``, else MLflow's
    ``Default``. One that does not exist yet passes: the server lets its creator manage it.
    """
    user = _checked_user()
    if user is None:
        return
    target = _target_experiment(experiment, run_id)
    if target is None:
        return
    held = permission(user, "experiment", target.experiment_id)
    if held not in WRITE:
        raise TrackingError(
            f"user {user.name!r} may not write runs to experiment {target.name!r} "
            f"(id {target.experiment_id}) on {redact(mlflow.get_tracking_uri())}: it holds {held} "
            f"and needs EDIT; {GRANT_HINT}, or choose another experiment with --experiment NAME"
        )


def require_model_write(name: str) -> None:
    """Refuse in one line registering into model ``name`` where the user may not (``EDIT`` needed).

    A model that does not exist yet passes: the server lets its creator manage it.
    """
    user = _checked_user()
    if user is None:
        return
    try:
        MlflowClient().get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise
    held = permission(user, "registered_model", name)
    if held not in WRITE:
        raise TrackingError(
            f"user {user.name!r} may not register versions of model {name!r} on "
            f"{redact(mlflow.get_tracking_uri())}: it holds {held} and needs EDIT; {GRANT_HINT}, "
            "or register under another name with --register-name NAME"
        )


def editable(run_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(may_edit, may_not)``: the runs whose experiments the user may write to, and the others.

    For a job that writes results back to runs it read (``dsc compare``'s ``lld/*``): every
    run is editable without auth or for an admin. The order of ``run_ids`` is kept.
    """
    run_ids = list(run_ids)
    user = _checked_user()
    if user is None:
        return run_ids, []
    client, held = MlflowClient(), {}
    yes: list[str] = []
    no: list[str] = []
    for run_id in run_ids:
        experiment_id = client.get_run(run_id).info.experiment_id
        if experiment_id not in held:
            held[experiment_id] = permission(user, "experiment", experiment_id)
        (yes if held[experiment_id] in WRITE else no).append(run_id)
    return yes, no


__all__ = [
    "User",
    "current_user",
    "editable",
    "failed_line",
    "permission",
    "redact",
    "require_experiment_write",
    "require_model_write",
]
