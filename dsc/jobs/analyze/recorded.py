"""What `dsc analyze` reads of a run that :class:`dsc.Recorder` made, of any model: its probe
inputs in place of a rebuilt dataset, its logged model in place of a rebuilt network.

The steps that need the training data itself (the order the data's modes predict) are skipped
with the reason; those that need only the probe (variance maps, leading inputs) read the probe
inputs the recorder kept; the modes step cuts the logged model's Linear weights.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from dsc import tracking
from dsc.core.analysis_helpers import stratified_subset
from dsc.data.base import ImageSet
from dsc.errors import DataError, DscError
from dsc.jobs.recorder import PROBE_INPUTS
from dsc.nn.modes import ModeSweep, mode_sweep
from dsc.settings import AnalyzeConfig


class ProbeImages:
    """The probe inputs a recorder kept, in the form of `RunImages` (``get()``: (None, ImageSet)).

    The inputs are stored normalised as the model reads them; for pictures they are rescaled to
    0..255 over the whole probe (one affine map, so variances keep their proportions).
    ``training_split`` is False: the data's own split is unknown here (the order step says so).
    """

    training_split = False

    def __init__(self, run_id: str, classes: list[str], prefix: str = "snapshots") -> None:
        self.run_id, self.classes, self.prefix = run_id, classes, prefix
        self._lock = threading.Lock()
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe inputs (n, ...) float32 and labels (n,); DataError when the run kept none."""
        with self._lock:
            if self._loaded is None:
                kept = tracking.snapshot.probe_inputs(self.run_id, PROBE_INPUTS, self.prefix)
                if kept is None:
                    raise DataError(
                        f"run {self.run_id} kept no probe inputs (a DataLoader probe, or over "
                        "64 MB): the steps that show or re-evaluate them are skipped"
                    )
                self._loaded = (kept[0].astype(np.float32), kept[1].astype(np.int64))
            return self._loaded

    def get(self) -> tuple[None, ImageSet]:
        x, y = self.arrays()
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"run {self.run_id}'s probe inputs are not images (shape {x.shape[1:]}): no variance maps")
        lo, hi = float(x.min()), float(x.max())
        scaled = np.round((x - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
        return None, ImageSet(scaled, y, tuple(self.classes), name="probe")


def load_model(run_id: str) -> nn.Module | None:
    """The run's logged model, or None when there is none (the modes step then says why)."""
    try:
        return tracking.load_logged_model(run_id)
    except DscError:
        return None


def linear_params(model: nn.Module, state: dict[str, torch.Tensor], layers: list[str]) -> dict[str, str]:
    """``{layer: parameter name}`` of the recorded layers whose weight is a matrix the model holds."""
    out = {}
    for name in layers:
        key = f"{name}.weight"
        w = state.get(key)
        if w is not None and w.ndim == 2:
            try:
                model.get_parameter(key)
            except AttributeError:
                continue
            out[name] = key
    return out


def sweep_modes(
    model: nn.Module | None,
    images: ProbeImages,
    checkpoint: dict,
    layers: list[str],
    cfg: AnalyzeConfig,
    stop: threading.Event,
) -> ModeSweep:
    """The modes sweep of the logged model's Linear layers on a stratified subset of the probe inputs."""
    if model is None:
        raise DataError("the run logged no model (Recorder(log_model=False)): the modes step needs the network")
    params = linear_params(model, checkpoint["model_state"], layers)
    if not params:
        raise DataError("the logged model has no Linear layer to cut into modes")
    x, y = images.arrays()
    idx = stratified_subset(np.arange(len(y)), y, cfg.modes_max_images, cfg.seed)
    return mode_sweep(
        model, torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), cfg.modes_points, cfg.seed, stop, params=params
    )
