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
