"""``dsc compare --group-by identities`` of 100 runs: wall time against the floor of 10 s.

Builds ``--runs`` (100) finished training runs in a temporary SQLite store: ``identities`` in
2, 3, 5, 8 (``seed`` the replicate), each an accuracy curve over 30 epochs with one logistic
per 3 identities (1, 1, 2, 3 components) plus Gaussian noise. Then times, best of
``--repeats``, :func:`dsc.jobs.compare.compare_job` with and without ``--group-by identities``
(every CPU): the difference is what grouping, its statistics, tables and three figures add.
Prints the planted trend's rho and p as the comparison run logged them.

    uv run python bench/compare_groups.py [--runs 100] [--repeats 1]
"""

from __future__ import annotations

import os

# Before numpy loads OpenBLAS: one thread per process, the pool supplies the parallelism.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from dsc.jobs.compare import compare_job  # noqa: E402
from dsc.settings import CompareConfig  # noqa: E402

FLOOR_S = 10.0  # compare --group-by of 100 runs, end to end, on 2 cores
EPOCHS = 30
IDENTITIES = (2, 3, 5, 8)


def build_runs(client: MlflowClient, experiment_id: str, n_runs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(float(EPOCHS))
    for i in range(n_runs):
        k = IDENTITIES[i % len(IDENTITIES)]
        n = 1 + k // 3
        centres = np.linspace(5, 25, n + 2)[1:-1] + rng.normal(0, 0.5, n)
        y = 0.2 + sum(0.7 / n / (1 + np.exp(-(t - c) / 0.8)) for c in centres)
        y = y + rng.normal(0.0, 0.005, t.size)
        run = client.create_run(experiment_id, tags={"dsc.kind": "train"})
        stamp = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc/val", float(v), stamp, e) for e, v in enumerate(y)],
            params=[Param("identities", str(k)), Param("seed", str(i // len(IDENTITIES)))],
        )
        client.set_terminated(run.info.run_id)


def best_of(repeats: int, fn) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="dsc-bench-groups-") as tmp, contextlib.chdir(tmp):
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        client = MlflowClient()
        exp = client.create_experiment("bench")
        build_runs(client, exp, args.runs, args.seed)
        plain = CompareConfig(experiments=("bench",), max_components=3, color_by="identities")
        grouped = CompareConfig(
            experiments=("bench",), max_components=3, color_by="identities", group_by=("identities",)
        )
        without, _ = best_of(args.repeats, lambda: compare_job(plain, warn=print))
        with_groups, cid = best_of(args.repeats, lambda: compare_job(grouped, warn=print))
        metrics = client.get_run(cid).data.metrics
    print(f"{args.runs} runs, {EPOCHS} epochs each; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    print(f"compare             {without:6.2f} s")
    print(f"compare --group-by  {with_groups:6.2f} s (grouping adds {with_groups - without:.2f} s)")
    print(
        f"trend of N against identities: rho {metrics['trend/n_components/rho']:.2f}, "
        f"p {metrics['trend/n_components/p']:.2g}"
    )
    verdict = "meets" if with_groups <= FLOOR_S else "MISSES"
    print(f"compare --group-by of {args.runs} runs {verdict} the floor of {FLOOR_S:.0f} s")


if __name__ == "__main__":
    main()
