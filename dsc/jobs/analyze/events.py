"""The event timeline of `dsc analyze`: every step's change points on one epoch axis, the first
section of the report.

It reads the results of the other steps and adds nothing new but the rules of `dsc.core.events`
(a logistic centre for a rise or a fall, each change of a layer's phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsc.core import events
from dsc.figures import events as event_figures
from dsc.figures import report
from dsc.jobs.analyze.classes import ClassLLDResult, EmergenceResult
from dsc.jobs.analyze.collapse import CollapseResult
from dsc.jobs.analyze.plumbing import FigureWriter
from dsc.jobs.analyze.steps import (
    ChangePointResult,
    LLDResult,
    PCAResult,
    SimilarityResult,
    SpectraResult,
)

ROWS = (
    "change point",
    "LLD of acc/val",
    "LLD per class",
    "emergence (behaviour)",
    "emergence (probe)",
    "PC1 variance rise",
    "NC1 fall",
    "phase changes",
    "CKA transition",
)

EVENTS_TITLE = "Event timeline"
EVENTS_TEXT = (
    "Every signal's change on one epoch axis: the change point of acc/val; the centres of its logistic "
    "components and of each class's main rise; each class's behavioural emergence and its emergence in "
    "{layer}'s linear probe; the half-way epoch of the rise of the variance along {layer}'s PC1, of the fall "
    "of log10 NC1 of each layer (from its peak on) and of the change of the mean CKA of successive layers; "
    "each epoch a layer's spectral phase "
    "changes (dsc.core.events). Each step's own section, below, gives the detail."
)


@dataclass(frozen=True)
class EventsResult:
    """The events of one run, sorted by epoch."""

    events: list[events.Event]
    section: report.Section

    @property
    def metrics(self) -> dict[str, float]:
        """Nothing new to log: each event is already another step's metric or summary entry."""
        return {}

    def summary(self) -> dict[str, Any]:
        by_row: dict[str, dict[str, float]] = {row: {} for row in ROWS}
        for ev in self.events:
            by_row[ev.row][ev.label] = ev.epoch
        return {"rows": list(ROWS), "events": events.table(self.events), "by_row": by_row}


def timeline(
    acc_steps: np.ndarray,
    acc_val: np.ndarray,
    layer: str,
    change: ChangePointResult,
    lld: LLDResult,
    class_lld: ClassLLDResult | Any,
    emergence: EmergenceResult,
    pca: PCAResult,
    nc: CollapseResult,
    spectra: SpectraResult,
    similarity: SimilarityResult,
    draw: FigureWriter,
) -> EventsResult:
    """The timeline figure and its numbers; ``class_lld`` may be a skipped step (no per-class row then)."""
    epochs = pca.epochs
    found = events.epoch_events(ROWS[0], {"acc/val": change.epoch})
    best = lld.selection.best
    if best.success:
        found += events.epoch_events(
            ROWS[1], {f"process {k}": c["center"] for k, c in enumerate(best.components, start=1)}
        )
    if isinstance(class_lld, ClassLLDResult):
        found += events.epoch_events(
            ROWS[2], {n: None if rise is None else rise["center"] for n, rise in class_lld.attribution.main.items()}
        )
    if emergence.behaviour is not None:
        found += events.epoch_events(ROWS[3], emergence.behaviour.epochs)
    found += (
        events.epoch_events(ROWS[4], emergence.representation[layer].emergence, f"{layer}: ")
        if layer in emergence.representation
        else []
    )
    found += events.series_events(ROWS[5], epochs, {f"{layer} PC1": pca.timeline.explained_variance[:, 0]})
    found += events.series_events(
        ROWS[6], epochs, {f"{n} NC1": v["nc1"] for n, v in nc.values.items()}, falling=True, log=True
    )
    found += events.phase_changes(epochs, spectra.phases)
    if similarity.cka_successive:
        mean_cka = np.nanmean(np.stack(list(similarity.cka_successive.values())), axis=0)
        found += events.series_events(
            ROWS[8], epochs, {"mean CKA of successive layers": mean_cka}, falling=bool(mean_cka[-1] < mean_cka[0])
        )
    fig = event_figures.timeline(found, ROWS, acc_steps, acc_val, title="Event timeline (acc/val above)")
    image = draw(
        "event_timeline",
        fig,
        "every signal's change on one epoch axis; each row's events drawn as thin lines over acc/val",
    )
    rows = {f"{ev['row']}: {ev['label']}": ev["epoch"] for ev in events.table(found)}
    section = report.Section(EVENTS_TITLE, EVENTS_TEXT.format(layer=layer), rows=rows, images=(image,))
    return EventsResult(found, section)
