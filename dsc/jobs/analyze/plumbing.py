"""What every step of `dsc analyze` shares: the figure writer and the result of a skipped step."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from dsc.figures import report, style

__all__ = ["DPI", "FigureWriter", "Skipped", "Step", "skipped", "skipped_epochs_section"]

DPI = 100  # figures: PNG resolution


@dataclass(frozen=True)
class FigureWriter:
    """Renders each figure once: the PNG goes to ``directory`` and, inline, into the report."""

    directory: Path

    def __call__(self, name: str, fig, caption: str) -> report.Image:
        data = style.to_png(fig, dpi=DPI)
        fig.clear()
        path = self.directory / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return report.Image(path.name, caption, data)


class Step(Protocol):
    """What every step's result, run or skipped, gives the report and ``summary.json``."""

    @property
    def section(self) -> report.Section: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Skipped:
    """A step that could not run: why, said in its section and in the summary."""

    reason: str
    section: report.Section

    @property
    def metrics(self) -> dict[str, float]:
        """Nothing to log: the step did not run."""
        return {}

    def summary(self) -> dict[str, Any]:
        return {"skipped": self.reason}


def skipped(title: str, text: str, exc: Exception) -> Skipped:
    """The step titled ``title`` skipped for ``exc``, with a warning on stderr."""
    tqdm.write(f"warning: {title}: skipped: {exc}", file=sys.stderr)
    return Skipped(str(exc), report.Section(title, text, note=f"skipped: {exc}"))


def skipped_epochs_section(skipped: dict[int, str]) -> tuple[report.Section, ...]:
    """The report's section on the snapshot epochs left out, and why; none when none was."""
    if not skipped:
        return ()
    text = "These epochs' snapshots were left out of every step: the analysis ran on the others."
    rows = {f"epoch {e}": why for e, why in skipped.items()}
    return (report.Section("Skipped epochs", text, rows=rows, note=f"{len(skipped)} epoch(s) skipped"),)
