"""The only package that imports MLflow: runs, artifacts, datasets and models in the store.

- :mod:`dsc.tracking.store`: create or attach to runs, params, metrics, histories, lookups;
- :mod:`dsc.tracking.artifacts`: checkpoints and snapshot directories, and their completion tags;
- :mod:`dsc.tracking.snapshot`: a run's snapshots downloaded, verified and read back (``snapshot.load``);
- :mod:`dsc.tracking.integrity`: checksums recorded as checkpoints and snapshots are uploaded, verified on reading;
- :mod:`dsc.tracking.datasets`: the splits a run trained on, as MLflow dataset inputs;
- :mod:`dsc.tracking.models`: logged and registered models and their aliases;
- :mod:`dsc.tracking.heartbeat`: one writer per run (a heartbeat tag renewed while training);
- :mod:`dsc.tracking.auth`: a server with MLflow's auth app: the user, their permissions, checked first;
- :mod:`dsc.tracking.server`: a loopback ``mlflow server`` (and PostgreSQL) for tests and benches;
- :mod:`dsc.tracking.sqlite`: a SQLite store's writers wait for one another (a long busy timeout),
  set up when this package is imported.

The names below are the package's interface; jobs import them as ``tracking.NAME``.
"""

from dsc.tracking import auth, snapshot, sqlite
from dsc.tracking.artifacts import (
    CHECKPOINT_DIR,
    CHECKPOINT_FMT,
    COMPLETE_TAG,
    FULL_TAG,
    IMAGE_DIR,
    complete_through,
    deflate,
    full_epochs,
    has_artifacts,
    image_steps,
    list_checkpoints,
    load_checkpoint,
    mark_complete,
    mark_full,
    mark_incomplete,
    replace_directory,
)
from dsc.tracking.auth import editable, redact, require_experiment_write, require_model_write
from dsc.tracking.datasets import log_dataset
from dsc.tracking.heartbeat import (
    HEARTBEAT_TAG,
    Heartbeat,
    busy_reason,
    holder_of,
    require_free,
)
from dsc.tracking.integrity import CHECKSUM_TAG, upload_checked
from dsc.tracking.models import (
    ALIAS_BEST,
    ALIAS_FINAL,
    check_model_name,
    load_logged_model,
    log_and_register,
    pip_requirements,
    set_alias,
    tag_version,
)
from dsc.tracking.store import (
    KIND_TAG,
    LoggedSteps,
    clash_retried,
    ensure_store,
    is_finished_training_run,
    log_metrics_to,
    log_params_once,
    metric_history,
    preflight,
    require_run,
    run_context,
    run_kind,
)

__all__ = [
    "ALIAS_BEST",
    "ALIAS_FINAL",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FMT",
    "CHECKSUM_TAG",
    "COMPLETE_TAG",
    "FULL_TAG",
    "HEARTBEAT_TAG",
    "IMAGE_DIR",
    "KIND_TAG",
    "Heartbeat",
    "LoggedSteps",
    "auth",
    "busy_reason",
    "check_model_name",
    "clash_retried",
    "complete_through",
    "deflate",
    "editable",
    "ensure_store",
    "full_epochs",
    "has_artifacts",
    "holder_of",
    "image_steps",
    "is_finished_training_run",
    "list_checkpoints",
    "load_checkpoint",
    "load_logged_model",
    "log_and_register",
    "log_dataset",
    "log_metrics_to",
    "log_params_once",
    "mark_complete",
    "mark_full",
    "mark_incomplete",
    "metric_history",
    "pip_requirements",
    "preflight",
    "redact",
    "replace_directory",
    "require_experiment_write",
    "require_free",
    "require_model_write",
    "require_run",
    "run_context",
    "run_kind",
    "set_alias",
    "snapshot",
    "sqlite",
    "tag_version",
    "upload_checked",
]

sqlite.configure()
