"""One event timeline: every signal's change of a run on one epoch axis, over the validation accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from dsc.core.events import Event
from dsc.figures import style
from dsc.figures.style import ACC, EPOCH


def timeline(
    events: Sequence[Event],
    rows: Sequence[str],
    steps: Sequence[float] | np.ndarray,
    acc: Sequence[float] | np.ndarray,
    title: str = "Event timeline",
) -> Figure:
    """Top: acc/val over ``steps`` (n,), each row's events as thin lines. Bottom: one line per row in
    ``rows`` (top to bottom), each event a marker at its epoch with its label."""
    fig, axes = style.new_figure(
        2,
        1,
        size=(10.0, 2.6 + 0.55 * len(rows)),
        sharex=True,
        gridspec_kw={"height_ratios": [1.4, max(1.0, 0.45 * len(rows))]},
    )
    top, bottom = axes[0, 0], axes[1, 0]
    top.plot(steps, acc, color="0.25", lw=1.5, label="acc/val")
    top.set(ylabel=ACC, title=title)
    y_of = {row: len(rows) - 1 - i for i, row in enumerate(rows)}
    for i, row in enumerate(rows):
        color = style.SERIES_PALETTE[i % len(style.SERIES_PALETTE)]
        mine = [ev for ev in events if ev.row == row]
        for j, ev in enumerate(sorted(mine, key=lambda ev: ev.epoch)):
            top.axvline(ev.epoch, color=color, lw=0.6, alpha=0.5)
            bottom.plot(ev.epoch, y_of[row], "|", color=color, ms=14, mew=2)
            bottom.annotate(
                ev.label,
                (ev.epoch, y_of[row]),
                xytext=(2, 6 if j % 2 else -10),
                textcoords="offset points",
                fontsize=6,
                color=color,
            )
    bottom.set_yticks(list(y_of.values()), list(y_of))
    bottom.set_ylim(-0.7, len(rows) - 0.3)
    if events:
        lo, hi = min(ev.epoch for ev in events), max(ev.epoch for ev in events)
        x = np.asarray(steps, dtype=float)
        bottom.set_xlim(min(lo, x.min(initial=lo)) - 1, max(hi, x.max(initial=hi)) + 1)
    bottom.set(xlabel=EPOCH)
    return fig
