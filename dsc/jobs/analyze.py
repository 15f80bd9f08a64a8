"""``dsc analyze``: the paper's figures and numbers from one finished training run.

Reads a run's snapshots (``snapshots/``), metric history and last checkpoint, and logs back
onto the same run (its status is left as it is):

- ``analysis/figures/*.png`` and ``analysis/figures/pca.gif``: the figures;
- ``analysis/summary.json``: every number behind them (NaN and inf as null);
- ``analysis/report.html``: one self-contained page with every figure inline;
- metrics ``emergence/class_<name>`` (the epoch a class emerges) and ``transition_epoch`` (the
  end of the latent phase of ``acc/val``), logged at step 0: they describe the whole run, and
  at one step a rerun's value replaces the last (MLflow shows the value of the highest step).

The steps, in `STEPS` order: the PCA timeline of one layer (Figs 9, 10, 13), class emergence
(Fig 14), the change point, pixel variance maps and each class's most activating inputs
(Figs 15, 16), layer similarity (Fig 17), weight spectra over epochs, hierarchical modes of
the final weights (Li & Huang), and the logistic learning decomposition (Figs 11, 12).
Steps 4 and 7 rebuild the dataset from the checkpoint's data config; when it cannot be
rebuilt (a moved folder, a changed generator) they are skipped with the reason written into
the summary and the report, and the rest still runs.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient
from threadpoolctl import threadpool_limits
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from dsc import tracking
from dsc.core import snapshot, timeline
from dsc.core.jsonsafe import jsonable
from dsc.core.lld import select as lld_select
from dsc.core.modes import ModeDecomposition, fit_two_segment_power_law, k_grid
from dsc.core.spectra import PHASES, fit_mp, mp_density
from dsc.errors import ConfigError, DataError, TrackingError
from dsc.figures import plots, report
from dsc.nn.model import DenseVGG, build_model, named_layers
from dsc.settings import AnalyzeConfig, ModelConfig

ARTIFACT_DIR = "analysis"
CURVES = ("acc/train", "acc/val", "loss/train", "loss/val")
DPI = 100  # figures: PNG resolution
MEMO_TOTAL_BYTES = 512e6  # modes: outputs of modified prefixes kept for reuse, at most
SWITCH_INTERVAL_S = 2e-4  # GIL switch interval while the modes thread runs beside the plots
ESD_MIN_SIDE = 32  # ESD histograms for weight matrices (or kernel slices) at least this wide




# --- pure helpers ------------------------------------------------------------------------------

def series_at(steps: np.ndarray, values: np.ndarray, epochs: Any) -> np.ndarray:
    """Values of a metric history at the given epochs (NaN where it has none)."""
    lookup = dict(zip(np.asarray(steps).tolist(), np.asarray(values, dtype=float).tolist()))
    return np.array([lookup.get(int(e), np.nan) for e in epochs], dtype=float)


def leading_feature(acts: np.ndarray, labels: np.ndarray, cls: int) -> tuple[int | None, float]:
    """The unit most correlated (Pearson) with the one-vs-rest indicator of class ``cls``.

    Parameters
    ----------
    acts : array, shape (n, ...)
        Probe activations of one layer at one epoch (trailing dimensions are units).
    labels : int array, shape (n,)

    Returns
    -------
    unit, r : index of the unit (None when every unit is constant) and its correlation.
    """
    x = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
    ind = (np.asarray(labels) == cls).astype(np.float64)
    xc, ic = x - x.mean(0), ind - ind.mean()
    den = np.sqrt((xc * xc).sum(0) * (ic * ic).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 1e-12, (xc.T @ ic) / den, np.nan)
    if not np.isfinite(r).any():
        return None, float("nan")
    unit = int(np.nanargmax(r))
    return unit, float(r[unit])


def cka_by_distance(cka: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean CKA of layer pairs (i, i + d) for each distance d = 1..L-1 (NaN pairs skipped)."""
    n = len(cka)
    d = np.arange(1, n)
    means = []
    for k in d:
        vals = np.diagonal(cka, offset=k)
        vals = vals[np.isfinite(vals)]
        means.append(vals.mean() if vals.size else np.nan)
    return d, np.array(means, dtype=float)


