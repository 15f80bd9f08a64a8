"""``dsc compare``'s per-class side: each class's curve decomposed from the metric history alone.

For every compared run, each class's curve (``prob_class/<name>`` with ``--class-curve prob``,
the default, or ``acc_class/<name>`` with ``recall``) is fitted like the run's own curve
(:func:`dsc.core.lld.batch.fit_curve`, N = 1..K by BIC), so runs trained without snapshots
have per-class results. From those fits come the two predictors of the run's N
(:mod:`dsc.core.class_groups`): the class-weighted sum of the per-class fitted curves, sampled
on the run's epochs with the run's own residual noise scaled to the sum's range, and the
classes' main rises grouped in time (``--cluster-factor`` widths). Classes weigh equally (the
validation split holds the same share of every class of the synthetic faces and Yale B).

Each source run the user may edit gets (step 0) ``lld_class/<name>/n_components`` and, per
component k of the chosen fit, ``lld_class/<name>/center_<k>``, ``.../width_<k>``,
``.../amplitude_<k>`` (the names ``dsc analyze`` writes), ``lld/n_from_classes`` and
``lld/class_clusters``.
The comparison run gets ``lld/classes.json`` (per run: the class curve, each class's N and
main rise, the groups, both predictors and the observed N) and, for each predictor,
``lld/agree/<predictor>/share_equal``, ``.../rho`` and ``.../p`` (Spearman) against the
observed N; with ``--group-by``, ``groups/agreement.json`` holds the same per group.

Public API: :data:`CURVE_PREFIX`, :func:`class_names`, :func:`fit_and_write_back`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from dsc import tracking
from dsc.core import class_groups, groups
from dsc.core.jsonsafe import jsonable
from dsc.core.lld import batch as lld_batch
from dsc.settings import CompareConfig

CURVE_PREFIX = {"prob": "prob_class/", "recall": "acc_class/"}
PREDICTORS = ("n_from_classes", "class_clusters")
_FIELDS = ("center", "width", "amplitude")


def class_names(run: Run, curve: str) -> list[str]:
    """The classes a run logged a ``curve`` ("prob" or "recall") metric for, sorted."""
    prefix = CURVE_PREFIX[curve]
    return sorted(k[len(prefix) :] for k in run.data.metrics if k.startswith(prefix))


def fit_and_write_back(
    client: MlflowClient,
    runs: Sequence[Run],
    fits: Sequence[dict[str, Any]],
    config: CompareConfig,
    pool: ProcessPoolExecutor | None,
    writable: set[str] | None = None,
) -> list[dict[str, float]]:
    """Fit every class curve of every run, log the results (see the module docstring).

    Parameters
    ----------
    runs, fits : the compared runs and their :func:`dsc.core.lld.batch.fit_curve` results.
    config : the comparison's settings (``class_curve``, ``cluster_factor``, ``max_components``).
    pool : the comparison's worker pool, or None to fit here.
    writable : the runs whose results are logged onto them (default: all).

    Returns
    -------
    Per run, the metrics written back to it (empty for a run without class curves), for the
    grouped table.
    """
    prefix = CURVE_PREFIX[config.class_curve]
    names = [class_names(run, config.class_curve) for run in runs]
    keys = [(i, name) for i, run_names in enumerate(names) for name in run_names]
    curves = ((k, *_curve(client, runs[i].info.run_id, prefix + name)) for k, (i, name) in enumerate(keys))
    class_fits: list[dict[str, dict[str, Any]]] = [{} for _ in runs]
    for k, fit in lld_batch.fit_stream(curves, len(keys), config.max_components, pool):
        i, name = keys[k]
        class_fits[i][name] = fit
    stamp = get_current_time_millis()
    per_run, written = [], []
    for run, fit, by_class in zip(runs, fits, class_fits):
        result = _predict(fit, {n: by_class[n] for n in sorted(by_class)}, config)
        metrics = _source_metrics(result, by_class)
        if metrics and (writable is None or run.info.run_id in writable):
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()])
        per_run.append({"run_id": run.info.run_id, **result})
        written.append(metrics)
    _log_comparison(runs, per_run, config)
    return written


def _curve(client: MlflowClient, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = tracking.metric_history(run_id, key, client)
    return steps.astype(float), values


def _predict(fit: dict[str, Any], by_class: dict[str, dict[str, Any]], config: CompareConfig) -> dict[str, Any]:
    """One run's per-class results and both predictors (NaN where there is no class curve)."""
    observed = float(fit["n"]) if fit["n"] == 0 or fit["fits"][fit["n"] - 1]["success"] else math.nan
    out: dict[str, Any] = {
        "class_curve": config.class_curve,
        "observed_n": observed,
        "n_from_classes": math.nan,
        "class_clusters": math.nan,
        "groups": [],
        "classes": {},
    }
    if not by_class:
        return out
    rises = {name: class_groups.main_rise(f) for name, f in by_class.items()}
    clusters = class_groups.class_clusters(rises, config.cluster_factor)
    out["groups"], out["class_clusters"] = clusters, float(len(clusters))
    out["classes"] = {name: {"n": f["n"], "main_rise": rises[name]} for name, f in by_class.items()}
    picked = {name: _chosen(f) for name, f in by_class.items()}
    chosen = {name: c for name, c in picked.items() if c is not None}
    t = np.asarray(fit["curve"]["t"], dtype=float)
    if t.size < 2 or len(chosen) < len(picked):
        return out
    summed = class_groups.summed_curve(
        t,
        {n: c["components"] for n, c in chosen.items()},
        {n: c["constant"] for n, c in chosen.items()},
        dict.fromkeys(chosen, 1.0),
    )
    out["n_from_classes"] = float(class_groups.n_from_classes(t, summed, _noise_sd(fit, summed), config.max_components))
    return out


