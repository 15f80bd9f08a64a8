"""A sweep member's fixed cost and a sweep's runs per hour, before and after, in one script.

Two sweeps of the same ``--members`` members (seeds 0..M-1, 32x32 synthetic faces,
``--epochs`` epochs, no snapshots) at ``--parallel 2``, each in its own temporary SQLite
store:

- before: one ``python -m dsc train`` process a member, registering its models
  (``--register --per-process 1``, what every member did before);
- after: members skip the registry and ``--per-process`` of them share a process.

A member's fixed cost is what it spends outside its epochs: the members' span (from the
first member run's start to the last one's end) divided among the members that ran at a
time, less a member's training (its run's span from the first to the last epoch's metrics).
The sweep's own cost, paid once a sweep however many members it has, is printed apart: its
start (process start to the first member's run) and its close (the last member's end to the
sweep's exit, the closing comparison). Runs per hour is the members over the sweep's whole
wall time. Prints both arms and the ratios; the floor for the member's fixed cost after is
6 s on 2 cores.

    uv run python bench/sweep_fixed_cost.py [--members 8] [--epochs 30] [--per-process 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FLOOR_S = 6.0  # fixed cost per member after, on 2 cores


@dataclass(frozen=True)
class Sweep:
    """One sweep's timings, seconds."""

    wall: float  # the sweep command, start to exit
    start: float  # its process start to the first member run's start
    close: float  # the last member run's end to the sweep's exit
    spans: list[float]  # each member's training: its first to last epoch's metrics

    @property
    def members_span(self) -> float:
        return self.wall - self.start - self.close


def sweep(store: Path, members: int, epochs: int, extra: list[str]) -> Sweep:
    """Run one sweep of ``members`` members in ``store`` and read its timings back from the runs."""
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    command = [
        sys.executable,
        "-m",
        "dsc",
        "sweep",
        "--seeds",
        f"0-{members - 1}",
        "--image-size",
        "32",
        "--set",
        f"epochs={epochs} snapshot-every=0 checkpoint-every=1000 state-every=1000",
        "--parallel",
        "2",
        "--no-progress",
        "--experiment",
        "bench",
        *extra,
    ]
    began = time.time()
    subprocess.run(command, env=env, cwd=store, check=True, stdout=subprocess.DEVNULL)
    ended = time.time()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], "tags.`dsc.kind` = 'train'")
    spans = []
    for run in runs:
        stamps = [m.timestamp for m in client.get_metric_history(run.info.run_id, "acc/val")]
        spans.append((max(stamps) - min(stamps)) / 1000)
    first = min(r.info.start_time for r in runs) / 1000
    last = max(r.info.end_time for r in runs) / 1000
    return Sweep(ended - began, first - began, ended - last, spans)


def fixed_cost(run: Sweep, parallel: int = 2) -> float:
    """Seconds a member spends outside its epochs: its share of the members' span less its training."""
    return run.members_span * parallel / len(run.spans) - sum(run.spans) / len(run.spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--per-process", type=int, default=4)
    args = ap.parse_args()
    arms = {"before": ["--register", "--per-process", "1"], "after": ["--per-process", str(args.per_process)]}
    results = {}
    for name, extra in arms.items():
        with tempfile.TemporaryDirectory(prefix=f"dsc-bench-{name}-") as tmp, contextlib.chdir(tmp):
            run = sweep(Path(tmp), args.members, args.epochs, extra)
        results[name] = (run.wall, fixed_cost(run), args.members / run.wall * 3600)
        print(
            f"{name:6s} {' '.join(extra):24s} wall {run.wall:7.1f} s  fixed cost {results[name][1]:5.1f} s/member"
            f"  {results[name][2]:6.1f} runs/h  (the sweep's own: start {run.start:4.1f} s, close {run.close:4.1f} s)"
        )
    (_, fb, rb), (_, fa, ra) = results["before"], results["after"]
    print(
        f"fixed cost before/after {fb / fa:.2f}x; runs per hour after/before {ra / rb:.2f}x; "
        f"floor {FLOOR_S:.0f} s/member after: {'met' if fa <= FLOOR_S else 'missed'}"
    )


if __name__ == "__main__":
    main()