def near_layers_summary(cka: np.ndarray) -> dict[str, Any]:
    """Whether near layers are more alike than far ones: slope of mean CKA against distance."""
    d, mean = cka_by_distance(cka)
    ok = np.isfinite(mean)
    slope = float(np.polyfit(d[ok], mean[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
    return {"distance": d, "mean_cka": mean, "slope": slope,
            "near_more_alike": bool(slope < 0) if math.isfinite(slope) else None}


def pick_esd_epochs(epochs: list[int], requested: tuple[int, ...], transition: int | None) -> list[int]:
    """Snapshot epochs for the ESD histograms: the requested ones, or first, transition, last."""
    if requested:
        missing = [e for e in requested if e not in epochs]
        if missing:
            raise ConfigError(f"--esd-epochs {','.join(map(str, requested))}: no snapshot at epoch(s) "
                              f"{missing}; snapshots exist at {epochs[0]}..{epochs[-1]}")
        return list(dict.fromkeys(requested))
    picks = [epochs[0]]
    if transition is not None:
        picks.append(min(epochs, key=lambda e: abs(e - transition)))
    picks.append(epochs[-1])
    return list(dict.fromkeys(picks))


def stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most ``size`` of ``idx``, class shares kept (sorted), seeded."""
    if size >= len(idx):
        return np.sort(idx)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[idx])
    stratify = labels[idx] if size >= (counts > 0).sum() and counts[counts > 0].min() >= 2 else None
    keep, _ = train_test_split(idx, train_size=size, stratify=stratify, random_state=seed)
    return np.sort(keep)


# --- modes: the final model with truncated weights ---------------------------------------------

# A replacement weight: the full tensor, or for a linear layer the factors (a (out, k), b (k, in))
# of a rank-k weight a @ b, applied as two thin products (far cheaper for small k).
Weight = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
Mods = Mapping[str, tuple[Hashable, Weight]]  # layer -> (key naming the replacement, weight)


def _full(w: Weight) -> torch.Tensor:
    return w[0] @ w[1] if isinstance(w, tuple) else w


def _apply(module: nn.Module, t: torch.Tensor, w: Weight) -> torch.Tensor:
    if isinstance(w, tuple):
        return nn.functional.linear(nn.functional.linear(t, w[1]), w[0], module.bias)
    return functional_call(module, {"weight": w}, (t,))


class ModeEvaluator:
    """Loss and accuracy of a model with some layers' weights replaced, reusing unchanged work.

    DenseVGG runs as a chain of stages (conv+ReLU ..., pool+flatten, fc1+ReLU, fc2+ReLU, out;
    dropout is the identity in eval mode). The input of each stage under the full model is kept
    (within ``cache_bytes``), so replacing layer j reruns stages j.. only; stage outputs of a
    modified prefix are memoised by the replacements' keys (small ones only), so sweeps that
    repeat the conv replacements under new fc ones rerun only the fc head. Other models run
    whole (``torch.func.functional_call``: weights swapped without touching the module).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 64,
                 cache_bytes: float = 1.5e9, memo_bytes: float = 16e6,
                 stop: threading.Event | None = None) -> None:
        self.model = model.eval()
        self.stop = stop
        self.y = y
        self.layers = named_layers(model)
        self.memo_bytes = memo_bytes
        self.n = len(x)
        self.batches = [x[s:s + batch] for s in range(0, len(x), batch)]
        self.memo_used = 0.0
        self.stages = self._stages()
        if not self._chain_matches(x[:4]):
            self.stages = [(None, self._whole)]
        self.memo: dict[tuple, list[torch.Tensor]] = {(0, ()): self.batches}
        self._fill_cache(cache_bytes)

    def _whole(self, t: torch.Tensor, mods: Mods) -> torch.Tensor:
        qual = {m: n for n, m in self.model.named_modules()}
        params = {f"{qual[self.layers[name]]}.weight": _full(w) for name, (_, w) in mods.items()}
        return functional_call(self.model, params, (t,))

    def _stages(self) -> list[tuple[str | None, Callable]]:
        if not isinstance(self.model, DenseVGG):
            return [(None, self._whole)]

        def layer(name: str, relu: bool) -> tuple[str, Callable]:
            module = self.layers[name]

            def run(t: torch.Tensor, mods: Mods) -> torch.Tensor:
                out = _apply(module, t, mods[name][1]) if name in mods else module(t)
                return out.relu_() if relu else out  # out is fresh: in place saves a pass over memory
            return name, run

        m = self.model
        convs = [layer(n, True) for n in self.layers if n.startswith("conv")]
        pool = (None, lambda t, mods: m.flatten(m.pool(t)))
        return [*convs, pool, layer("fc1", True), layer("fc2", True), layer("out", False)]

    @torch.no_grad()
    def _chain_matches(self, x: torch.Tensor) -> bool:
        h = x
        for _, run in self.stages:
            h = run(h, {})
        ref = self.model(x)
        return h.shape == ref.shape and torch.allclose(h, ref, atol=1e-4, rtol=1e-4)

    @torch.no_grad()
    def _fill_cache(self, cache_bytes: float) -> None:
        """One pass of the full model, keeping stage inputs: the last ones first, within budget."""
        h, sizes = self.batches[0][:1], []
        for _, run in self.stages:
            h = run(h, {})
            sizes.append(h.numel() * h.element_size() * self.n)  # bytes of stage j + 1's input
        keep, used = {len(self.stages)}, 0.0
        for j in range(len(self.stages) - 1, 0, -1):
            if used + sizes[j - 1] <= cache_bytes:
                keep.add(j)
                used += sizes[j - 1]
        self.sizes = [0.0, *sizes]
        for j, batches in self._run(self.batches, 0, {}, keep)[1].items():
            self.memo[(j, ())] = batches

    def _run(self, inputs: list[torch.Tensor], start: int, mods: Mods,
             keep: set[int]) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
        """Run the batches of stage ``start``'s input depth first (a batch's maps stay in the CPU
        cache: batches of 64 run ~2x faster than 256); returns the logits batches and the
        inputs of the stages in ``keep``."""
        kept: dict[int, list[torch.Tensor]] = {j: [] for j in keep}
        out = []
        for b in inputs:
            for s in range(start, len(self.stages)):
                b = self.stages[s][1](b, mods)
                if s + 1 in kept:
                    kept[s + 1].append(b)
            out.append(b)
        return out, kept

    @torch.no_grad()
    def logits(self, mods: Mods) -> torch.Tensor:
        """(n, C) logits with the given layers replaced."""
        stage_of = {name: j for j, (name, _) in enumerate(self.stages) if name}
        where = {name: (stage_of.get(name, 0), key) for name, (key, _) in mods.items()}
        sig = [tuple(sorted((n, k) for n, (j, k) in where.items() if j < s)) for s in range(len(self.stages) + 1)]
        start = max(s for s in range(len(self.stages) + 1) if (s, sig[s]) in self.memo)
        keep = {j for j in range(start + 1, len(self.stages) + 1) if (j, sig[j]) not in self.memo
                and self.sizes[j] <= self.memo_bytes and self.memo_used + self.sizes[j] <= MEMO_TOTAL_BYTES}
        out, kept = self._run(self.memo[(start, sig[start])], start, mods, keep)
        for j, batches in kept.items():
            self.memo[(j, sig[j])] = batches
            self.memo_used += self.sizes[j]
        return torch.cat(out)

    def score(self, mods: Mods) -> tuple[float, float]:
        """(accuracy, mean cross-entropy loss) with the given layers replaced."""
        if self.stop is not None and self.stop.is_set():
            raise Cancelled("mode sweep cancelled")
        logits = self.logits(mods)
        loss = float(nn.functional.cross_entropy(logits, self.y))
        return float((logits.argmax(1) == self.y).float().mean()), loss


def _truncated(dec: ModeDecomposition, svd: tuple, k: int, mode: str, rng: list[int],
               shape: torch.Size) -> Weight:
    """Rank-k weight from the decomposition in float32: factors for a linear layer when cheaper."""
    u, s, vt = svd
    idx = torch.from_numpy(dec.modes(k, mode, rng))
    a, b = (u[:, idx] * s[idx]).contiguous(), vt[idx].contiguous()  # (m, k), (k, n)
    m, n = a.shape[0], b.shape[1]
    if len(shape) == 2 and k * (m + n) < m * n:
        return a, b
    return (a @ b).reshape(shape).contiguous()


class Cancelled(Exception):
    """The analysis stopped while a background computation was still running."""


def mode_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, points: int, seed: int,
               stop: threading.Event | None = None) -> dict:
    """Accuracy and loss as k singular modes are kept: each layer alone, then all together.

    Each layer is evaluated on the union of every layer's `k_grid` (up to its own number of
    modes), so all layers share one k axis; "all" keeps the same fraction of each layer's
    modes (at least one), indexed by k of the layer with the most modes. Random modes are
    drawn with the seed ``[seed, layer index, k]``. Setting ``stop`` raises `Cancelled` at the
    next evaluation.
    """
    ev = ModeEvaluator(model, x, y, stop=stop)
    weights = {n: m.weight.detach() for n, m in named_layers(model).items()}
    decs = {n: ModeDecomposition(w.cpu().numpy()) for n, w in weights.items()}
    svds = {n: tuple(torch.from_numpy(a).float() for a in (d.u_, d.s_, d.vt_)) for n, d in decs.items()}
    full_acc, full_loss = ev.score({})
    union = sorted(set().union(*(k_grid(d.n_modes, points).tolist() + [d.n_modes] for d in decs.values())))
    out: dict[str, Any] = {"n_images": len(y), "full": {"acc": full_acc, "loss": full_loss}, "k": union,
                           "layers": {}}

    def curves(mods_for: Callable[[int, str], dict | None], ks: list[int]) -> dict:
        res = {}
        for mode in ("leading", "random"):
            acc, loss = [], []
            for k in ks:
                mods = mods_for(k, mode)
                a, lo = ev.score(mods) if mods else (full_acc, full_loss)
                acc.append(a)
                loss.append(lo)
            res[mode] = {"acc": acc, "loss": loss}
        return res

    for i, (name, dec) in enumerate(decs.items()):
        ks = [k for k in union if k <= dec.n_modes]

        def one(k: int, mode: str, name=name, dec=dec, i=i) -> dict | None:
            if k >= dec.n_modes:
                return None  # all modes: the full weight
            return {name: ((k, mode), _truncated(dec, svds[name], k, mode, [seed, i, k], weights[name].shape))}

        res = curves(one, ks)
        out["layers"][name] = {"n_modes": dec.n_modes, "k": ks, **res, **_fits(ks, res, full_acc, full_loss)}

    widest = max(d.n_modes for d in decs.values())
    ks_all = k_grid(widest, points).tolist()

    def together(k: int, mode: str) -> dict:
        mods = {}
        for i, (name, dec) in enumerate(decs.items()):
            kl = max(1, math.ceil(k / widest * dec.n_modes - 1e-9))
            if kl < dec.n_modes:
                mods[name] = ((kl, mode), _truncated(dec, svds[name], kl, mode, [seed, i, kl], weights[name].shape))
        return mods

    res = curves(together, ks_all)
    out["all"] = {"k": ks_all, "fraction": [k / widest for k in ks_all], **res,
                  **_fits(ks_all, res, full_acc, full_loss)}
    return out


def _fits(ks: list[int], res: dict, full_acc: float, full_loss: float) -> dict:
    """Two-segment power laws of error(k) - error(full) and loss(k) - loss(full), leading modes."""
    err = full_acc - np.asarray(res["leading"]["acc"])  # (1 - acc(k)) - (1 - acc(full))
    dloss = np.asarray(res["leading"]["loss"]) - full_loss
    return {"fit_error": asdict(fit_two_segment_power_law(np.asarray(ks), err)),
            "fit_loss": asdict(fit_two_segment_power_law(np.asarray(ks), dloss))}


# --- reading the run ---------------------------------------------------------------------------

def find_run(run_id: str = "", experiment: str = "") -> Run:
    """The run to analyse: ``run_id``, or the latest FINISHED training run (tag dsc.kind=train).

    Without ``run_id`` the search covers ``experiment`` (a name), else the experiment named by
    MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID, else every experiment.
    """
    client = MlflowClient()
    if run_id:
        run = tracking.require_run(run_id)
        kind = tracking.run_kind(run) or "train"
        if kind != "train":
            raise TrackingError(f"run {run_id} is a {kind!r} run; analyze reads training runs "
                                f"({tracking.KIND_TAG}=train)")
        if run.info.status != "FINISHED":
            raise TrackingError(f"run {run_id} is {run.info.status}; analyze needs a FINISHED training run "
                                "(a failed or unfinished run has incomplete snapshots)")
        return run
    where = ""
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise TrackingError(f"--experiment {experiment!r}: no such experiment in the tracking store; "
                                "list them with `mlflow experiments search`")
        ids = [exp.experiment_id]
        where = f" in experiment {experiment!r}"
    elif os.environ.get("MLFLOW_EXPERIMENT_ID"):
        ids = [os.environ["MLFLOW_EXPERIMENT_ID"]]
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
        ids = [exp.experiment_id] if exp else []
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`{tracking.KIND_TAG}` = 'train' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1) if ids else []
    if not runs:
        raise TrackingError(f"no FINISHED training run{where}; train one with `dsc train`, "
                            "or pass --run-id")
    return runs[0]


