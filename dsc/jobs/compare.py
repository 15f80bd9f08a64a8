"""Compare tracked runs: the logistic learning decomposition of one metric across runs.

The step after training. Runs are chosen by experiment names, an MLflow filter string and/or
run ids: any FINISHED run with the metric, whoever logged it (``--dsc-only``: runs of ``dsc
train`` and ``dsc.Recorder`` alone, tag ``dsc.kind = train``; dsc's comparison, analysis and
snapshot runs are never taken). One metric's history (at the steps it was logged at: the epoch
for dsc's runs) is read from each, N = 1..K logistic components are fitted to
every curve in worker processes (:mod:`dsc.core.lld.batch`, N chosen by BIC), and a new
comparison run (tag ``dsc.kind = compare``) gets

- ``lld/table.csv``, ``lld/table.json``: one row per run and N: R², AIC, BIC, the chosen
  flag, the run's chosen N (``chosen_n``; 0 and ``no_process`` true when the constant alone
  wins by BIC: the curve has no learning process, and no row is chosen), each component's
  amplitude/center/width with standard errors, the fit's message (why no fit was made: too
  few points, a flat curve), why N was chosen, the run's params (``param.<name>``);
- ``lld/overlay.png`` (curves and fitted components), ``lld/centers_widths.png`` (the chosen
  fits' components across runs, coloured by a param), ``lld/variance_explained.png`` (R² of
  one and of two logistics);
- ``lld/runs.json``: the compared run ids and the skipped ones with the reason;
- metrics ``lld/n_runs``, ``lld/n_fitted``, ``lld/mean_r2_<N>``, ``lld/mean_n_components``,
  ``lld/n_chose_<N>`` and ``lld/n_no_process`` (runs whose curve has no learning process);
- with ``--group-by``: the runs grouped by params, seeds as replicates (:mod:`dsc.jobs.compare_groups`);
- each class's curve decomposed and two predictors of N from them (:mod:`dsc.jobs.compare_classes`).

Each source run gets ``lld/n_components`` (0: no learning process), ``lld/r2_<N>`` and, for the chosen N,
``lld/constant``, ``lld/amplitude_<i>``, ``lld/center_<i>``, ``lld/width_<i>`` (step 0), so
that MLflow's run comparison shows them side by side (on a server with auth, only the runs
whose experiment the user may edit; a warning names the others). They describe the metric of
the latest comparison that took the run (its ``metric`` param): a later one with another
metric, or fewer components, replaces the values it logs and leaves the others. Its tag
``dsc.lld.comparison``, set first, names that comparison: they are complete once it is FINISHED.

Histories are read, fitted and written back as a pipeline: a chunk of curves goes to the
worker pool as soon as it is read, and each chunk's results are logged while later chunks fit;
the figures are drawn in the pool too, while the table is written.

Public API: :class:`CompareConfig`, :func:`compare_job`, :func:`select_runs`, :func:`read_curve`,
:func:`table_rows`; the fitting itself is :func:`dsc.core.lld.batch.fit_curves`.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from dsc import tracking
from dsc.core.lld import batch as lld_batch
from dsc.errors import TrackingError
from dsc.jobs import compare_classes, compare_figures, compare_groups, stages
from dsc.jobs.compare_figures import chosen
from dsc.settings import CompareConfig

ARTIFACT_DIR = "lld"
WRITTEN_BY_TAG = "dsc.lld.comparison"  # on a compared run: the comparison whose lld/* it holds
_SEARCH_PAGE = 10_000
_FIELDS = ("amplitude", "center", "width")


def compare_job(config: CompareConfig, warn: Callable[[str], None] | None = None) -> str:
    """Decompose ``config.metric`` of the chosen runs; log a comparison run; return its id.

    Runs are chosen before the comparison run is created, so a selection that finds nothing
    leaves no run behind; anything failing later marks the comparison run FAILED.

    Parameters
    ----------
    config : CompareConfig
    warn : callable, optional
        Receives one line per warning (runs skipped from a search, a missing colour param);
        default: printed to stderr.

    Raises
    ------
    TrackingError
        No run to compare, an unknown experiment, an invalid filter, or a named run that is
        missing, not FINISHED, not a training run, or lacks the metric.
    """
    warn = warn or _print_warning
    client = MlflowClient()
    runs, skipped = select_runs(client, config)
    if skipped:
        warn(_skipped_line(skipped))
    compare_groups.check_params(runs, config.group_by)
    if not any(config.color_by in r.data.params for r in runs):
        warn(
            f"no compared run has the param {config.color_by!r}: the centre/width scatter is "
            "not coloured; choose another with --color-by"
        )
    writable, read_only = tracking.editable([r.info.run_id for r in runs])
    if read_only:
        warn(_read_only_line(read_only))
    home = config.experiments[0] if config.experiments else ""
    with tracking.run_context(home, run_name=f"lld-{len(runs)}-runs", tags={tracking.KIND_TAG: "compare"}) as run:
        tracking.log_params_once(config.params())
        with lld_batch.workers(config.jobs, len(runs)) as pool:
            fits = _fit_and_write_back(client, runs, config, pool, set(writable), run.info.run_id)
            by_class = compare_classes.fit_and_write_back(client, runs, fits, config, pool, set(writable))
            _log_comparison(runs, fits, skipped, config, pool)
        if config.group_by:
            mlflow.log_metrics(
                compare_groups.log_groups(
                    runs, fits, config.group_by, config.metric, config.max_components, warn, by_class
                ),
                step=0,
            )
        _warn_unfitted(runs, fits, warn)
        return run.info.run_id


# --------------------------------------------------------------------------- choosing runs


def select_runs(client: MlflowClient, config: CompareConfig) -> tuple[list[Run], dict[str, str]]:
    """The runs to compare, in order (named ones first), and ``{run_id: reason}`` skipped.

    A search (experiments and/or filter; with neither and no run ids, every experiment) keeps
    FINISHED runs that have the metric (only dsc's training runs with ``dsc_only``) and skips
    the others, dsc's own runs of other kinds included; a named run that does not qualify is
    an error.
    """
    runs = {rid: _named_run(client, rid, config.metric) for rid in config.run_ids}
    skipped: dict[str, str] = {}
    if config.experiments or config.filter_string or not config.run_ids:
        for run in _search(client, config):
            rid = run.info.run_id
            if rid in runs or tracking.run_kind(run) not in (None, "train"):
                continue  # dsc's own comparison, analysis and snapshot runs are never candidates
            reason = _unusable(run, config.metric)
            if reason:
                skipped[rid] = reason
            else:
                runs[rid] = run
    if not runs:
        raise TrackingError(_nothing_found(config, skipped))
    return list(runs.values()), skipped


def _unusable(run: Run, metric: str) -> str | None:
    """Why a searched run is skipped, or None."""
    if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
        return run.info.status
    if metric not in run.data.metrics:
        return f"no metric {metric!r}"
    return None


def _named_run(client: MlflowClient, run_id: str, metric: str) -> Run:
    run = tracking.require_run(run_id)
    info, kind = run.info, tracking.run_kind(run)
    if info.lifecycle_stage != "active":
        raise TrackingError(
            f"run {run_id} is deleted; restore it with `mlflow runs restore --run-id {run_id}` or leave it out"
        )
    if info.status != RunStatus.to_string(RunStatus.FINISHED):
        raise TrackingError(
            f"run {run_id} is {info.status}, not FINISHED: only finished "
            "training runs are compared; leave it out or train it again"
        )
    if kind is not None and kind != "train":
        raise TrackingError(
            f"run {run_id} is a {kind!r} run (tag {tracking.KIND_TAG}), not a training run; name training runs only"
        )
    if metric not in run.data.metrics:
        names = sorted(run.data.metrics)
        have = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "") or "none"
        raise TrackingError(
            f"run {run_id} has no metric {metric!r} (it has: {have}); choose one with --metric or leave the run out"
        )
    return run


def _search(client: MlflowClient, config: CompareConfig) -> list[Run]:
    ids = [_experiment_id(client, name) for name in config.experiments]
    if not ids:
        ids = [e.experiment_id for e in mlflow.search_experiments(ViewType.ACTIVE_ONLY)]
    query = " and ".join(
        filter(None, [f"tags.`{tracking.KIND_TAG}` = 'train'" if config.dsc_only else "", config.filter_string])
    )
    runs: list[Run] = []
    token: str | None = None
    try:
        while True:
            page = client.search_runs(
                ids, query, ViewType.ACTIVE_ONLY, _SEARCH_PAGE, order_by=["attributes.start_time ASC"], page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs
    except MlflowException as exc:
        if not config.filter_string or exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise TrackingError(
            f"invalid --filter {config.filter_string!r}: {exc.message.splitlines()[0]} "
            "(syntax: params.lr = '0.01' and metrics.`acc/val` > 0.5; back-quote names with '/')"
        ) from None


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        raise TrackingError(
            f"no experiment named {name!r} in {mlflow.get_tracking_uri()}; list them with `mlflow experiments search`"
        )
    return exp.experiment_id


def _nothing_found(config: CompareConfig, skipped: dict[str, str]) -> str:
    where = f"experiment(s) {', '.join(config.experiments)}" if config.experiments else "any experiment"
    if config.filter_string:
        where += f" with filter {config.filter_string!r}"
    which = f"training run (tag {tracking.KIND_TAG} = train)" if config.dsc_only else "run"
    line = f"no runs to compare: no FINISHED {which} with metric {config.metric!r} in {where}"
    if skipped:
        line += f"; {_skipped_line(skipped)}"
    return line + "; train some with `dsc train` (or record them with dsc.Recorder), or widen the selection"


def _skipped_line(skipped: dict[str, str], shown: int = 10) -> str:
    items = [f"{rid} ({why})" for rid, why in list(skipped.items())[:shown]]
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} run(s) of the search: {', '.join(items)}{more}"


def _read_only_line(ids: list[str], shown: int = 5) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    line = f"not writing lld/* back to {len(ids)} run(s) whose experiment you may not edit: {', '.join(ids[:shown])}"
    return f"{line}{more}; the comparison run records their results"


def _warn_unfitted(runs: list[Run], fits: list[dict[str, Any]], warn: Callable[[str], None]) -> None:
    unfitted = {
        r.info.run_id: f["fits"][0]["message"]
        for r, f in zip(runs, fits)
        if f["n"] and not f["fits"][f["n"] - 1]["success"]
    }
    if unfitted:
        warn(
            f"no logistic fit for {len(unfitted)} run(s), see lld/table.csv: "
            + ", ".join(f"{rid} ({why})" for rid, why in list(unfitted.items())[:10])
        )


def _print_warning(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- reading, writing back


def read_curve(client: MlflowClient, run_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """A metric's history as float ``(steps, values)``, shape (n,) (see ``tracking.metric_history``)."""
    steps, values = tracking.metric_history(run_id, metric, client)
    return steps.astype(float), values


def _fit_and_write_back(
    client: MlflowClient,
    runs: list[Run],
    config: CompareConfig,
    pool: ProcessPoolExecutor | None,
    writable: set[str],
    comparison: str,
) -> list[dict[str, Any]]:
    """Read and fit every run, write back to those in ``writable`` (each tagged with the
    ``comparison`` run's id before its metrics); the fits in run order."""
    ids = [r.info.run_id for r in runs]
    curves = ((i, *read_curve(client, rid, config.metric)) for i, rid in enumerate(ids))
    fits: list[dict[str, Any]] = [{}] * len(runs)
    stamp = get_current_time_millis()
    for i, fit in lld_batch.fit_stream(curves, len(runs), config.max_components, pool):
        fits[i] = fit
        if ids[i] in writable:
            client.set_tag(ids[i], WRITTEN_BY_TAG, comparison)
            client.log_batch(ids[i], metrics=_source_metrics(fit, stamp))
            stages.pause_at("compare-write-back")
    return fits


def _source_metrics(fit: dict[str, Any], stamp: int) -> list[Metric]:
    """``lld/*`` metrics for a source run: R² of every N; the chosen fit's components."""
    values = {f"lld/r2_{f['n_components']}": f["r2"] for f in fit["fits"]}
    best = chosen(fit)
    if best is None:  # no learning process: the constant alone
        values["lld/n_components"] = 0
        values["lld/constant"] = fit["curve"]["constant"]
    elif best["success"]:
        values["lld/n_components"] = fit["n"]
        values["lld/constant"] = best["constant"]
        for k, comp in enumerate(best["components"], start=1):
            values.update({f"lld/{name}_{k}": comp[name] for name in _FIELDS})
    return [Metric(key, float(v), stamp, 0) for key, v in values.items() if math.isfinite(v)]


def table_rows(runs: Sequence[Run], fits: Sequence[dict[str, Any]], max_components: int) -> list[dict[str, Any]]:
    """One row per run and N; component columns up to ``max_components``, NaN beyond N."""
    param_names = sorted({p for r in runs for p in r.data.params})
    rows = []
    for run, fit in zip(runs, fits):
        params = {f"param.{p}": run.data.params.get(p, "") for p in param_names}
        for f in fit["fits"]:
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "experiment_id": run.info.experiment_id,
                    **_fit_columns(f, fit["n"], max_components),
                    "selection": fit["reason"],
                    **params,
                }
            )
    return rows


