"""Helpers for tests that use `dsc` as users do: `python -m dsc` processes, a tracking server.

The processes are forked from an interpreter that has imported dsc's libraries already
(:mod:`forked`, which says what that keeps and what it does not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import forked

ROOT = Path(__file__).resolve().parents[1]
# The smallest training whose curve `dsc compare` can fit (one logistic needs 5 points):
# 3 classes of 16x16 faces, epochs 0..4, a learning rate that leaves chance within them.
EPOCHS = 4
TINY = [
    "--identities",
    "3",
    "--image-size",
    "16",
    "--hidden",
    "32",
    "--lr",
    "1e-3",
    "--epochs",
    str(EPOCHS),
    "--no-progress",
]
_RUN_ID = re.compile(r"\brun ([0-9a-f]{32})\b")


def dsc_env(tracking_uri: str, cache_dir: Path) -> dict[str, str]:
    """The environment of a `dsc` subprocess: this store, the session's data cache, one thread."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
    }
    env.update(MLFLOW_TRACKING_URI=tracking_uri, DSC_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1")
    return env


def start(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """`python -m dsc ARGS` in the background."""
    return forked.Popen(
        [sys.executable, "-m", "dsc", *args],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a `start`ed command; its stdout, or a test failure showing its stderr."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(proc.args[2:])} exited {proc.returncode}:\n{err[-3000:]}"
    return out


def dsc(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    """Run `python -m dsc ARGS` to the end; its stdout."""
    return finish(start(*args, env=env, cwd=cwd), timeout)


def run_id(stdout: str) -> str:
    """The run id a `dsc` command reports last ("run ID finished", "comparison run ID ...")."""
    ids = _RUN_ID.findall(stdout)
    assert ids, f"no run id in {stdout!r}"
    return ids[-1]


def histories(run_id: str, skip: tuple[str, ...] = ("system/",)) -> dict[str, list[tuple[int, float]]]:
    """Every metric's (step, value) points but those under ``skip``: by default MLflow's system
    monitor's, samples of the machine rather than of training."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
        for k in client.get_run(run_id).data.metrics
        if not k.startswith(skip)
    }
