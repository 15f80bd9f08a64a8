"""The figures of a comparison: each run's decomposition overlaid, centres against widths, R².

Each figure is described as ``(dsc.figures.lld function, its arguments, file name)`` so that
`dsc compare` can draw them in its worker processes while it logs the table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Run

from dsc.figures import lld as lld_figures
from dsc.figures.style import save
from dsc.settings import CompareConfig

OVERLAY_MAX_RUNS = 12  # panels in the overlay, bars in the R² chart: readable, and quick to draw

__all__ = ["OVERLAY_MAX_RUNS", "chosen", "draw", "figures"]


def chosen(fit: dict[str, Any]) -> dict[str, Any] | None:
    """The chosen fit's summary; None when N = 0 (the constant alone) was chosen."""
    return fit["fits"][fit["n"] - 1] if fit["n"] else None


# --------------------------------------------------------------------------- the comparison run


def draw(name: str, kwargs: dict[str, Any], path: Path) -> None:
    """Pool task: ``dsc.figures.lld.<name>(**kwargs)`` saved as a PNG at ``path``."""
    save(getattr(lld_figures, name)(**kwargs), path)


def figures(
    runs: list[Run], fits: list[dict[str, Any]], config: CompareConfig
) -> list[tuple[str, dict[str, Any], str]]:
    """``(dsc.figures.lld function, its arguments, file name)`` of each figure."""
    colour = [r.data.params.get(config.color_by, "(unset)") for r in runs]
    labels = [f"{r.info.run_name or r.info.run_id[:8]} ({config.color_by}={c})" for r, c in zip(runs, colour)]
    # Evenly spaced picks: a figure with hundreds of panels or bars is unreadable and slow.
    picks = np.unique(np.linspace(0, len(runs) - 1, min(len(runs), OVERLAY_MAX_RUNS)).astype(int))
    of = "" if picks.size == len(runs) else f" ({picks.size} of {len(runs)} runs)"
    centers, widths, values = components(fits, colour)
    r2 = [[fits[i]["fits"][n - 1]["r2"] if n <= config.max_components else math.nan for i in picks] for n in (1, 2)]
    return [
        (
            "lld_overlay",
            {
                "runs": [{"label": labels[i], **fits[i]["curve"]} for i in picks],
                "ylabel": config.metric,
                "title": f"Logistic learning decomposition of {config.metric}{of}",
            },
            "overlay.png",
        ),
        (
            "lld_centers_widths",
            {"centers": centers, "widths": widths, "colour_values": values, "colour_label": config.color_by},
            "centers_widths.png",
        ),
        (
            "lld_variance_explained",
            {
                "run_labels": [labels[i] for i in picks],
                "r2_1": r2[0],
                "r2_2": r2[1],
                "title": f"Variance of {config.metric} explained by one and by two logistics{of}",
            },
            "variance_explained.png",
        ),
    ]


def components(fits: list[dict[str, Any]], colour: list[str]) -> tuple[list, list, list]:
    """Centre, width and colour value of every component of every successful chosen fit."""
    centers, widths, values = [], [], []
    for fit, value in zip(fits, colour):
        best = chosen(fit)
        for comp in best["components"] if best is not None and best["success"] else []:
            centers.append(comp["center"])
            widths.append(comp["width"])
            values.append(value)
    return centers, widths, values
