"""The recorder as a Lightning callback: ``Trainer(callbacks=[RecorderCallback(probe=...)])``.

It records epoch 0 when training starts and each epoch at the end of its validation, on rank 0
only, into the run of the trainer's ``MLFlowLogger`` where it has one (the metrics Lightning
logs and dsc's then share a run), else into a run of its own. Everything else is
:class:`dsc.jobs.recorder.Recorder`'s. Lightning is optional: ``uv sync --group lightning``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package of older installs
    try:
        pl = importlib.import_module("pytorch_lightning")
    except ImportError:
        raise ImportError(
            "dsc.integrations.lightning needs Lightning: `uv sync --group lightning` (or `pip install lightning`)"
        ) from None

import mlflow

from dsc.jobs.recorder import Recorder

__all__ = ["RecorderCallback"]


def _mlflow_logger(trainer: pl.Trainer) -> Any | None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "MLFlowLogger":
            return logger
    return None


class RecorderCallback(pl.Callback):
    """Record a Lightning training with :class:`dsc.Recorder`; the same arguments, less the model.

    ``callback_metrics``: also log the trainer's scalar callback metrics at each recorded epoch,
    as ``lightning/<name>`` (step = epoch; the logger keeps its own by global step).
    """

    def __init__(
        self,
        probe: Any,
        class_names: list[str] | None = None,
        layers: Any = None,
        experiment: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        snapshot_every: int = 1,
        checkpoint_every: int = 1,
        callback_metrics: bool = True,
        **recorder_options: Any,
    ) -> None:
        super().__init__()
        self.options = dict(
            probe=probe,
            class_names=class_names,
            layers=layers,
            experiment=experiment,
            run_name=run_name,
            params=params,
            snapshot_every=snapshot_every,
            checkpoint_every=checkpoint_every,
            **recorder_options,
        )
        self.callback_metrics = callback_metrics
        self.recorder: Recorder | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.recorder is not None:
            return
        logger, run_id = _mlflow_logger(trainer), None
        if logger is not None:
            uri = getattr(logger, "_tracking_uri", None)
            if uri:
                mlflow.set_tracking_uri(uri)
            run_id = logger.run_id
        self.recorder = Recorder(pl_module, run_id=run_id, epochs=trainer.max_epochs, **self.options)
        self.recorder.__enter__()
        self.recorder.epoch(0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rec = self.recorder
        epoch = trainer.current_epoch + 1
        if rec is None or trainer.sanity_checking or not trainer.is_global_zero or epoch <= rec.last_epoch:
            return  # validation more than once an epoch (val_check_interval) records the first
        rec.epoch(epoch, **self._metrics(trainer))

    def _metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        if not self.callback_metrics:
            return {}
        out = {}
        for key, value in trainer.callback_metrics.items():
            if getattr(value, "numel", lambda: 1)() == 1:
                out[f"lightning/{key}"] = float(value)
        return out

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close(exception)

    def _close(self, exc: BaseException | None) -> None:
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
