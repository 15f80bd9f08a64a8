"""Logged and registered models (MLflow's pytorch flavour, pt2), and their aliases."""
from __future__ import annotations

import copy
import functools

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from dsc.errors import ConfigError
from dsc.tracking.auth import require_model_write
from dsc.tracking.store import clash_retried

ALIAS_FINAL = "final"


ALIAS_BEST = "best"


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, given explicitly (inference takes >10 s a call)."""
    import torchvision

    return [f"torch=={torch.__version__.split('+')[0]}",
            f"torchvision=={torchvision.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]


def check_model_name(name: str) -> None:
    """Refuse, before anything trains, a registered-model name that MLflow's own rules refuse,
    or a model the user may not register into (a server with auth: :func:`require_model_write`)."""
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(f"registered-model name {name!r}: {exc.message.splitlines()[0]} "
                          "(MLflow's rule); choose another with --register-name") from None
    require_model_write(name)


def log_and_register(model: torch.nn.Module, name: str, registered_name: str,
                     example: np.ndarray, experiment_id: str | None = None) -> str:
    """Log ``model`` (CPU, contiguous) under ``name`` and register it; return the version.

    The logged model belongs to the active run, else to experiment ``experiment_id`` (else
    MLflow's current experiment).
    """
    from mlflow.models import infer_signature

    if experiment_id and not mlflow.active_run():
        mlflow.set_experiment(experiment_id=experiment_id)
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    # pt2 (torch.export) is MLflow's default: loading it runs no pickle. The example has a
    # batch of 2 so that the exported batch dimension stays dynamic (size 1 is specialised).
    info = mlflow.pytorch.log_model(
        model, name=name, registered_model_name=registered_name,
        pip_requirements=pip_requirements(), input_example=example,
        signature=infer_signature(example, out), serialization_format="pt2",
    )
    return str(info.registered_model_version)


def set_alias(registered_name: str, alias: str, version: str) -> None:
    clash_retried(functools.partial(MlflowClient().set_registered_model_alias, registered_name, alias, version))


def tag_version(registered_name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