@dataclass
class Source:
    """What analysis reads from a run."""

    run: Run
    snaps: snapshot.Snapshots
    history: dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (steps, values)
    checkpoint: dict

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def _last_checkpoint(run_id: str) -> dict:
    ckpts = tracking.list_checkpoints(run_id)
    if not ckpts:
        raise TrackingError(f"run {run_id} has no {tracking.CHECKPOINT_DIR}/ (no checkpoint); "
                            "analyze needs the final weights")
    path = ckpts[max(ckpts)]
    ckpt = tracking.load_checkpoint(run_id, path)
    missing = {"model_state", "model_config", "data_config", "classes"} - set(ckpt)
    if missing:
        raise TrackingError(f"checkpoint {path} of run {run_id} lacks {sorted(missing)}; "
                            "was it written by `dsc train`?")
    return ckpt


def read_source(run: Run) -> Source:
    """Download what analysis reads; TrackingError (one line) for what is missing."""
    client = MlflowClient()
    run_id = run.info.run_id
    snaps = tracking.load_snapshots(run_id)
    if not snaps.epochs:
        raise TrackingError(f"run {run_id} has snapshots/probe.npz but no epoch snapshots")
    history = {k: tracking.metric_history(run_id, k, client) for k in CURVES}
    if not history["acc/val"][0].size:
        raise TrackingError(f"run {run_id} has no acc/val metric; analyze reads runs made by `dsc train`")
    return Source(run, snaps, history, _last_checkpoint(run_id))


