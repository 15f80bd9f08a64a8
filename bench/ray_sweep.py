"""Sweeps on a local Ray cluster: 60-epoch-equivalent runs per hour with one node and with two.

For each node count N, starts ``ray.cluster_utils.Cluster`` on this machine (a head that runs
no task and N worker nodes of ``--cpus-per-node`` CPUs, each its own raylet) and runs
``dsc sweep --engine ray`` in this process (:func:`dsc.jobs.sweep.sweep_job`) with
``--members-per-node`` x N default-size members (5 identities, 128x128, snapshots,
checkpoints, registration) of ``--epochs`` epochs each, every one logging to a loopback
``mlflow server`` (SQLite, served artifacts). From the runs' metric timestamps it takes each
member's seconds per epoch and its fixed cost (start-up, data, epoch 0, registration) and
reports the sweep's throughput in default runs (60 epochs) per hour, measured over the
members' window and extrapolated, with the ratio of N nodes to one.

    uv run --group ray python bench/ray_sweep.py [--nodes 1,2] [--epochs 2] [--members-per-node 2]
"""

from __future__ import annotations

import os

# As dsc sets it before importing Ray: nodes run this environment, not one `uv run` rebuilds per worker.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from server_throughput import DEFAULT_EPOCHS, epoch_seconds

from dsc.data.dataset import load_imageset
from dsc.jobs.sweep import sweep_job
from dsc.settings import DataConfig, SweepConfig
from dsc.tracking.server import mlflow_server


def arm(uri: str, nodes: int, args: argparse.Namespace) -> dict[str, float]:
    """One sweep on a fresh cluster of ``nodes`` worker nodes; its window and per-member costs."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=args.cpus_per_node)
        cluster.wait_for_nodes()
        members = args.members_per_node * nodes
        config = SweepConfig(
            seeds=tuple(range(members)),
            fixed=(f"epochs={args.epochs}",),
            engine="ray",
            ray_address=cluster.address,
            cpus_per_run=float(args.cpus_per_node),
            experiment=f"bench-ray-{nodes}",
        )
        t0 = time.perf_counter()
        result = sweep_job(config, progress=False, echo=lambda line: None)
        wall = time.perf_counter() - t0
    finally:
        cluster.shutdown()
    client = MlflowClient(uri)
    runs = [client.get_run(r) for r in result.run_ids]
    window = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    per_epoch = [epoch_seconds(client, run.info.run_id) for run in runs]
    fixed = [(run.info.end_time - run.info.start_time) / 1000 - args.epochs * e for run, e in zip(runs, per_epoch)]
    epoch_s, fixed_s = float(np.mean(per_epoch)), float(np.mean(fixed))
    return {
        "nodes": nodes,
        "members": members,
        "wall_s": wall,
        "window_s": window,
        "epoch_s": epoch_s,
        "fixed_s": fixed_s,
        "measured_per_hour": members * args.epochs / DEFAULT_EPOCHS * 3600 / window,
        "runs_per_hour": nodes * 3600 / (fixed_s + DEFAULT_EPOCHS * epoch_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1,2", help="comma list of worker-node counts, one sweep each")
    ap.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of each worker node (and of each member)")
    ap.add_argument("--members-per-node", type=int, default=2, help="members per node in each sweep")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per member (rates are per epoch)")
    args = ap.parse_args()
    try:
        counts = [int(n) for n in args.nodes.split(",") if n.strip()]
    except ValueError:
        sys.exit(f"error: --nodes {args.nodes!r}: use a comma list of integers, e.g. 1,2")
    if not counts or min(counts) < 1 or args.epochs < 1 or args.members_per_node < 1:
        sys.exit("error: --nodes, --epochs and --members-per-node must be >= 1")

    load_imageset(DataConfig())  # generated once, outside the timing; every node reads the cache
    with tempfile.TemporaryDirectory(prefix="dsc-bench-ray-") as tmp:
        work = Path(tmp)
        with mlflow_server(
            f"sqlite:///{work / 'mlflow.db'}", work / "artifacts", work / "server.log", workers=2
        ) as uri:
            os.environ["MLFLOW_TRACKING_URI"] = uri
            mlflow.set_tracking_uri(uri)
            rows = [arm(uri, n, args) for n in counts]

    print(
        f"{os.cpu_count()} CPUs; worker nodes of {args.cpus_per_node} CPU(s), one member per node at a "
        f"time; {args.members_per_node} members per node of {args.epochs} epoch(s) at 128x128 (snapshots, "
        f"checkpoints, models) through a loopback mlflow server; rates in {DEFAULT_EPOCHS}-epoch runs"
    )
    base = rows[0]
    print(
        f"{'nodes':>5} {'members':>7} {'sweep s':>8} {'window s':>8} {'s/epoch':>8} {'fixed s':>8} "
        f"{'runs/h measured':>15} {'runs/h':>7} {'vs ' + str(base['nodes']) + ' node':>9}"
    )
    for r in rows:
        print(
            f"{r['nodes']:>5} {r['members']:>7} {r['wall_s']:8.1f} {r['window_s']:8.1f} {r['epoch_s']:8.2f} "
            f"{r['fixed_s']:8.1f} {r['measured_per_hour']:15.2f} {r['runs_per_hour']:7.2f} "
            f"{r['runs_per_hour'] / base['runs_per_hour']:8.2f}x"
        )


if __name__ == "__main__":
    main()
