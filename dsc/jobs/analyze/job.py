"""``dsc analyze``: the paper's figures and numbers from one finished training run.

Reads a run's snapshots (``snapshots/``), metric history and last checkpoint, and logs back
onto the same run (its status is left as it is):

- ``analysis/figures/*.png`` and ``analysis/figures/pca.gif``: the figures;
- ``analysis/summary.json``: every number behind them (NaN and inf as null);
- ``analysis/report.html``: one self-contained page with every figure inline;
- metrics ``emergence/class_<name>`` (the epoch a class's validation recall emerges),
  ``emergence_repr/<layer>/class_<name>`` (the epoch a linear probe of the layer finds it),
  ``lld_class/<name>/n_components``, ``.../center_<k>``, ``.../width_<k>`` (its recall's
  decomposition), ``order/spearman_saxe``, ``order/spearman_separability`` and
  ``order/spearman_mode_time`` (how well the data's modes predicted the order) and
  ``transition_epoch`` (the end of the latent phase of ``acc/val``) and
  ``modes/<layer>/break_rank`` (where its mode-importance power law breaks), logged at step 0: they
  describe the whole run, and at one step a rerun's value replaces the last (MLflow shows the
  value of the highest step);
- metrics ``nc/<layer>/nc1`` ... ``nc4`` (neural collapse), logged with step = epoch;
- each snapshot's pictures in the image grid (``images/``, step = epoch: :mod:`dsc.jobs.pictures`),
  for the epochs that lack them;
- the tag ``dsc.complete.analysis`` (the last epoch analysed), set last: a run without it holds
  no complete analysis (one killed halfway), and a new analysis replaces all of ``analysis/``.

The steps, in `run_analysis` order: the PCA timeline of one layer (Figs 9, 10, 13), class
emergence by behaviour, by each layer's probe and by silhouette (Fig 14), the change point,
pixel variance maps and each class's most activating inputs (Figs 15, 16), layer similarity
(Fig 17), weight spectra over epochs, hierarchical modes of the final weights (Li & Huang),
the logistic learning decomposition (Figs 11, 12), the per-class decomposition that says
which classes make each of its processes, the order the data's input-output modes predict
(Saxe et al.), neural collapse per epoch (Papyan et al.), and the event timeline that lines
every step's changes up on one axis (the report's first section).
Steps 4, 7 and 10 rebuild the dataset from the checkpoint's data config; when it cannot be
rebuilt (a moved folder, a changed generator) they are skipped with the reason written into
the summary and the report, and the rest still runs. A snapshot epoch whose file fails its
checksum is left out the same way (``skipped_epochs`` in the summary, a section of the report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from dsc import tracking
from dsc.core.analysis_helpers import pick_esd_epochs, series_at
from dsc.core.jsonsafe import jsonable
from dsc.errors import ConfigError
from dsc.figures import report
from dsc.jobs import pictures as epoch_pictures
from dsc.jobs import stages
from dsc.jobs.analyze import classes as analyze_classes
from dsc.jobs.analyze import collapse as analyze_collapse
from dsc.jobs.analyze import events as analyze_events
from dsc.jobs.analyze import images as analyze_images
from dsc.jobs.analyze import order as analyze_order
from dsc.jobs.analyze import recorded as analyze_recorded
from dsc.jobs.analyze import steps as analyze_steps
from dsc.jobs.analyze.plumbing import Step, skipped_epochs_section
from dsc.jobs.analyze.source import (
    RunImages,
    Source,
    find_run,
    load_model,
    read_source,
    weight_shapes,
)
from dsc.settings import AnalyzeConfig

ARTIFACT_DIR = "analysis"
SWITCH_INTERVAL_S = 2e-4  # GIL switch interval while the modes thread runs beside the plots
STEP_NAMES = (
    "model",
    "curves",
    "pca",
    "emergence",
    "change_point",
    "inputs",
    "similarity",
    "spectra",
    "modes",
    "lld",
    "class_lld",
    "order",
    "collapse",
    "events",
    "pictures",
)

__all__ = ["ARTIFACT_DIR", "Analysis", "Source", "analyze_job", "find_run", "read_source", "run_analysis"]


@dataclass(frozen=True)
class Analysis:
    """Everything one analysis produces.

    Attributes
    ----------
    cfg, src : what was analysed, and how
    out : the local ``analysis/`` directory (gone once `analyze_job` has logged it)
    sections : the report's sections, in page order
    summary : the content of ``summary.json``
    metrics : logged onto the run at step 0
    timings : seconds per step (``modes_background``: the sweep beside the steps)
    wall_s : seconds from reading the run to the last artifact logged (`analyze_job` only)
    epoch_metrics : epoch -> metrics logged onto the run with that step (``nc/<layer>/<key>``)
    epoch_images : epoch -> pictures logged onto the run with that step (image key -> (H, W, 3))
    """

    cfg: AnalyzeConfig
    src: Source
    out: Path
    sections: tuple[report.Section, ...]
    summary: dict[str, Any]
    metrics: dict[str, float]
    timings: dict[str, float]
    wall_s: float = float("nan")
    epoch_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    epoch_images: dict[int, dict[str, Any]] = field(default_factory=dict)


class _Clock(contextlib.AbstractContextManager):
    """Seconds per step, and the progress bar over the steps (closed on exit)."""

    def __init__(self, progress: bool) -> None:
        self.timings: dict[str, float] = {}
        self.bar = tqdm(total=len(STEP_NAMES), desc="analyze", unit="step", disable=not progress)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0
        self.bar.update()

    def timed(self, name: str, fn: Callable) -> Callable:
        """``fn``, recording its seconds under ``name`` when it returns (from any thread)."""

        def run(*args: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args)
            self.timings[name] = time.perf_counter() - t0
            return out

        return run


@contextlib.contextmanager
def _torch_beside_numpy(stop: threading.Event) -> Iterator[ThreadPoolExecutor]:
    """One background thread for torch work while this thread runs NumPy and matplotlib.

    The background gets all but one of torch's threads; NumPy's BLAS gets one, which on two
    cores lets the halves overlap and avoids the oversubscription that makes many small
    products many times slower on a busy machine. On an error here ``stop`` is set, so the
    background stops at its next evaluation instead of finishing its work.
    """
    threads, switch = torch.get_num_threads(), sys.getswitchinterval()
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(1, "dsc-modes") as pool:
        torch.set_num_threads(max(1, threads - 1))
        # The modes thread needs the GIL between torch ops, thousands of times; while the main
        # thread plots (pure Python) each handover waits out the switch interval (5 ms).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            yield pool
        except BaseException:
            stop.set()
            raise
        finally:
            torch.set_num_threads(threads)
            sys.setswitchinterval(switch)


def _validate(src: Source, cfg: AnalyzeConfig) -> AnalyzeConfig:
    """Option checks against the run, before any work starts; the config to analyse with.

    A run of another model than dsc's has other layer names: where the default ``--layer``
    is not among them, the layer that feeds the logits is analysed instead.
    """
    layers = src.snaps.layers
    if cfg.layer not in layers and src.recorded and cfg.layer == AnalyzeConfig().layer:
        out = src.snaps.output
        feeds = layers[layers.index(out) - 1] if out in layers[1:] else layers[-1]
        cfg = dataclasses.replace(cfg, layer=feeds)
    if len(src.snaps.classes) < 2:
        raise ConfigError(
            f"run {src.run_id} has one class ({', '.join(src.snaps.classes)}): analyze compares "
            "classes (emergence, per-class decomposition) and needs at least 2"
        )
    if cfg.layer not in src.snaps.layers:
        raise ConfigError(f"--layer {cfg.layer!r}: not in the snapshots; choose one of {src.snaps.layers}")
    pick_esd_epochs(src.snaps.epochs, cfg.esd_epochs, None)
    return cfg


def _header(src: Source) -> tuple[dict, dict, dict]:
    """The report's run facts, the run's params, and its final acc/, loss/ and best/ metrics."""
    info, snaps = src.run.info, src.snaps
    run = {
        "run id": info.run_id,
        "run name": info.run_name,
        "experiment id": info.experiment_id,
        "status": info.status,
        "epochs": f"{snaps.epochs[0]}..{snaps.epochs[-1]}",
        "classes": ", ".join(snaps.classes),
        "probe images": len(snaps.labels),
    }
    metrics = {k: v for k, v in sorted(src.run.data.metrics.items()) if k.startswith(("acc/", "loss/", "best/"))}
    return run, dict(sorted(src.run.data.params.items())), metrics


def run_analysis(src: Source, cfg: AnalyzeConfig, out: Path) -> Analysis:
    """Compute every step into ``out`` (figures/, summary.json, report.html); logs nothing.

    The modes sweep (torch) runs in a background thread from the start, while the other steps
    (NumPy and matplotlib) run here, in order; step 7 waits for it.
    """
    cfg = _validate(src, cfg)
    snaps, classes = src.snaps, list(src.snaps.classes)
    acc_steps, acc_val = src.history["acc/val"]
    accuracy = series_at(acc_steps, acc_val, snaps.epochs)  # acc/val at each snapshot epoch, (E,)
    draw = analyze_steps.FigureWriter(out / "figures")
    stop = threading.Event()
    with _Clock(cfg.progress) as clock, _torch_beside_numpy(stop) as background:
        # --- the final model; its modes sweep starts now, beside the steps below
        with clock("model"):
            model = analyze_recorded.load_model(src.run_id) if src.recorded else load_model(src.checkpoint)
        images: analyze_recorded.ProbeImages | RunImages
        if src.recorded:  # any model: the probe's inputs, the logged network's Linear layers
            images = analyze_recorded.ProbeImages(src.run_id, classes)
            sweep = background.submit(
                clock.timed("modes_background", analyze_recorded.sweep_modes),
                model,
                images,
                src.checkpoint,
                snaps.weight_layers,
                cfg,
                stop,
            )
        else:
            images = RunImages(src)  # rebuilt once, by whichever of steps 4 and 7 asks first
            sweep = background.submit(
                clock.timed("modes_background", analyze_images.sweep_modes), model, images, src.checkpoint, cfg, stop
            )
        # --- learning curves
        with clock("curves"):
            curves = analyze_steps.curves(src.history, len(classes), draw)
        # --- 1. PCA timeline of one layer (Figs 9, 10, 13)
        with clock("pca"):
            pca = analyze_steps.pca(snaps, cfg.layer, cfg.n_components, accuracy, draw)
        # --- 2. class emergence: behaviour, each layer's probe, the silhouette in that PCA space (Fig 14)
        with clock("emergence"):
            emergence = analyze_classes.class_emergence(src.recall, snaps, pca.timeline, cfg, draw)
        # --- 3. change point: the end of the latent phase of acc/val
        with clock("change_point"):
            change = analyze_steps.change_point(acc_steps, acc_val, len(classes), draw)
        # --- 4. variance maps, and each class's leading unit where the layer's probe finds it (Figs 15, 16)
        with clock("inputs"):
            inputs = analyze_images.inputs(images, snaps, emergence.epochs_in(cfg.layer), cfg.layer, cfg.top_k, draw)
        # --- 5. layer similarity, the change point marked (Fig 17)
        with clock("similarity"):
            similarity = analyze_steps.similarity(snaps, change.epoch, draw)
        # --- 6. weight spectra; ESD histograms at first, transition and last epochs by default
        with clock("spectra"):
            spectra = analyze_steps.spectra(snaps, weight_shapes(src, model), cfg.esd_epochs, change.epoch, draw)
        # --- 7. hierarchical modes of the final weights: waits for the background sweep
        with clock("modes"):
            modes = analyze_images.modes(sweep, len(classes), draw)
        # --- 8. logistic learning decomposition of acc/val (Figs 11, 12)
        with clock("lld"):
            lld = analyze_steps.lld(acc_steps, acc_val, cfg.lld_components, draw)
        # --- 9. which classes make each of its processes: each class's recall decomposed
        with clock("class_lld"):
            class_lld = analyze_classes.class_lld(
                src.recall, classes, snaps.labels, lld.selection, cfg.lld_components, draw
            )
        # --- 10. what predicted the order: the training split's input-output modes, pixel separability
        with clock("order"):
            order = analyze_order.order(images, snaps, emergence.behaviour, cfg.seed, draw)
        # --- 11. neural collapse per epoch, the classifier's weights read from each epoch's checkpoint
        with clock("collapse"):
            weights, unread = analyze_collapse.classifier_weights(src.run_id, snaps.epochs, classifier=snaps.output)
            nc = analyze_collapse.neural_collapse(snaps, weights, cfg.layer, change.epoch, draw, unread)
        # --- the event timeline: every step's changes on one epoch axis (the report's first section)
        with clock("events"):
            timeline = analyze_events.timeline(
                acc_steps, acc_val, cfg.layer, change, lld, class_lld, emergence, pca, nc, spectra, similarity, draw
            )
        # --- each snapshot's pictures for the image grid, where the run lacks them
        with clock("pictures"):
            pictures = (
                epoch_pictures.missing_pictures(snaps, weight_shapes(src, model), src.pictures)
                if cfg.epoch_images
                else {}
            )

    # --- summary.json and report.html
    steps: dict[str, Step] = {
        "events": timeline,
        "curves": curves,
        "pca": pca,
        "emergence": emergence,
        "change_point": change,
        "inputs": inputs,
        "similarity": similarity,
        "spectra": spectra,
        "modes": modes,
        "lld": lld,
        "class_lld": class_lld,
        "order": order,
        "collapse": nc,
    }
    logged = emergence.metrics | change.metrics | class_lld.metrics | order.metrics | modes.metrics
    run, params, final = _header(src)
    final |= logged
    summary = {
        "run_id": src.run_id,
        "config": asdict(cfg),
        "layer": cfg.layer,
        "epochs": snaps.epochs,
        "skipped_epochs": src.skipped_epochs,
        "classes": classes,
        "params": params,
        "final_metrics": final,
        **{name: step.summary() for name, step in steps.items()},
        "logged_metrics": logged,
        "figures": sorted(p.name for p in draw.directory.iterdir()),
        "epoch_images": {
            "drawn_epochs": sorted(pictures),
            "logged_before": {k: len(v) for k, v in src.pictures.items()},
        },
        "timings": clock.timings,
    }
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=1, allow_nan=False))
    sections = skipped_epochs_section(src.skipped_epochs) + tuple(step.section for step in steps.values())
    title = f"Analysis of run {src.run.info.run_name or src.run_id}"
    (out / "report.html").write_text(report.render(title, run, params, final, sections), encoding="utf-8")
    return Analysis(
        cfg, src, out, sections, summary, logged, clock.timings, epoch_metrics=nc.epoch_metrics(), epoch_images=pictures
    )


def analyze_job(run_id: str = "", experiment: str = "", cfg: AnalyzeConfig | None = None) -> Analysis:
    """Analyse a run and log ``analysis/`` and the metrics onto it; returns the analysis.

    Raises TrackingError / ConfigError (one-line errors) for a missing, unfinished or
    incomplete run; the run itself is never modified except for what is added.
    """
    cfg = cfg or AnalyzeConfig()
    t0 = time.perf_counter()
    src = read_source(find_run(run_id, experiment))
    read_s = time.perf_counter() - t0
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="dsc-analysis-") as tmp:
        a = run_analysis(src, cfg, Path(tmp))
        t1 = time.perf_counter()
        tracking.mark_incomplete(src.run_id, ARTIFACT_DIR)  # set again once everything is logged
        tracking.replace_directory(src.run_id, tmp, ARTIFACT_DIR)  # no earlier analysis's file stays
        stages.pause_at("analyze-uploaded")
        tracking.log_metrics_to(src.run_id, a.metrics, step=0)
        for epoch, metrics in a.epoch_metrics.items():
            tracking.log_metrics_to(src.run_id, metrics, step=epoch)
        for epoch, pictures in a.epoch_images.items():
            epoch_pictures.log_pictures(client, src.run_id, pictures, epoch)
        tracking.mark_complete(src.run_id, ARTIFACT_DIR, src.snaps.epochs[-1])
        done = time.perf_counter()
        a = dataclasses.replace(a, timings={"read": read_s, **a.timings, "log": done - t1}, wall_s=done - t0)
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if wrapper and wrapper != src.run_id:  # `mlflow run -e analyze` made a run of its own: say what it did
        client.set_tag(wrapper, tracking.KIND_TAG, "analyze")
        client.set_tag(wrapper, "dsc.analyzed_run", src.run_id)
    return a
