"""``dsc compare`` end to end on synthetic runs: runs fitted per second.

Builds ``--runs`` (200) synthetic training runs in a temporary SQLite store, each an accuracy
curve over 60 epochs made of 1-3 random logistic components plus Gaussian noise, logged as
``acc/val`` with step = epoch. Then times, best of ``--repeats``:

- ``end to end``: :func:`dsc.jobs.compare.compare_job` (K = 3, every CPU): search, history reads,
  parallel fits, ``lld/*`` written back to every source run, table, figures, artifacts;
- ``fitting alone``: :func:`dsc.core.lld.batch.fit_curves` over the same curves, same workers;
- ``fitting, 1 process``: the same, serial (the parallel speed-up is the ratio);

and prints each as runs per second, and how often the chosen N is the planted one; then the
CPU time per curve of the two stages of each fit (serial, in this process): the fast search
(`dsc.core.lld.search`, every N) and lmfit's ``Model.fit`` of each N from its optimum
(`dsc.core.lld.model`). Floor: >= 20 runs/s end to end on 2 cores.

On shared cores busy with other work, CPU times compare and wall times barely do. Of a
fit's CPU time, lmfit's final ``Model.fit`` takes about as much as the search, about half of
it lmfit copying its Parameters and propagating the centres' errors through their
expressions. The current reading is the compare row of the benchmark page, docs/benchmarks.md.

Wall times swing with whatever else the machine runs, so the CPU seconds of the end-to-end
call are printed too (this process, and its worker processes once joined) with the wall time
they imply on idle cores: at least max(main, (main + workers) / cores).

    uv run python bench/compare.py [--runs 200] [--jobs 0] [--repeats 1]
"""

from __future__ import annotations

import os

# Before numpy loads OpenBLAS: one thread per process, the pool supplies the parallelism.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from dsc.core.lld import model as lld_model  # noqa: E402
from dsc.core.lld import search as lld_search  # noqa: E402
from dsc.core.lld.batch import cpu_count, fit_curves  # noqa: E402
from dsc.jobs.compare import compare_job  # noqa: E402
from dsc.settings import CompareConfig  # noqa: E402

FLOOR = 20.0  # runs per second, end to end, on 2 cores
EPOCHS = 60
LRS = ("0.001", "0.003", "0.01", "0.03")


def synthetic_curve(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(planted N, accuracy over epochs 0..EPOCHS-1): 0.2 + 1-3 logistics + noise."""
    n = int(rng.integers(1, 4))
    t = np.arange(float(EPOCHS))
    widths = rng.uniform(0.8, 3.0, n)
    # Centres at least ~4 widths apart, so that the planted N is identifiable.
    centres = np.sort(rng.uniform(6, 54, n))
    while n > 1 and np.min(np.diff(centres)) < 4 * widths.max():
        centres = np.sort(rng.uniform(6, 54, n))
    amps = 0.75 * rng.dirichlet(np.full(n, 4.0))
    y = 0.2 + sum(a / (1 + np.exp(-(t - c) / w)) for a, c, w in zip(amps, centres, widths))
    return n, y + rng.normal(0.0, 0.01, t.size)


def build_runs(client: MlflowClient, experiment_id: str, n_runs: int, seed: int) -> list[int]:
    """Log ``n_runs`` finished training runs; returns each run's planted N, in creation order."""
    rng = np.random.default_rng(seed)
    planted = []
    for i in range(n_runs):
        n, y = synthetic_curve(rng)
        run = client.create_run(experiment_id, tags={"dsc.kind": "train"})
        stamp = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc/val", float(v), stamp, e) for e, v in enumerate(y)],
            params=[Param("lr", LRS[i % len(LRS)]), Param("seed", str(i))],
            tags=[RunTag("planted_n", str(n))],
        )
        client.set_terminated(run.info.run_id)
        planted.append(n)
    return planted


