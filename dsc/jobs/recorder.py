"""The recorder: dsc's instruments on any PyTorch model trained by any loop.

Each epoch it evaluates a fixed probe (``acc/val``, ``loss/val``, ``acc_class/<name>``,
``prob_class/<name>``), takes a snapshot of the chosen layers' activations and of every weight's
spectrum (:mod:`dsc.jobs.snapshots`), keeps a checkpoint (:mod:`dsc.jobs.checkpoints`) and logs
the user's own metrics, all with step = epoch, into one MLflow run tagged as a training run.
``dsc train`` records through the same object, so what a user's run and a ``dsc train`` run
leave is laid out alike and read alike by ``dsc analyze``, ``dsc compare`` and ``dsc register``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from dsc import tracking
from dsc.core.scores import probe_metrics
from dsc.errors import ConfigError, Interrupted, TrainingDiverged
from dsc.jobs import recorder_checks as checks
from dsc.jobs.checkpoints import EpochLogger
from dsc.jobs.recording import Recording
from dsc.jobs.snapshots import SnapshotLogger, probe_rows
from dsc.nn.capture import user_sites
from dsc.nn.layers import LayerSpec, leaf_weights, output_shapes, resolve_layers, unwrap
from dsc.nn.probe import Probe, as_probe, check_logits, logits_of, model_device, quiet_pass
from dsc.nn.train import EpochReport
from dsc.settings import SnapshotConfig

OUTPUT = "output"  # the name of the model's own output, where no recorded layer gives it
RECORDER_TAG = "dsc.recorder"  # the recorded model's class, on runs a Recorder made
PROBE_INPUTS = "probe_inputs.npz"  # the snapshot rows' inputs, under the snapshots' prefix
PROBE_INPUTS_MAX_BYTES = 64e6  # larger probes are not kept (analysis then skips the steps that need them)


class Recorder(Recording):
    """Record a model's training into MLflow, epoch by epoch, from any training loop.

    Parameters
    ----------
    model : nn.Module
        The network; DDP, DataParallel and ``torch.compile`` wrappers are looked through and
        their name prefixes dropped. Its output must be (batch, C) logits.
    probe : (inputs, labels) or DataLoader of such pairs
        Evaluated every recorded epoch, in eval mode, under no_grad, on the model's device;
        labels are integer class indices. A DataLoader must not shuffle.
    class_names : list of str, optional
        Names of the C classes (default "0" .. "C-1"); metric names use them.
    layers : None, list of str, mapping or callable
        The layers whose activations are recorded (:func:`dsc.nn.layers.resolve_layers`):
        None for every Linear and Conv2d plus the model's output; names or glob patterns of
        ``named_modules()``; or a filter ``f(name, module)``. Spectra are taken of every
        Linear and Conv2d weight whatever is chosen here.
    experiment, run_name : str, optional
        Where a new run goes. Inside an active run (or ``mlflow run``) the recorder records
        into that run instead.
    params : dict, optional
        Logged once as the run's params.
    snapshot_every, checkpoint_every : int
        Snapshot and keep weights at epoch 0 and every N epochs (0: never). A checkpoint is
        also kept at each new best ``acc/val`` and at ``epochs``.
    probe_size : int, optional
        Probe images kept in snapshots: the first ceil(``probe_size`` / C) of each class (default all).
    grid : int, optional
        Pool every conv map to ``grid`` x ``grid``; None plans the pooling from ``budget_mb``.
    budget_mb : float
        Megabytes (10^6 bytes) of activations a snapshot aims at.
    probe_batch : int
        Probe images per forward pass (a tensor probe).
    run_id : str, optional
        Record into this existing run (left open at the end, as its owner closes it).
    optimizer : torch.optim.Optimizer, optional
        Given, checkpoints at epoch 0, every ``state_every`` epochs and at ``epochs`` also hold
        its state and torch's generators (what continuing needs).
    epochs : int, optional
        The last epoch, where known: its checkpoint is always kept.
    log_model : bool
        Log the final model (``mlflow.pytorch``, under ``model``) when the block ends well;
        ``register_name`` also registers it.

    Examples
    --------
    >>> rec = Recorder(model, probe=(x_val, y_val))               # doctest: +SKIP
    >>> with rec:                                                  # doctest: +SKIP
    ...     rec.epoch(0)
    ...     for epoch in range(1, 11):
    ...         loss = train_one_epoch(model)
    ...         rec.epoch(epoch, **{"loss/train": loss})
    """

    def __init__(
        self,
        model: nn.Module,
        probe: Any,
        class_names: list[str] | None = None,
        layers: LayerSpec = None,
        experiment: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        snapshot_every: int = 1,
        checkpoint_every: int = 1,
        *,
        probe_size: int | None = None,
        grid: int | None = None,
        budget_mb: float = 16.0,
        probe_batch: int = 256,
        run_id: str | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        state_every: int = 20,
        epochs: int | None = None,
        log_model: bool = True,
        register_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        checks.check_counts(
            snapshot_every=snapshot_every,
            checkpoint_every=checkpoint_every,
            probe_batch=probe_batch,
            state_every=state_every,
            probe_size=probe_size,
            grid=grid,
            epochs=epochs,
        )
        if not budget_mb > 0:
            raise ConfigError(f"budget_mb={budget_mb!r}: give a positive number of megabytes")
        if register_name:
            tracking.check_model_name(register_name)
        self.model, self.optimizer = model, optimizer
        self.inner = unwrap(model)
        self.probe: Probe = as_probe(probe, probe_batch)
        chosen = resolve_layers(model, layers)
        head = self.probe.head(2)
        # One pass over two probe inputs: every layer's shape, the output checked, before training.
        shapes = output_shapes(self.inner, {**chosen, OUTPUT: self.inner}, head)
        out_shape = shapes.get(OUTPUT)
        check_logits(torch.empty((len(head), *out_shape)) if out_shape else None, len(head), None)
        assert out_shape is not None  # check_logits refuses a model without an output
        self.classes = checks.class_names(class_names, out_shape[0], self.probe.labels)
        self.output_layer = self._output_layer(chosen, head)
        sites = user_sites(chosen)
        if self.output_layer == OUTPUT and layers is None:
            sites[OUTPUT] = (self.inner, False)
        self.output_layer = self.output_layer if self.output_layer in sites else ""
        per_class = -(-probe_size // len(self.classes)) if probe_size else 0  # ceil(probe_size / C)
        self.rows = probe_rows(self.probe.labels, per_class)
        self.snap_cfg = SnapshotConfig(every=snapshot_every, budget_mb=budget_mb)
        self._sites, self._weights, self._grid = sites, leaf_weights(model), grid
        self.checkpoint_every, self.state_every, self.epochs = checkpoint_every, state_every, epochs
        self.experiment, self.run_name, self._given_run = experiment, run_name, run_id
        self.params, self.tags = dict(params or {}), dict(tags or {})
        self.log_model, self.register_name = log_model, register_name
        self._run_id: str | None = None
        self._owned = False
        self._ctx: contextlib.ExitStack | None = None
        super().__init__(None, None)

    # ------------------------------------------------------------------ the run

    @property
    def run_id(self) -> str | None:
        """The MLflow run recorded into (set on entering the block)."""
        return self._run_id

    @property
    def _rid(self) -> str:
        """The run recorded into, once the block has been entered."""
        assert self._run_id is not None  # set by __enter__
        return self._run_id

    def __enter__(self) -> Recorder:
        stack = contextlib.ExitStack()
        try:
            active = mlflow.active_run()
            attached = self._given_run or (active.info.run_id if active else None) or os.environ.get("MLFLOW_RUN_ID")
            if self._given_run or (attached and mlflow.active_run()):
                assert attached  # the run given, or the active one
                tracking.ensure_store()
                self._run_id = tracking.require_run(attached).info.run_id
            else:  # a run of our own (or the one `mlflow run` made), ended when the block ends
                run = stack.enter_context(
                    tracking.run_context(self.experiment or "", self.run_name, system_metrics=True)
                )
                self._run_id, self._owned = run.info.run_id, True
            stack.enter_context(_TermAsInterrupt())
            self._start()
        except BaseException as exc:  # the run ends FAILED (or KILLED) with the reason, as it would later
            if not stack.__exit__(type(exc), exc, exc.__traceback__):
                raise
        self._ctx = stack
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._ctx = self._ctx, None
        try:
            if exc is None:
                self._finish()
            elif not self._owned:  # the owner of the run ends it; the reason is written here
                with contextlib.suppress(Exception):
                    MlflowClient().set_tag(self._rid, "error", f"{type(exc).__name__}: {exc}"[:4000])
        except BaseException as late:
            if stack is not None:
                stack.__exit__(type(late), late, late.__traceback__)
            raise
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def _start(self) -> None:
        client = MlflowClient()
        n_params = sum(p.numel() for p in self.inner.parameters() if p.requires_grad)
        tags = {
            tracking.KIND_TAG: "train",
            RECORDER_TAG: f"{type(self.inner).__module__}.{type(self.inner).__qualname__}",
            "dsc.device": str(model_device(self.inner)),
            "dsc.torch": torch.__version__,
            "dsc.output_layer": self.output_layer,
            **self.tags,
        }
        for key, value in tags.items():
            client.set_tag(self._rid, key, value)
        existing = client.get_run(self._rid).data.params
        params = {
            **self.params,
            "snapshot_every": self.snap_cfg.every,
            "checkpoint_every": self.checkpoint_every,
            "probe_images": len(self.probe),
            "snapshot_images": len(self.rows),
            "num_classes": len(self.classes),
            "n_parameters": n_params,
            "recorded_layers": len(self._sites),
        }
        fresh = {k: v for k, v in params.items() if k not in existing}
        if fresh:
            client.log_batch(self._rid, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in fresh.items()])
        self.checkpoints = EpochLogger(
            {"classes": list(self.classes), RECORDER_TAG: tags[RECORDER_TAG]},
            checkpoint_every=self.checkpoint_every or 0,
            last_epoch=self.epochs,
            state_every=self.state_every,
            run_id=self._run_id,
        )
        if self.snap_cfg.every > 0:
            self.snapshots = SnapshotLogger(
                self.inner,
                self._sites,
                self._weights,
                self.probe.head(1),
                self.rows,
                self.probe.labels[self.rows],
                self.rows,
                self.classes,
                self.snap_cfg,
                run_id=self._run_id,
                defer_metrics=True,
                grid=self._grid,
                output=self.output_layer,
            )
            self._save_probe_inputs()

    def _finish(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.flush()
        if self.log_model and self.last_epoch >= 0:
            example = self.probe.head(2).detach().float().cpu().numpy()
            version = tracking.log_and_register(
                self.inner, "model", self.register_name or None, example, run_id=self._run_id
            )
            if version:
                MlflowClient().set_tag(self._rid, "dsc.registered_model", self.register_name)

    def _save_probe_inputs(self) -> None:
        """The snapshot rows' inputs (float16), so that analysis can show and re-evaluate them."""
        if self.probe.inputs is None:
            return
        x = self.probe.inputs[torch.from_numpy(self.rows)].detach().cpu()
        if x.numel() * 2 > PROBE_INPUTS_MAX_BYTES or not x.is_floating_point():
            return
        with tempfile.TemporaryDirectory(prefix="dsc-probe-") as tmp:
            path = Path(tmp) / PROBE_INPUTS
            np.savez_compressed(path, inputs=x.to(torch.float16).numpy(), labels=self.probe.labels[self.rows])
            assert self.snapshots is not None  # the probe inputs are saved beside the snapshots
            MlflowClient().log_artifact(self._rid, str(path), self.snapshots.prefix)

    def _output_layer(self, chosen: Mapping[str, nn.Module], head: torch.Tensor) -> str:
        """The recorded layer whose output is the model's output (its logits), else :data:`OUTPUT`."""
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable:
            return lambda m, i, out: seen.__setitem__(name, out)

        handles = [m.register_forward_hook(keep(n)) for n, m in chosen.items()]
        try:
            with quiet_pass(self.inner) as device:
                out = self.inner(head.to(device))
        finally:
            for h in handles:
                h.remove()
        same = [n for n, t in seen.items() if t is out]
        return same[-1] if same else OUTPUT

    # ------------------------------------------------------------------ epochs

    def epoch(self, epoch: int, **metrics: float) -> dict[str, float]:
        """Record epoch ``epoch`` (0: before any update): the user's ``metrics``, the probe, a snapshot,
        a checkpoint when due. Returns what was logged at this step."""
        return self.record(epoch, metrics)

    def record(self, epoch: int, metrics: Mapping[str, float], logits: np.ndarray | None = None) -> dict[str, float]:
        """:meth:`epoch`, with the metrics as a mapping; ``logits`` (n, C) of a probe pass already
        run inside :meth:`capturing` replace the recorder's own."""
        if self._run_id is None:
            raise ConfigError("record inside the recorder's block: `with rec: rec.epoch(0) ...`")
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ConfigError(f"epoch {epoch!r}: give a whole number >= 0 (0 is before any update)")
        if epoch <= self.last_epoch:
            self.report(EpochReport(epoch, {}, self.inner, None))  # the one line of an epoch recorded twice
        values = checks.user_metrics(metrics, epoch)
        if logits is None:
            logits = logits_of(self.model, self.probe, len(self.classes), self.capturing(epoch))
        scores = probe_metrics(logits, self.probe.labels, self.classes)
        if not math.isfinite(scores["loss/val"]):
            raise TrainingDiverged(
                f"the probe's loss is {scores['loss/val']} at epoch {epoch}: training diverged; lower the learning rate"
            )
        report = EpochReport(epoch, {**values, **scores}, self.inner, self.optimizer)
        self.report(report)
        return report.metrics


class _TermAsInterrupt:
    """SIGTERM raises :class:`Interrupted` in the main thread (SIGINT raises KeyboardInterrupt as ever),
    so that a stopped recording ends KILLED with its epochs kept; the old handler comes back on exit."""

    def __enter__(self) -> _TermAsInterrupt:
        self._saved = None
        if threading.current_thread() is threading.main_thread():
            self._saved = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame) -> None:
        raise Interrupted("stopped by SIGTERM; the epochs recorded so far are kept", 0, signum)

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGTERM, self._saved)


__all__ = ["OUTPUT", "Recorder"]