def _fit_columns(f: dict[str, Any], chosen: int, max_components: int) -> dict[str, Any]:
    cols = {
        key: f[key]
        for key in ("n_components", "success", "n_points", "r2", "aic", "bic", "constant", "constant_stderr")
    }
    cols["chosen"] = f["n_components"] == chosen
    cols["chosen_n"] = chosen
    cols["no_process"] = chosen == 0
    for k in range(1, max_components + 1):
        comp = f["components"][k - 1] if k <= len(f["components"]) else {}
        for name in _FIELDS:
            cols[f"{name}_{k}"] = comp.get(name, math.nan)
            cols[f"{name}_{k}_stderr"] = comp.get(f"{name}_stderr", math.nan)
    cols["degenerate"] = "; ".join(f["degenerate"])
    cols["message"] = f["message"]
    return cols


def _log_comparison(
    runs: list[Run],
    fits: list[dict[str, Any]],
    skipped: dict[str, str],
    config: CompareConfig,
    pool: ProcessPoolExecutor | None,
) -> None:
    rows = table_rows(runs, fits, config.max_components)
    with tempfile.TemporaryDirectory(prefix="dsc-compare-") as tmp:
        out = Path(tmp)
        figures = [(name, kw, out / file) for name, kw, file in compare_figures.figures(runs, fits, config)]
        drawing = [pool.submit(compare_figures.draw, *fig) for fig in figures] if pool else []
        mlflow.log_metrics(_summary_metrics(fits, config.max_components), step=0)
        mlflow.log_table({k: [row[k] for row in rows] for k in rows[0]}, artifact_file=f"{ARTIFACT_DIR}/table.json")
        _write_csv(rows, out / "table.csv")
        (out / "runs.json").write_text(
            json.dumps(
                {"metric": config.metric, "compared": [r.info.run_id for r in runs], "skipped": skipped}, indent=1
            )
        )
        for fig in figures if pool is None else []:
            compare_figures.draw(*fig)
        for future in drawing:
            future.result()
        mlflow.log_artifacts(tmp, ARTIFACT_DIR)


def _summary_metrics(fits: list[dict[str, Any]], max_components: int) -> dict[str, float]:
    picked = [f["n"] for f in fits if (best := compare_figures.chosen(f)) is None or best["success"]]
    out = {
        "lld/n_runs": float(len(fits)),
        "lld/n_fitted": float(len(picked)),
        "lld/n_no_process": float(picked.count(0)),
    }
    if picked:
        out["lld/mean_n_components"] = float(np.mean(picked))
    for n in range(1, max_components + 1):
        r2 = np.array([f["fits"][n - 1]["r2"] for f in fits], dtype=float)
        if np.isfinite(r2).any():
            out[f"lld/mean_r2_{n}"] = float(np.nanmean(r2))
        out[f"lld/n_chose_{n}"] = float(picked.count(n))
    return out


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["CompareConfig", "compare_job", "read_curve", "select_runs", "table_rows"]