# --- the analysis ------------------------------------------------------------------------------

@dataclass
class Analysis:
    """Everything one analysis produces, before (and after) it is logged."""

    cfg: AnalyzeConfig
    src: Source
    out: Path  # local analysis/ directory
    sections: list[report.Section] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # logged onto the run at step 0
    wall_s: float = float("nan")  # seconds from reading the run to the last artifact logged
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # shared between steps
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards the dataset load

    @property
    def epochs(self) -> list[int]:
        return self.src.snaps.epochs

    @property
    def classes(self) -> list[str]:
        return list(self.src.snaps.classes)

    def curve(self, key: str, epochs: Any = None) -> np.ndarray:
        steps, values = self.src.history[key]
        return values if epochs is None else series_at(steps, values, epochs)

    def section(self, title: str, text: str = "") -> report.Section:
        self.sections.append(report.Section(title, text))
        return self.sections[-1]

    def figure(self, sec: report.Section, name: str, fig, caption: str) -> None:
        """Render ``fig`` once: the PNG goes to figures/ and, inline, into the report."""
        data = base64.b64decode(plots.to_base64_png(fig, dpi=DPI))
        fig.clear()
        path = self.out / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sec.images.append(report.Image(path.name, caption, data))


def _step_curves(a: Analysis) -> None:
    sec = a.section("Learning curves")
    steps = a.src.history["acc/val"][0]
    series = {k: a.curve(k, steps) for k in CURVES if a.src.history[k][0].size}
    a.figure(sec, "learning_curves", plots.learning_curves(steps, series, chance=1 / len(a.classes)),
             "accuracy and loss of the training and validation splits by epoch")
    a.summary["curves"] = {"epochs": steps, **series}