def best_of(repeats: int, fn) -> tuple[float, object, tuple[float, float]]:
    """Best wall time of ``repeats`` calls, the last result, and the CPU seconds (this process,
    joined children) of the best call."""
    best, out, cpu = float("inf"), None, (0.0, 0.0)
    for _ in range(repeats):
        start, main0, kids0 = time.perf_counter(), time.process_time(), _children_cpu()
        out = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, (time.process_time() - main0, _children_cpu() - kids0)
    return best, out, cpu


def stage_cpu(curves: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[float, float]:
    """CPU seconds per curve of the search (N = 1..k) and of lmfit's fits from its optima."""
    search = final = 0.0
    for t, y in curves:
        start = time.process_time()
        frame = lld_search.Frame.build(t, y, "auto")
        optima = lld_search.search(frame, k)
        middle = time.process_time()
        for n, theta in optima.items():
            lld_model.fit(frame, n, theta)
        search, final = search + middle - start, final + time.process_time() - middle
    return search / len(curves), final / len(curves)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=0, help="0: every CPU")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    jobs = args.jobs or cpu_count()
    with tempfile.TemporaryDirectory(prefix="dsc-bench-compare-") as tmp, contextlib.chdir(tmp):
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        client = MlflowClient()
        exp = client.create_experiment("bench")
        start = time.perf_counter()
        planted = build_runs(client, exp, args.runs, args.seed)
        print(
            f"built {args.runs} runs ({EPOCHS} epochs each) in {time.perf_counter() - start:.1f} s; "
            f"{jobs} worker process(es) on {cpu_count()} CPU(s)"
        )

        config = CompareConfig(experiments=("bench",), max_components=3, jobs=args.jobs)
        e2e, cid, (main_cpu, kids_cpu) = best_of(args.repeats, lambda: compare_job(config, warn=print))
        runs = mlflow.search_runs(
            [exp],
            "tags.`dsc.kind` = 'train'",
            output_format="list",
            order_by=["attributes.start_time ASC"],
            max_results=50_000,
        )
        curves = [
            tuple(
                np.asarray(v, dtype=float)
                for v in zip(*((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "acc/val")))
            )
            for r in runs
        ]
        par, fits, _ = best_of(args.repeats, lambda: fit_curves(curves, 3, args.jobs))
        ser, _, _ = best_of(args.repeats, lambda: fit_curves(curves, 3, 1))

    agree = np.mean([f["n"] == n for f, n in zip(fits, planted)])
    n = args.runs
    print(f"{'':22s}{'seconds':>9s}{'runs/s':>9s}")
    for label, sec in (("end to end", e2e), ("fitting alone", par), ("fitting, 1 process", ser)):
        print(f"{label:22s}{sec:9.2f}{n / sec:9.1f}")
    print(f"MLflow I/O, figures and artifacts: {e2e - par:.2f} s ({(e2e - par) / e2e:.0%} of end to end)")
    print(f"parallel speed-up of the fits: {ser / par:.2f}x with {jobs} process(es)")
    print(f"chosen N = planted N on {agree:.0%} of the runs; comparison run {cid}")
    idle = max(main_cpu, (main_cpu + kids_cpu) / min(2, cpu_count()))
    print(
        f"end to end CPU: {main_cpu:.2f} s in this process + {kids_cpu:.2f} s in workers "
        f"({1000 * (main_cpu + kids_cpu) / n:.0f} ms per run); on 2 idle cores >= {idle:.2f} s "
        f"wall, {n / idle:.1f} runs/s at most"
    )
    search, final = stage_cpu(curves, 3)
    print(
        f"per curve, 1 process: search {1e3 * search:.1f} ms + lmfit Model.fit of N = 1..3 {1e3 * final:.1f} ms of CPU"
    )
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    verdict = "meets" if n / e2e >= FLOOR else "MISSES"
    print(f"end to end {n / e2e:.1f} runs/s {verdict} the floor of {FLOOR:.0f} runs/s")


if __name__ == "__main__":
    main()
