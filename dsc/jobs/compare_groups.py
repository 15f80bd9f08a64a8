"""``dsc compare --group-by PARAM``: the compared runs grouped by a swept param, seeds as replicates.

Per group (the runs sharing the values of the ``--group-by`` params) and quantity (the selected
N, R^2 of one and of two logistics, each component's centre and width, the change point, the
metric's final value, and each class's first centre where ``dsc analyze`` left
``lld_class/<class>/center_1``): n, mean, sd and a t-based 95% interval
(:mod:`dsc.core.groups`). The comparison run gets

- ``groups/table.csv``, ``groups/table.json``: one row per group and quantity;
- ``groups/trend.csv``, ``groups/trend.json``: Spearman's rho and p of each quantity against
  each numeric grouping param, over runs (or the line saying why there is no test);
- ``groups/first_class.json``: per group, how often each class was the first to rise;
- ``groups/curves.png`` (mean curves with bands), ``groups/n_components.png`` (N against the
  param) and ``groups/center_latent.png`` (centre 1 and the change point against it);
- metrics ``trend/<quantity>/rho`` and ``trend/<quantity>/p`` (with several grouping params,
  ``trend/<param>/<quantity>/...``).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Run

from dsc.core import groups
from dsc.errors import TrackingError
from dsc.figures import groups as group_figures
from dsc.figures.style import save

ARTIFACT_DIR = "groups"
CLASS_PREFIX = "lld_class/"
PREDICTOR_METRICS = ("lld/n_from_classes", "lld/class_clusters")


def check_params(runs: Sequence[Run], by: Sequence[str]) -> None:
    """Raise TrackingError for a ``--group-by`` param that no compared run has."""
    for name in by:
        if not any(name in r.data.params for r in runs):
            have = sorted({p for r in runs for p in r.data.params})
            shown = ", ".join(have[:12]) + (f", ... ({len(have)} in all)" if len(have) > 12 else "")
            raise TrackingError(
                f"--group-by {name!r}: no compared run has this param (they have: {shown}); choose one of them"
            )


def quantities(
    runs: Sequence[Run],
    fits: Sequence[dict[str, Any]],
    max_components: int,
    written: Sequence[dict[str, float]] | None = None,
) -> tuple[list[dict[str, float]], list[str]]:
    """Each run's quantities (:func:`dsc.core.groups.run_quantities`, plus per-class centres,
    the ``lld/`` predictors in ``written``, the metrics this comparison wrote to each run, and
    the ``modes/<layer>/break_rank`` the run carries)
    and each run's first class ("" where no class has a centre)."""
    rows, firsts = [], []
    for i, (run, fit) in enumerate(zip(runs, fits)):
        row = groups.run_quantities(fit, fit["curve"]["t"], fit["curve"]["y"], max_components)
        metrics = {**run.data.metrics, **(written[i] if written else {})}
        row |= {key[len("lld/") :]: v for key, v in metrics.items() if key in PREDICTOR_METRICS}
        row |= {key: v for key, v in metrics.items() if key.startswith("modes/") and key.endswith("/break_rank")}
        centers = {
            key[len(CLASS_PREFIX) : -len("/center_1")]: value
            for key, value in metrics.items()
            if key.startswith(CLASS_PREFIX) and key.endswith("/center_1")
        }
        row |= {f"class_center_1/{name}": c for name, c in sorted(centers.items())}
        rows.append(row)
        firsts.append(groups.first_class(centers))
    return rows, firsts


def log_groups(
    runs: Sequence[Run],
    fits: Sequence[dict[str, Any]],
    by: Sequence[str],
    metric: str,
    max_components: int,
    warn: Callable[[str], None],
    written: Sequence[dict[str, float]] | None = None,
) -> dict[str, float]:
    """Group, summarise, test and draw; log artifacts to the active run; the trend metrics."""
    params = [r.data.params for r in runs]
    keyed = groups.group(params, by)
    rows, firsts = quantities(runs, fits, max_components, written)
    names = list(dict.fromkeys(k for row in rows for k in row))
    values = {q: np.array([row.get(q, math.nan) for row in rows], dtype=float) for q in names}
    table = _group_table(keyed, by, values, firsts)
    trends = _trend_table(params, by, values)
    for key, members in keyed.items():
        if len(members) == 1:
            warn(f"group {_label(by, key)} has one run: its table rows have no interval")
    for note in dict.fromkeys(t["note"] for t in trends if "not numeric" in t["note"]):
        warn(f"{note}; the group table is logged without it")
    with tempfile.TemporaryDirectory(prefix="dsc-groups-") as tmp:
        out = Path(tmp)
        _write(table, out / "table")
        _write(trends, out / "trend")
        (out / "first_class.json").write_text(json.dumps(_first_classes(keyed, by, firsts), indent=1))
        _draw(keyed, by, fits, values, trends, metric, out)
        mlflow.log_artifacts(tmp, ARTIFACT_DIR)
    return _trend_metrics(trends, len(by) > 1)