def _step_pca(a: Analysis) -> None:
    layer, snaps = a.cfg.layer, a.src.snaps
    tl = timeline.pca_timeline(snaps.activations(layer), a.cfg.n_components)
    a.cache["timeline"] = tl
    acc = a.curve("acc/val", a.epochs)
    sec = a.section(f"1. PCA timeline of {layer} (Figs 9, 10, 13)",
                    f"PCA of the {len(snaps.labels)} probe images' {layer} activations, fitted at each epoch.")
    a.figure(sec, "pca_timeline", plots.pca_timeline(a.epochs, tl.explained_variance, acc,
                                                     title=f"PCA timeline of {layer}"),
             "variance along each leading PC over epochs, validation accuracy on the right axis (Fig 13)")
    for tag, e in (("first", 0), ("last", len(a.epochs) - 1)):
        title = f"PCA of {layer} at epoch {a.epochs[e]} (accuracy {acc[e]:.2f})"
        a.figure(sec, f"pca_{tag}", plots.pca_scatter(tl.projections[e], snaps.labels, a.classes, title,
                                                      tl.explained_variance_ratio[e, :2]),
                 f"probe images on PC 1 and PC 2 at the {tag} snapshot (Fig {9 if tag == 'first' else 10})")
    a.figure(sec, "pca_grid", plots.pca_scatter_grid(tl.projections, snaps.labels, a.classes, a.epochs,
                                                     accuracy=acc),
             "the PCA plane at evenly spaced epochs, shared axes")
    from dsc.figures.animation import pca_gif

    gif = pca_gif(tl.projections, snaps.labels, a.classes, a.epochs, a.out / "figures" / "pca.gif", accuracy=acc)
    sec.images.append(report.Image(gif.name, "the PCA plane at every snapshot epoch", gif.read_bytes(), "image/gif"))
    a.summary["pca"] = {"layer": layer, "epochs": a.epochs, "explained_variance": tl.explained_variance,
                        "explained_variance_ratio": tl.explained_variance_ratio,
                        "total_variance": tl.total_variance}


def _step_emergence(a: Analysis) -> None:
    snaps = a.src.snaps
    em = timeline.class_emergence(a.cache["timeline"], snaps.labels, a.epochs, n_components=a.cfg.n_components)
    a.cache["emergence"] = em
    names = {int(c): a.classes[int(c)] for c in em.classes}
    sec = a.section("2. Class emergence (Fig 14)",
                    f"A class emerges at the first snapshot from which the mean silhouette of its probe "
                    f"points in the {a.cfg.n_components}-PC space stays >= {em.threshold:g} for "
                    f"{em.patience} snapshots (dsc.core.timeline.class_emergence).")
    sec.rows = {names[c]: em.epochs[c] for c in em.order}
    a.figure(sec, "emergence", plots.emergence(a.epochs, em.scores, a.classes, em.epochs, em.threshold, em.classes),
             "separation score of each class over epochs, emergence epochs dotted")
    for c, e in em.epochs.items():
        if e is not None:
            a.metrics[f"emergence/class_{names[c]}"] = float(e)
    a.summary["emergence"] = {"criterion": "mean silhouette in PC space", "threshold": em.threshold,
                              "patience": em.patience, "epochs": {names[c]: e for c, e in em.epochs.items()},
                              "order": [names[c] for c in em.order], "scores": em.scores}


def _step_change_point(a: Analysis) -> None:
    steps, acc = a.src.history["acc/val"]
    cp = timeline.change_point(acc, steps)
    a.cache["change_point"] = cp.epoch
    sec = a.section("3. Change point", "End of the latent phase of acc/val: the knot of a flat-then-rising "
                                      "hinge fitted up to the half-rise (dsc.core.timeline.change_point).")
    sec.rows = {"transition epoch": cp.epoch, "onset": cp.onset, "rise": cp.rise, "noise sd": cp.noise}
    a.figure(sec, "change_point", plots.change_point(steps, acc, cp.epoch, chance=1 / len(a.classes)),
             "validation accuracy, latent phase shaded")
    if cp.epoch is not None:
        a.metrics["transition_epoch"] = float(cp.epoch)
    a.summary["change_point"] = {"metric": "acc/val", **asdict(cp)}


def _dataset(a: Analysis):
    """The run's images, rebuilt from the checkpoint's data config (cached); DataError if not."""
    with a.lock:
        return _dataset_unlocked(a)


def _dataset_unlocked(a: Analysis):
    if "imageset" not in a.cache:
        from dsc.data.dataset import load_imageset
        from dsc.settings import DataConfig

        cfg = DataConfig(**a.src.checkpoint["data_config"])
        ims = load_imageset(cfg)
        digest = a.src.run.data.params.get("data_digest")
        if digest and ims.digest() != digest:
            raise DataError(f"the dataset rebuilt from {cfg.data!r} differs from the one trained on "
                            f"(digest {ims.digest()} != {digest})")
        if a.src.snaps.indices.max(initial=0) >= len(ims.labels) or \
                (ims.labels[a.src.snaps.indices] != a.src.snaps.labels).any():
            raise DataError(f"the dataset rebuilt from {cfg.data!r} does not match the run's probe labels")
        a.cache["imageset"] = (cfg, ims)
    return a.cache["imageset"]


def _skip(a: Analysis, sec: report.Section, key: str, exc: Exception) -> None:
    sec.note = f"skipped: {exc}"
    a.summary[key] = {"skipped": str(exc)}
    tqdm.write(f"warning: {sec.title}: skipped: {exc}", file=sys.stderr)