def _chosen(fit: dict[str, Any]) -> dict[str, Any] | None:
    """The chosen fit's constant and components; for N = 0 the curve's constant alone; None: no fit."""
    if not fit["n"]:
        return {"constant": fit["curve"]["constant"], "components": []}
    best = fit["fits"][fit["n"] - 1]
    return best if best["success"] else None


def _noise_sd(fit: dict[str, Any], summed: np.ndarray) -> float:
    """The run's residual sd about its chosen fit, scaled by the sum's range over the curve's."""
    y, curve = np.asarray(fit["curve"]["y"], dtype=float), np.asarray(fit["curve"]["curve"], dtype=float)
    ok = np.isfinite(y) & np.isfinite(curve)
    if not ok.any() or np.ptp(y[ok]) == 0:
        return 0.0
    sd = float(np.sqrt(np.mean((y[ok] - curve[ok]) ** 2)))
    return sd * float(np.ptp(summed)) / float(np.ptp(y[ok]))


def _source_metrics(result: dict[str, Any], by_class: dict[str, dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, fit in by_class.items():
        best = _chosen(fit)
        if best is None:
            continue
        values[f"lld_class/{name}/n_components"] = float(fit["n"])
        for k, comp in enumerate(best["components"], start=1):
            values |= {f"lld_class/{name}/{field}_{k}": float(comp[field]) for field in _FIELDS}
    values |= {f"lld/{p}": result[p] for p in PREDICTORS}
    return {k: v for k, v in values.items() if math.isfinite(v)}


def _agreement(per_run: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    observed = [r["observed_n"] for r in per_run]
    return {p: vars(class_groups.agreement([r[p] for r in per_run], observed)) for p in PREDICTORS}


def _log_comparison(runs: Sequence[Run], per_run: list[dict[str, Any]], config: CompareConfig) -> None:
    overall = _agreement(per_run)
    mlflow.log_dict(
        jsonable(
            {
                "class_curve": config.class_curve,
                "cluster_factor": config.cluster_factor,
                "agreement": overall,
                "runs": per_run,
            }
        ),
        "lld/classes.json",
    )
    metrics = {
        f"lld/agree/{p}/{key}": a[key]
        for p, a in overall.items()
        for key in ("share_equal", "rho", "p")
        if math.isfinite(a[key])
    }
    mlflow.log_metrics(metrics, step=0)
    if config.group_by:
        keyed = groups.group([r.data.params for r in runs], config.group_by)
        by_group = {
            " ".join(f"{n}={v}" for n, v in zip(config.group_by, key)): _agreement([per_run[i] for i in members])
            for key, members in keyed.items()
        }
        mlflow.log_dict(jsonable({"all runs": overall, **by_group}), "groups/agreement.json")


__all__ = ["CURVE_PREFIX", "PREDICTORS", "class_names", "fit_and_write_back"]
