"""The Ray engine's former import path, kept for code that imports it: see `dsc.jobs.sweep.cluster`."""

from dsc.jobs.sweep.cluster import ATTEMPTS_TAG, NODE_TAG, store_for_cluster

__all__ = ["ATTEMPTS_TAG", "NODE_TAG", "store_for_cluster"]
