"""Logged and registered models (MLflow's pytorch flavour, pt2), and their aliases."""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from types import ModuleType

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from dsc.errors import ConfigError, TrackingError
from dsc.tracking.auth import require_model_write
from dsc.tracking.store import active_run_id, clash_retried

ALIAS_FINAL = "final"


ALIAS_BEST = "best"


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model, given explicitly (MLflow's inference of them is slow).

    torchvision is named by its installed distribution's version: the model does not need it
    loaded, and importing it only for ``__version__`` costs a registering process a second.
    """
    from importlib.metadata import version

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={version('torchvision').split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]


def pytorch_flavour() -> ModuleType:
    """``mlflow.pytorch``, imported without its Lightning autologging where Lightning is not loaded.

    Importing ``mlflow.pytorch`` imports its Lightning autologging whenever Lightning is
    installed, and with it Lightning, torchmetrics and torchvision; logging and loading a model
    use none of them, and they cost a registering process seconds of start-up. The module is
    kept out of that one import (``mlflow.pytorch`` catches the ImportError, as where Lightning
    is absent) and is importable again afterwards, so ``mlflow.pytorch.autolog`` still works.
    A process that has loaded Lightning already gets ``mlflow.pytorch`` as it comes.
    """
    autolog = "mlflow.pytorch._lightning_autolog"
    if not {"mlflow.pytorch", "pytorch_lightning", "lightning"} & sys.modules.keys():
        sys.modules[autolog] = None  # type: ignore[assignment]  # Python's "do not import this"
        try:
            import mlflow.pytorch
        finally:
            if sys.modules.get(autolog, 0) is None:
                del sys.modules[autolog]
    import mlflow.pytorch

    return mlflow.pytorch


def check_model_name(name: str) -> None:
    """Refuse, before anything trains, a registered-model name that MLflow's own rules refuse,
    or a model the user may not register into (a server with auth: :func:`require_model_write`)."""
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except mlflow.exceptions.MlflowException as exc:
        raise ConfigError(
            f"registered-model name {name!r}: {exc.message.splitlines()[0]} "
            "(MLflow's rule); choose another with --register-name"
        ) from None
    require_model_write(name)


def log_and_register(
    model: torch.nn.Module,
    name: str,
    registered_name: str | None,
    example: np.ndarray,
    run_id: str | None = None,
    experiment_id: str | None = None,
) -> str:
    """Log ``model`` (CPU, contiguous) under ``name`` of a run and register it; return the version.

    The logged model belongs to run ``run_id``, else the active run, else experiment
    ``experiment_id`` (else MLflow's current experiment). Without ``registered_name`` the model
    is logged only (and "" returned). It is saved as pt2 (``torch.export``: loading it runs no
    pickle); one that cannot be exported (data-dependent control flow, say) is pickled instead,
    its class then needed on the loading side, and the run's tag ``dsc.model_format`` says so.
    """
    from mlflow.models import infer_signature

    if experiment_id and not run_id and not mlflow.active_run():
        mlflow.set_experiment(experiment_id=experiment_id)
    model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    with contextlib.suppress(NotImplementedError):  # an exported program's module is always in eval mode
        model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(example)).numpy()
    # The example has a batch of 2 so that the exported batch dimension stays dynamic (size 1
    # is specialised).
    common = dict(
        name=name,
        registered_model_name=registered_name or None,
        pip_requirements=pip_requirements(),
        input_example=example,
        signature=infer_signature(example, out),
        **({"run_id": run_id} if run_id else {}),
    )
    flavour = pytorch_flavour()
    try:
        info = flavour.log_model(model, serialization_format="pt2", **common)
    except Exception:  # torch.export refuses many models that run eagerly; pickling takes any
        info = flavour.log_model(model, serialization_format="pickle", **common)
        MlflowClient().set_tag(run_id or active_run_id(), "dsc.model_format", "pickle")
    return str(info.registered_model_version) if registered_name else ""


def set_alias(registered_name: str, alias: str, version: str) -> None:
    """Point ``alias`` (``"best"``, say) of registered model ``registered_name`` at ``version``.

    Runs finishing together may set aliases of one model at once: the call is retried when a
    concurrent insert wins (:func:`dsc.tracking.store.clash_retried`).
    """
    clash_retried(functools.partial(MlflowClient().set_registered_model_alias, registered_name, alias, version))


def tag_version(registered_name: str, version: str, tags: dict[str, str]) -> None:
    """Set each of ``tags`` (key to value) on ``version`` of registered model ``registered_name``."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)


def load_logged_model(run_id: str, name: str = "model") -> torch.nn.Module:
    """The model a run logged under ``name`` (``mlflow.pytorch``), on the CPU in eval mode.

    A pt2 model comes back as the exported program's module: the original parameter names,
    not the original class. A TrackingError (one line) when the run has none.
    """
    try:
        model = pytorch_flavour().load_model(f"runs:/{run_id}/{name}", map_location="cpu")
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise TrackingError(
            f"run {run_id} has no loadable model {name!r} ({reason}); record with "
            "log_model=True to analyse what needs the network"
        ) from None
    with contextlib.suppress(Exception):  # an exported program's module refuses train()/eval()
        model.eval()
    return model