def _label(by: Sequence[str], key: Sequence[str]) -> str:
    return " ".join(f"{name}={value}" for name, value in zip(by, key))


def _group_table(
    keyed: dict[tuple[str, ...], list[int]], by: Sequence[str], values: dict[str, np.ndarray], firsts: Sequence[str]
) -> list[dict[str, Any]]:
    table = []
    for key, members in keyed.items():
        head: dict[str, Any] = {f"param.{name}": value for name, value in zip(by, key)}
        head |= {"group": _label(by, key), "n_runs": len(members)}
        for quantity, column in values.items():
            s = groups.summarise(column[members])
            table.append(
                {
                    **head,
                    "quantity": quantity,
                    "n": s.n,
                    "mean": s.mean,
                    "sd": s.sd,
                    "ci_low": s.low,
                    "ci_high": s.high,
                    "interval": s.note or f"t-based {groups.LEVEL:.0%}",
                }
            )
        named = [firsts[i] for i in members if firsts[i]]
        if named:
            top, count = Counter(named).most_common(1)[0]
            table.append(
                {
                    **head,
                    "quantity": "first_class_share",
                    "n": len(named),
                    "mean": count / len(named),
                    "sd": math.nan,
                    "ci_low": math.nan,
                    "ci_high": math.nan,
                    "interval": f"share of runs whose first class is {top}",
                }
            )
    return table


def _trend_table(
    params: Sequence[dict[str, str]], by: Sequence[str], values: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    out = []
    for name in by:
        x = [p.get(name, "") for p in params]
        for quantity, column in values.items():
            t = groups.trend(x, column, name)
            out.append({"param": name, "quantity": quantity, "n": t.n, "rho": t.rho, "p": t.p, "note": t.note})
    return out


def _trend_metrics(trends: Sequence[dict[str, Any]], several: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in trends:
        if math.isfinite(t["rho"]):
            stem = f"trend/{t['param']}/{t['quantity']}" if several else f"trend/{t['quantity']}"
            out |= {f"{stem}/rho": t["rho"], f"{stem}/p": t["p"]}
    return out


def _first_classes(
    keyed: dict[tuple[str, ...], list[int]], by: Sequence[str], firsts: Sequence[str]
) -> dict[str, dict[str, int]]:
    return {_label(by, key): dict(Counter(firsts[i] for i in members if firsts[i])) for key, members in keyed.items()}


def _write(rows: list[dict[str, Any]], stem: Path) -> None:
    """``stem.csv`` and ``stem.json`` (NaN written as null) of the same rows."""
    with stem.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    plain = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()} for row in rows
    ]
    stem.with_suffix(".json").write_text(json.dumps(plain, indent=1))


def _draw(
    keyed: dict[tuple[str, ...], list[int]],
    by: Sequence[str],
    fits: Sequence[dict[str, Any]],
    values: dict[str, np.ndarray],
    trends: Sequence[dict[str, Any]],
    metric: str,
    out: Path,
) -> None:
    labels = [_label(by, key) for key in keyed]
    curves = [
        {
            "label": label,
            "n": len(members),
            **groups.mean_curve([(fits[i]["curve"]["t"], fits[i]["curve"]["y"]) for i in members]),
        }
        for label, members in zip(labels, keyed.values())
    ]
    save(group_figures.group_curves(curves, metric), out / "curves.png")
    numbers = [groups.as_number(key[0]) for key in keyed]
    numeric = all(v is not None for v in numbers)
    positions: list[float] = [v for v in numbers if v is not None] if numeric else list(range(len(keyed)))
    x = np.empty(len(fits))
    for pos, members in zip(positions, keyed.values()):
        x[members] = pos
    notes = {
        t["quantity"]: t["note"] or f"Spearman rho {t['rho']:.2f}, p {t['p']:.2g}"
        for t in trends
        if t["param"] == by[0]
    }

    def panel(quantity: str, ylabel: str) -> dict[str, Any]:
        column = values[quantity]
        stats = [groups.summarise(column[m]) for m in keyed.values()]
        return {
            "ylabel": ylabel,
            "x": x,
            "y": column,
            "note": notes[quantity],
            "mean": [s.mean for s in stats],
            "low": [s.low for s in stats],
            "high": [s.high for s in stats],
        }

    ticks = [key[0] for key in keyed]
    save(
        group_figures.against_param(
            by[0], [panel("n_components", "selected N (logistic processes)")], positions, ticks
        ),
        out / "n_components.png",
    )
    save(
        group_figures.against_param(
            by[0],
            [
                panel("center_1", "centre of component 1 (epoch)"),
                panel("change_point", "end of the latent phase (epoch)"),
            ],
            positions,
            ticks,
        ),
        out / "center_latent.png",
    )


__all__ = ["check_params", "log_groups", "quantities"]