def _step_inputs(a: Analysis) -> None:
    sec = a.section("4. Variance maps and each class's leading feature (Figs 15, 16)")
    try:
        _, ims = _dataset(a)
    except DataError as exc:
        return _skip(a, sec, "inputs", exc)
    maps = []
    for c in range(len(a.classes)):
        imgs = ims.images[ims.labels == c].astype(np.float32) / 255.0  # (N_c, C, H, W)
        maps.append(imgs.var(axis=0).mean(axis=0))  # (H, W), channels averaged
    maps = np.stack(maps)
    a.figure(sec, "variance_maps", plots.variance_maps(maps, a.classes),
             "pixel-wise variance across all exemplars of each class (intensity in [0, 1])")
    snaps, em = a.src.snaps, a.cache["emergence"]
    rows, tops, features = {}, [], {}
    for c, name in enumerate(a.classes):
        epoch = em.epochs.get(c)
        at = epoch if epoch is not None else a.epochs[-1]
        unit, r = leading_feature(snaps.by_epoch[at].activations[a.cfg.layer], snaps.labels, c)
        acts = snaps.by_epoch[at].activations[a.cfg.layer].reshape(len(snaps.labels), -1)
        order = np.argsort(-acts[:, unit].astype(np.float64), kind="stable")[:a.cfg.top_k] if unit is not None \
            else np.arange(min(a.cfg.top_k, len(snaps.labels)))
        picked = ims.images[snaps.indices[order]].astype(np.float32) / 255.0  # (k, C, H, W)
        tops.append(picked[:, 0] if picked.shape[1] == 1 else picked.transpose(0, 2, 3, 1))
        features[name] = {"epoch": at, "emerged": epoch is not None, "unit": unit, "correlation": r,
                          "top_indices": snaps.indices[order], "top_labels": snaps.labels[order]}
        rows[name] = f"unit {unit} (r = {r:.2f}) at epoch {at}{'' if epoch is not None else ' (never emerged: last)'}"
    sec.rows = rows
    a.figure(sec, "top_inputs", plots.top_inputs(np.stack(tops), a.classes,
                                                 title=f"Probe inputs that most activate each class's leading "
                                                       f"{a.cfg.layer} unit at its emergence epoch"),
             f"per class, the {a.cfg.layer} unit most correlated with the class indicator at its emergence "
             "epoch, and the probe images that drive it hardest")
    a.summary["inputs"] = {"variance_mean": dict(zip(a.classes, maps.mean(axis=(1, 2)))),
                           "variance_max": dict(zip(a.classes, maps.max(axis=(1, 2)))),
                           "leading_features": features}


def _step_similarity(a: Analysis) -> None:
    snaps = a.src.snaps
    cka = snaps.cka()  # (E, L, L)
    corr = snaps.corr()
    pairs = {f"{x}-{y}": cka[:, i, i + 1] for i, (x, y) in enumerate(zip(snaps.layers, snaps.layers[1:]))}
    cp = a.cache.get("change_point")
    sec = a.section("5. Layer similarity (Fig 17)", "Pearson correlation of successive layers of one shape, "
                                                   "and linear CKA of successive layers, over epochs.")
    a.figure(sec, "corr_successive", plots.layer_similarity(a.epochs, corr, "Pearson correlation", cp),
             "correlation between successive layers' activations over epochs (Fig 17)")
    a.figure(sec, "cka_successive", plots.layer_similarity(a.epochs, pairs, "linear CKA", cp,
                                                           title="CKA of successive layers over epochs"),
             "linear CKA between successive layers over epochs")
    for tag, e in (("first", 0), ("last", -1)):
        a.figure(sec, f"cka_{tag}", plots.cka_heatmap(cka[e], snaps.layers,
                                                      title=f"Linear CKA between layers, epoch {a.epochs[e]}"),
                 f"CKA of every pair of layers at the {tag} snapshot")
    first, last = near_layers_summary(cka[0]), near_layers_summary(cka[-1])
    sec.rows = {"near layers more alike (last epoch)": last["near_more_alike"],
                "slope of mean CKA per layer of distance (last)": last["slope"],
                **{f"mean CKA at distance {d} (last)": v for d, v in zip(last["distance"], last["mean_cka"])}}
    a.summary["similarity"] = {"layers": snaps.layers, "corr": corr, "cka_successive": pairs,
                               "cka_first": cka[0], "cka_last": cka[-1],
                               "by_distance_first": first, "by_distance_last": last}


def _step_spectra(a: Analysis) -> None:
    snaps = a.src.snaps
    alpha = snaps.spectral("alpha")
    phases = snaps.phases()
    sec = a.section("6. Weight spectra over epochs", "Power-law exponent of each layer's ESD tail and "
                                                     "Martin & Mahoney's phase, per epoch.")
    a.figure(sec, "alpha", plots.spectra_over_epochs(a.epochs, alpha), "alpha of each layer over epochs")
    a.figure(sec, "phases", plots.phase_heatmap(a.epochs, snaps.layers, phases, PHASES),
             "spectral phase of each layer over epochs")
    shapes = {n: tuple(m.weight.shape[:2]) for n, m in named_layers(a.cache["model"]).items()}
    picks = pick_esd_epochs(a.epochs, a.cfg.esd_epochs, a.cache.get("change_point"))
    # A Marchenko-Pastur bulk says little about a 3 x 3 kernel slice: the histograms show the
    # layers at least ESD_MIN_SIDE wide both ways (the widest ones in a smaller network); every
    # layer's fit is in the summary.
    side = {n: min(shapes.get(n, (0, 0))) for n in snaps.layers}
    shown = [n for n in snaps.layers if side[n] >= min(ESD_MIN_SIDE, max(side.values()))]
    esd, panels = {}, []
    for e in picks:
        esd[e] = {}
        for layer in snaps.layers:
            ev = np.asarray(snaps.by_epoch[e].eigenvalues[layer], dtype=np.float64)
            n, m = shapes.get(layer, (len(ev), len(ev)))
            sigma2, lo, hi = fit_mp(ev, n, m) if ev.size else (0.0, 0.0, 0.0)
            share = float((ev <= hi).mean()) if ev.size else float("nan")
            esd[e][layer] = {"sigma2": sigma2, "lambda_minus": lo, "lambda_plus": hi, "bulk_share": share}
            if layer not in shown:
                continue
            mx = md = None
            if sigma2 > 0 and hi > lo:
                mx = np.linspace(max(lo, hi * 1e-4), hi, 200)
                md = share * mp_density(mx, max(n, m) / min(n, m), sigma2, max(n, m))  # bulk share of the ESD
            panels.append((f"{layer}, epoch {e}", ev, mx, md, hi if sigma2 > 0 else None))
    a.figure(sec, "esd", plots.esd_grid(panels, ncols=len(shown), title="Empirical spectral densities "
                                        f"at epochs {', '.join(map(str, picks))}"),
             "eigenvalues of W^T W with the fitted Marchenko-Pastur bulk (scaled to the bulk's share), one row "
             "per epoch (first, transition, last by default)")
    a.summary["spectra"] = {"layers": snaps.layers, "alpha": alpha,
                            **{k: snaps.spectral(k) for k in ("num_spikes", "stable_rank", "lambda_max")},
                            "phases": dict(zip(snaps.layers, phases.tolist())), "esd_epochs": picks,
                            "esd_layers_shown": shown, "esd": esd}


