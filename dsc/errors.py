"""Errors that reach the user as one line: what is wrong and what to do."""

from __future__ import annotations


class DscError(Exception):
    """Base of every error the command line reports as one line with a non-zero exit."""


class ConfigError(DscError, ValueError):
    """An option value out of range or of the wrong kind."""


class DataError(DscError, ValueError):
    """A dataset that cannot be used."""


class TrainingDiverged(DscError, RuntimeError):
    """The loss became NaN or infinite."""


class TrackingError(DscError, RuntimeError):
    """A run, artifact or model that is missing or of the wrong kind."""


class Interrupted(DscError):
    """Training stopped on request (SIGTERM, SIGINT) after finishing its current step.

    ``epoch`` is the epoch that was under way; ``signum`` the signal (0: none known). The
    command line prints the message and exits with 128 + ``signum``, the shells' convention.
    """

    def __init__(self, message: str, epoch: int, signum: int = 0) -> None:
        super().__init__(message)
        self.epoch, self.signum = epoch, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 1
