"""Sweeps: a grid of seeds and train options, trained as parallel tracked runs, then compared.

`job` is ``dsc sweep`` and its local engine, `members` the grid checked and expanded and each
member's run, `batch` several small members trained in one process, and `cluster` the Ray
engine (members as Ray tasks, the tracking store they can reach).
"""

from dsc.jobs.sweep.cluster import store_for_cluster
from dsc.jobs.sweep.job import (
    ENGINE_TAG,
    MEMBER_TAG,
    RESERVED,
    SWEEP_TAG,
    Member,
    Plan,
    SweepConfig,
    SweepResult,
    expand,
    parse_assignments,
    parse_seeds,
    plan,
    sweep_job,
    train_options,
)

__all__ = [
    "ENGINE_TAG",
    "MEMBER_TAG",
    "RESERVED",
    "SWEEP_TAG",
    "Member",
    "Plan",
    "SweepConfig",
    "SweepResult",
    "expand",
    "parse_assignments",
    "parse_seeds",
    "plan",
    "store_for_cluster",
    "sweep_job",
    "train_options",
]