def _validation_subset(a: Analysis) -> tuple[torch.Tensor, torch.Tensor]:
    from dsc.data.dataset import split_indices

    cfg, ims = _dataset(a)
    _, val = split_indices(ims.labels, cfg.val_fraction, cfg.data_seed)
    idx = stratified_subset(val, ims.labels, a.cfg.modes_max_images, a.cfg.seed)
    ck = a.src.checkpoint
    x = (torch.from_numpy(ims.images[idx]).float() / 255.0 - float(ck["norm_mean"])) / float(ck["norm_std"])
    in_channels = ModelConfig(**ck["model_config"]).in_channels
    if x.shape[1] == 1 and in_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(ims.labels[idx])


def _step_modes(a: Analysis) -> None:
    sec = a.section("7. Hierarchical modes of the final weights (Li & Huang)",
                    "Each weight layer is replaced by its k leading singular modes (one layer at a time, the "
                    "others full; then every layer at the same fraction of its modes), against k modes drawn "
                    "at random; validation accuracy and loss on a stratified validation subset.")
    try:
        res = a.cache["modes"].result()
    except DataError as exc:
        return _skip(a, sec, "modes", exc)
    k, chance = res["k"], 1 / len(a.classes)
    for metric, label in (("acc", plots.ACC), ("loss", plots.METRIC_LABELS["loss"])):
        series = {}
        for name, r in res["layers"].items():
            for mode in ("leading", "random"):
                vals = dict(zip(r["k"], r[mode][metric]))
                series[f"{name}/{mode}"] = [vals.get(kk, np.nan) for kk in k]  # NaN beyond its modes
        line = chance if metric == "acc" else None
        a.figure(sec, f"modes_{metric}_layers",
                 plots.modes_curves(k, series, label, chance=line,
                                    title=f"One layer at a time: {metric} with k singular modes kept"),
                 f"validation {metric} with k modes of one layer (solid: leading, dashed: random)")
        both = {f"all/{m}": res["all"][m][metric] for m in ("leading", "random")}
        a.figure(sec, f"modes_{metric}_all",
                 plots.modes_curves(res["all"]["k"], both, label, chance=line,
                                    title="All layers at once (k of the widest layer, same fraction elsewhere)"),
                 f"validation {metric} with the same fraction of every layer's modes kept")
    rows = {"full model (accuracy, loss)": f"{res['full']['acc']:.3f}, {res['full']['loss']:.3f}",
            "images": res["n_images"]}
    for name, r in [*res["layers"].items(), ("all", res["all"])]:
        fit = r["fit_error"]
        if not fit["success"]:
            rows[f"{name}: power law"] = fit["message"]
            continue
        rows[f"{name}: breakpoint k, slopes"] = \
            f"{fit['breakpoint']:.3g}, {fit['slope_1']:.2f} then {fit['slope_2']:.2f}"
        err = res["full"]["acc"] - np.asarray(r["leading"]["acc"])
        a.figure(sec, f"modes_fit_{name}",
                 plots.power_law_fit(r["k"], err, fit, ylabel="error(k) − error(full)",
                                     title=f"{name}: two-segment power law"),
                 f"{name}: error increase against k leading modes, two-segment power law and breakpoint")
    sec.rows = rows
    a.summary["modes"] = res


def _step_lld(a: Analysis) -> None:
    steps, acc = a.src.history["acc/val"]
    sel = lld_select(steps, acc, max_components=a.cfg.lld_components)
    sec = a.section("8. Logistic learning decomposition (Figs 11, 12)",
                    f"acc/val fitted by a constant plus N logistic components, N = 1..{a.cfg.lld_components}; "
                    f"N chosen by BIC: {sel.reason}")
    sec.rows = {f"N = {n}: R²": f.r2 for n, f in sel.fits.items()} | {"chosen N": sel.n}
    runs = [{"label": f"{n} logistic{'s' if n > 1 else ''}", "t": f.t, "y": f.y, "curve": f.curve,
             "component_curves": f.component_curves, "constant": f.constant, "r2": f.r2}
            for n, f in sel.fits.items() if f.success]
    a.figure(sec, "lld_components", plots.lld_overlay(runs, title="1, 2 and 3 logistic components"),
             "the learning curve fitted with 1, 2 and 3 logistic components, R² in each title")
    b = sel.best
    a.figure(sec, "lld_best", plots.lld_fit(b.t, b.y, b.curve, b.component_curves, b.constant,
                                            title=f"Logistic learning decomposition, N = {sel.n}", r2=b.r2),
             "the chosen decomposition and its components (Figs 11, 12)")
    a.summary["lld"] = {"metric": "acc/val", "r2": {str(n): f.r2 for n, f in sel.fits.items()}, **sel.to_dict()}


