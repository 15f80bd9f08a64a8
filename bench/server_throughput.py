"""Training throughput through a shared tracking server: 1, 2 and 4 trainings at once.

Starts ``mlflow server`` on loopback (SQLite backend, artifacts served from a temporary
folder), then for each N runs N ``python -m dsc train`` processes of the default configuration
(snapshots, checkpoints and registration included) side by side, each logging to the server,
with the CPUs split between them as ``dsc sweep`` does. From the metric timestamps it takes
each run's seconds per epoch and its fixed cost (start-up, data, registration), and reports
epochs per hour and runs per hour extrapolated to the default 60 epochs, with the ratio to N=1.

    uv run python bench/server_throughput.py [--epochs 3] [--parallel 1,2,4] [--image-size 128]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from dsc.data.dataset import load_imageset
from dsc.settings import DataConfig
from dsc.tracking.server import mlflow_server

DEFAULT_EPOCHS = 60  # the default run the rates are extrapolated to


def epoch_seconds(client: MlflowClient, run_id: str) -> float:
    """A run's seconds per epoch, from the timestamps of its first and last ``acc/val`` points."""
    stamps = sorted((m.step, m.timestamp) for m in client.get_metric_history(run_id, "acc/val"))
    return (stamps[-1][1] - stamps[0][1]) / 1000 / (stamps[-1][0] - stamps[0][0])


def run_batch(uri: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """N trainings at once; their wall time and, from the metric timestamps, the epoch cost."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [
        sys.executable,
        "-m",
        "dsc",
        "train",
        "--epochs",
        str(args.epochs),
        "--image-size",
        str(args.image_size),
        "--experiment",
        f"bench-n{n}",
        "--register-name",
        "bench-throughput",
        "--no-progress",
    ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, "--seed", str(seed)], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for seed in range(n)
    ]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outputs):
        if p.returncode:
            sys.exit(f"error: a training failed ({p.returncode}): {err.strip().splitlines()[-1]}")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(f"bench-n{n}").experiment_id])
    epoch_s = float(np.mean([epoch_seconds(client, run.info.run_id) for run in runs]))
    fixed_s = max(0.0, wall - args.epochs * epoch_s)  # the batch's start-up, data, snapshots of epoch 0, models
    return {
        "n": n,
        "wall_s": wall,
        "epoch_s": epoch_s,
        "fixed_s": fixed_s,
        "epochs_per_hour": n * 3600 / epoch_s,
        "runs_per_hour": n * 3600 / (fixed_s + DEFAULT_EPOCHS * epoch_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed run (rates are per epoch)")
    ap.add_argument("--parallel", default="1,2,4", help="comma list of N, trainings at once")
    ap.add_argument("--image-size", type=int, default=128, help="image side (the default run: 128)")
    ap.add_argument("--server-workers", type=int, default=2, help="uvicorn workers of the server")
    args = ap.parse_args()
    if args.epochs < 1:
        sys.exit(f"error: --epochs {args.epochs}: must be >= 1 (a rate needs two epochs' timestamps)")
    try:
        ns = [int(n) for n in args.parallel.split(",") if n.strip()]
    except ValueError:
        sys.exit(f"error: --parallel {args.parallel!r}: use a comma list of integers, e.g. 1,2,4")
    if not ns or min(ns) < 1:
        sys.exit(f"error: --parallel {args.parallel!r}: every N must be >= 1")

    load_imageset(DataConfig(image_size=args.image_size))  # generated once, outside the timing
    with tempfile.TemporaryDirectory(prefix="dsc-bench-server-") as tmp:
        work = Path(tmp)
        with mlflow_server(
            f"sqlite:///{work / 'mlflow.db'}", work / "artifacts", work / "server.log", workers=args.server_workers
        ) as uri:
            rows = [run_batch(uri, n, args, work) for n in ns]

    print(
        f"{os.cpu_count()} CPUs, {args.epochs} epoch(s) per run at {args.image_size}x{args.image_size}, "
        f"mlflow server (SQLite, served artifacts, {args.server_workers} workers); rates for "
        f"{DEFAULT_EPOCHS}-epoch runs"
    )
    base = rows[0]
    print(
        f"{'N':>3} {'wall s':>8} {'s/epoch':>8} {'fixed s':>8} {'epochs/h':>9} {'runs/h':>7} "
        f"{'vs N=' + str(base['n']):>8}"
    )
    for r in rows:
        print(
            f"{r['n']:>3} {r['wall_s']:8.1f} {r['epoch_s']:8.2f} {r['fixed_s']:8.1f} "
            f"{r['epochs_per_hour']:9.0f} {r['runs_per_hour']:7.2f} "
            f"{r['epochs_per_hour'] / base['epochs_per_hour']:7.2f}x"
        )


if __name__ == "__main__":
    main()
