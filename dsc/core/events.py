"""One event timeline: the epochs at which each signal of a run changes, on one axis.

An event is a (row, label, epoch) triple; rows group the kinds a figure draws on one line each.
The rules that turn a series into an epoch are here:

- a rise or a fall (PC1's variance, NC1, the CKA of successive layers) is its half-way epoch:
  from the series' lowest point (a rise) or highest point (a fall) on, the first epoch, linearly
  interpolated, at which it has covered half of the way to its final level (the mean of its last
  fifth). NC1 is read on a log scale, since it falls by orders of magnitude. Starting at the
  extreme keeps a transient out (NC1 first grows while the classes spread, then collapses), and
  a half-way crossing needs no shape: NC1's fall is closer to an exponential decay than to a
  logistic, whose fitted centre then lands before the data;
- a layer's phase change is each epoch whose Martin & Mahoney phase differs from the previous
  snapshot's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Event:
    """One change on the timeline: the row it is drawn on, what it is, and when (an epoch, may be fractional)."""

    row: str
    label: str
    epoch: float


def phase_changes(epochs: Sequence[int], phases: Mapping[str, Sequence[str]]) -> list[Event]:
    """Each epoch at which a layer's phase (``phases[layer]``, one per epoch) differs from the one before."""
    out = []
    for layer, seq in phases.items():
        for e, before, after in zip(epochs[1:], seq, seq[1:]):
            if before != after:
                out.append(Event("phase changes", f"{layer} → {after}", float(e)))
    return out


def halfway_epoch(epochs: Sequence[int], y: np.ndarray, falling: bool) -> float:
    """The half-way epoch of a rise (``falling`` False) or fall of ``y`` (E,) over ``epochs`` (E,)
    (module rule); NaN when the series has fewer than 5 finite points or does not move that way."""
    t, y = np.asarray(epochs, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], (-y[keep] if falling else y[keep])  # a fall is the rise of -y
    if len(y) < 5:
        return float("nan")
    start = int(np.argmin(y))
    final = y[-max(1, len(y) // 5) :].mean()
    if not final > y[start]:
        return float("nan")
    half = (y[start] + final) / 2
    after = start + int(np.argmax(y[start:] >= half))  # > start, since y[start] < half
    t0, t1, y0, y1 = t[after - 1], t[after], y[after - 1], y[after]
    return float(t0 + (half - y0) / (y1 - y0) * (t1 - t0))


def series_events(
    row: str, epochs: Sequence[int], series: Mapping[str, np.ndarray], falling: bool = False, log: bool = False
) -> list[Event]:
    """One event per series (E,) over ``epochs`` (E,): its half-way epoch (none when it does not move)."""
    out = []
    for label, y in series.items():
        y = np.asarray(y, dtype=np.float64)
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(y > 0, np.log10(y), np.nan)
        epoch = halfway_epoch(epochs, y, falling)
        if np.isfinite(epoch):
            out.append(Event(row, label, epoch))
    return out


def epoch_events(row: str, epochs: Mapping[str, float | int | None], prefix: str = "") -> list[Event]:
    """One event per named epoch; a missing (None or NaN) epoch is left off."""
    return [Event(row, f"{prefix}{name}", float(e)) for name, e in epochs.items() if e is not None and np.isfinite(e)]


def table(events: Sequence[Event]) -> list[dict[str, object]]:
    """The events sorted by epoch, as plain dicts (``row``, ``label``, ``epoch``)."""
    return [asdict(ev) for ev in sorted(events, key=lambda ev: (ev.epoch, ev.row, ev.label))]