def _modes_in_background(a: Analysis, stop: threading.Event) -> dict:
    """The modes sweep (torch, which releases the GIL): runs while the main thread plots."""
    t0 = time.perf_counter()
    x, y = _validation_subset(a)
    model = copy.deepcopy(a.cache["model"]).to(memory_format=torch.channels_last)
    res = mode_sweep(model, x, y, a.cfg.modes_points, a.cfg.seed, stop)
    a.timings["modes_background"] = time.perf_counter() - t0
    return res


def _step_load_model(a: Analysis) -> None:
    ck = a.src.checkpoint
    model = build_model(ModelConfig(**ck["model_config"]))
    model.load_state_dict(ck["model_state"])
    a.cache["model"] = model.eval()


STEPS: list[tuple[str, Callable[[Analysis], None]]] = [
    ("model", _step_load_model), ("curves", _step_curves), ("pca", _step_pca),
    ("emergence", _step_emergence), ("change_point", _step_change_point), ("inputs", _step_inputs),
    ("similarity", _step_similarity), ("spectra", _step_spectra), ("modes", _step_modes), ("lld", _step_lld),
]


def _header(src: Source) -> tuple[dict, dict, dict]:
    info = src.run.info
    run = {"run id": info.run_id, "run name": info.run_name, "experiment id": info.experiment_id,
           "status": info.status, "epochs": f"{src.snaps.epochs[0]}..{src.snaps.epochs[-1]}",
           "classes": ", ".join(src.snaps.classes), "probe images": len(src.snaps.labels)}
    keep = ("acc/", "loss/", "best/")
    metrics = {k: v for k, v in sorted(src.run.data.metrics.items()) if k.startswith(keep)}
    return run, dict(sorted(src.run.data.params.items())), metrics


def _validate(a: Analysis) -> None:
    """Option checks against the run, before any work starts."""
    if a.cfg.layer not in a.src.snaps.layers:
        raise ConfigError(f"--layer {a.cfg.layer!r}: not in the snapshots; choose one of {a.src.snaps.layers}")
    pick_esd_epochs(a.epochs, a.cfg.esd_epochs, None)


def run_analysis(src: Source, cfg: AnalyzeConfig, out: Path) -> Analysis:
    """Compute every step into ``out`` (figures/, summary.json, report.html); logs nothing.

    The modes sweep (torch) runs in a background thread from the start, on all but one of
    torch's threads, while the other steps (NumPy, one BLAS thread, and matplotlib) run here:
    on two cores the two halves overlap. One BLAS thread also avoids the oversubscription
    that costs 10-20x on a busy machine for these many small products.
    """
    a = Analysis(cfg, src, out)
    _validate(a)
    bar = tqdm(STEPS, desc="analyze", unit="step", disable=not cfg.progress)
    threads, switch, stop = torch.get_num_threads(), sys.getswitchinterval(), threading.Event()
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(1, "dsc-modes") as pool:
        torch.set_num_threads(max(1, threads - 1))
        # The modes thread needs the GIL between torch ops, thousands of times; while the main
        # thread plots (pure Python) each handover waits out the switch interval (5 ms).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            for name, step in bar:
                bar.set_postfix_str(name)
                t0 = time.perf_counter()
                step(a)
                a.timings[name] = time.perf_counter() - t0
                if name == "model":
                    a.cache["modes"] = pool.submit(_modes_in_background, a, stop)
        except BaseException:
            stop.set()
            raise
        finally:
            torch.set_num_threads(threads)
            sys.setswitchinterval(switch)
    run, params, metrics = _header(src)
    metrics |= a.metrics
    a.summary = {"run_id": src.run_id, "config": asdict(cfg), "layer": cfg.layer, "epochs": a.epochs,
                 "classes": a.classes, "params": params, "final_metrics": metrics, **a.summary,
                 "logged_metrics": a.metrics,
                 "figures": sorted(p.name for p in (out / "figures").iterdir()), "timings": a.timings}
    (out / "summary.json").write_text(json.dumps(jsonable(a.summary), indent=1, allow_nan=False))
    title = f"Analysis of run {src.run.info.run_name or src.run_id}"
    (out / "report.html").write_text(report.render(title, run, params, metrics, a.sections), encoding="utf-8")
    return a


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
        client.log_artifacts(src.run_id, tmp, ARTIFACT_DIR)
        stamp = int(time.time() * 1000)
        client.log_batch(src.run_id, metrics=[Metric(k, v, stamp, 0) for k, v in a.metrics.items()])
        a.timings = {"read": read_s, **a.timings, "log": time.perf_counter() - t1}
        a.wall_s = time.perf_counter() - t0
    wrapper = os.environ.get("MLFLOW_RUN_ID")
    if wrapper and wrapper != src.run_id:  # `mlflow run -e analyze` made a run of its own: say what it did
        client.set_tag(wrapper, tracking.KIND_TAG, "analyze")
        client.set_tag(wrapper, "dsc.analyzed_run", src.run_id)
    return a
