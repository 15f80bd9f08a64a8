"""Sweeps: a grid of seeds and train options, trained as parallel tracked runs, then compared.

``dsc sweep --seeds 0,1,2 --grid lr=1e-4,3e-4 --set epochs=30`` trains every combination of
the grid (here 2 learning rates x 3 seeds = 6 runs), each as its own ``python -m dsc train``
process logging to the same tracking store (MLFLOW_TRACKING_URI: a file, a database or a
shared server): ``--parallel N`` at a time on this machine (``--engine local``), or as Ray
tasks on a cluster (``--engine ray``, :mod:`dsc.jobs.sweep.cluster`). Every member run is tagged
``dsc.sweep = <sweep id>`` and named after its settings; when all have finished, :func:`dsc.jobs.compare.compare_job`
decomposes the learning curves of exactly those runs, grouped by the grid's keys (the seeds
are the replicates of each group).

Keys are ``dsc train`` option names (``image-size`` or ``image_size``) and every value is
checked up front with the setting's declared type, range and choices (:mod:`dsc.settings`)
and the configs' rules, so a typo fails the sweep before anything trains. A member that
fails does not stop the others; the sweep then fails with one line naming it, and the
finished runs stay in the store.

Public API: :func:`sweep_job`, :class:`SweepResult`; and, from :mod:`dsc.jobs.sweep.members`,
:class:`SweepConfig`, :class:`Member`, :func:`plan`, :func:`expand`, :func:`parse_seeds`,
:func:`parse_assignments`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dsc.errors import TrackingError
from dsc.jobs.sweep.members import (
    ENGINE_TAG,
    MEMBER_TAG,
    RESERVED,
    SWEEP_TAG,
    THREAD_VARS,
    Member,
    Plan,
    expand,
    member_outcome,
    member_run,
    parse_assignments,
    plan,
    train_options,
)
from dsc.settings import SweepConfig, parse_seeds

_POLL_S = 0.2


@dataclass(frozen=True)
class SweepResult:
    """What a sweep made: its id, its members' run ids and the comparison run's id."""

    sweep_id: str
    run_ids: list[str]  # member runs, in member order
    comparison_id: str


# --------------------------------------------------------------------------- running


@dataclass
class _Launched:
    member: Member
    run_id: str
    log: Path
    rc: Path | None = None  # where a batch process writes this member's exit status
    proc: subprocess.Popen = field(init=False)  # set once the members' process has started


def sweep_job(
    config: SweepConfig,
    data_kw: Mapping[str, object] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> SweepResult:
    """Check, train every member (``config.parallel`` at a time), compare them; the result.

    Raises
    ------
    ConfigError
        A bad key or value (before anything runs).
    TrackingError
        A member failed (the others ran to the end and are kept), or the comparison failed.
    """
    import mlflow
    from tqdm.auto import tqdm

    from dsc import tracking
    from dsc.jobs.compare import compare_job
    from dsc.settings import CompareConfig

    the_plan = plan(config, data_kw)
    echo = echo or (lambda line: tqdm.write(line, file=sys.stderr))
    tracking.preflight(config.experiment)
    with contextlib.ExitStack() as stack:
        cluster = None
        if config.engine == "ray":
            from dsc.jobs.sweep import cluster as sweep_ray

            cluster = stack.enter_context(sweep_ray.connected(config))  # refuses an unreachable store
        if config.experiment:
            mlflow.set_experiment(config.experiment)  # created once here, not raced by the members
        experiment_id = mlflow.tracking.fluent._get_experiment_id()
        assert experiment_id is not None  # the one set above, or MLflow's default experiment
        sweep_id = uuid.uuid4().hex[:8]
        bar = stack.enter_context(
            tqdm(total=len(the_plan.members), desc=f"sweep {sweep_id}", unit="run", disable=not progress)
        )
        if cluster is not None:
            done = sweep_ray.train_all(the_plan, sweep_id, experiment_id, cluster, bar, echo)
        else:
            logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsc-sweep-"))
            done = _train_all(the_plan, sweep_id, experiment_id, Path(logs), bar, echo)
    failed = [(m, rid, why) for m, rid, why in done if why]
    run_ids = [rid for _, rid, _ in done]
    if failed:
        raise TrackingError(_failure_line(sweep_id, failed, len(done)))
    comparison = compare_job(
        CompareConfig(
            run_ids=tuple(run_ids),
            metric=config.metric,
            max_components=config.max_components,
            color_by=the_plan.color_by,
            group_by=_logged(the_plan.grid_keys, run_ids[0]),
        ),
        warn=lambda line: echo(f"warning: {line}"),
    )
    mlflow.MlflowClient().set_tag(comparison, SWEEP_TAG, sweep_id)
    return SweepResult(sweep_id, run_ids, comparison)


def _logged(keys: Sequence[str], run_id: str) -> tuple[str, ...]:
    """The grid keys a member logged as params under the same name: those the runs group by."""
    import mlflow

    params = mlflow.MlflowClient().get_run(run_id).data.params
    return tuple(k for k in keys if k in params)


def _train_all(
    the_plan: Plan, sweep_id: str, experiment_id: str, logs: Path, bar, echo: Callable[[str], None]
) -> list[tuple[Member, str, str]]:
    """Run the members; ``(member, run id, why it failed or "")`` in member order."""
    pending = deque(the_plan.members)
    running: list[_Launched] = []
    done: dict[int, tuple[Member, str, str]] = {}
    try:
        while pending or running:
            while pending and len({id(j.proc) for j in running}) < the_plan.config.parallel:
                batch = [pending.popleft() for _ in range(min(the_plan.config.per_process, len(pending)))]
                running += _launch(the_plan, batch, sweep_id, experiment_id, logs)
                bar.set_postfix(running=len(running), failed=sum(1 for *_, w in done.values() if w))
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                why = _outcome(job)
                done[job.member.index] = (job.member, job.run_id, why)
                echo(f"run {job.run_id} ({job.member.label}) " + (f"failed: {why}" if why else "finished"))
                bar.update()
            time.sleep(_POLL_S if running else 0)
    except BaseException:
        _stop(running)
        raise
    return [done[i] for i in sorted(done)]


def _launch(the_plan: Plan, batch: list[Member], sweep_id: str, experiment_id: str, logs: Path) -> list[_Launched]:
    """Create the members' runs, then start one process for them, attached to each in turn.

    One member: ``python -m dsc train`` (MLFLOW_RUN_ID names its run); several:
    ``python -m dsc train-members`` (:mod:`dsc.jobs.sweep.batch`), one after another.
    """
    import json

    import mlflow

    run_ids = [member_run(the_plan, member, sweep_id, experiment_id) for member in batch]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    # Members share the CPUs: one BLAS/OpenMP/numba pool each, sized to its share, unless set.
    share = str(max(1, (os.cpu_count() or 1) // the_plan.config.parallel))
    for var in THREAD_VARS:
        env.setdefault(var, env.get("OMP_NUM_THREADS", share))
    jobs = [_Launched(m, rid, logs / f"{m.index:04d}.log") for m, rid in zip(batch, run_ids)]
    if len(batch) == 1:
        command = [sys.executable, "-m", "dsc", "train", *the_plan.argv(batch[0])]
        env["MLFLOW_RUN_ID"] = run_ids[0]
        out_path = jobs[0].log
    else:
        for job in jobs:
            job.rc = job.log.with_suffix(".rc")
        spec = logs / f"{batch[0].index:04d}.batch.json"
        spec.write_text(
            json.dumps(
                [
                    {"run_id": j.run_id, "argv": the_plan.argv(j.member), "log": str(j.log), "rc": str(j.rc)}
                    for j in jobs
                ]
            )
        )
        command = [sys.executable, "-m", "dsc", "train-members", str(spec)]
        env.pop("MLFLOW_RUN_ID", None)
        out_path = spec.with_suffix(".log")
    with out_path.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    for job in jobs:
        job.proc = proc
    return jobs


def _outcome(job: _Launched) -> str:
    code = job.proc.returncode
    if job.rc is not None:  # a batch process: the member's own status, if it got that far
        code = int(job.rc.read_text()) if job.rc.exists() else code or 1
    log = job.log.read_text(errors="replace") if job.log.exists() else ""
    return member_outcome(job.run_id, code, log)


def _stop(running: list[_Launched]) -> None:
    """Interrupted: stop the members still training and mark their runs KILLED."""
    import mlflow

    for job in running:
        if job.proc.poll() is None:
            job.proc.terminate()
    for job in running:
        try:
            job.proc.wait(10)
        except subprocess.TimeoutExpired:
            job.proc.kill()
        mlflow.MlflowClient().set_terminated(job.run_id, "KILLED")


def _failure_line(sweep_id: str, failed: list[tuple[Member, str, str]], total: int) -> str:
    shown = "; ".join(f"run {rid} ({m.label}): {why}" for m, rid, why in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    return (
        f"sweep {sweep_id}: {len(failed)} of {total} runs failed: {shown}{more}; kept: "
        f"{total - len(failed)} finished run(s) (tag {SWEEP_TAG} = {sweep_id}); continue a "
        "failed run with `dsc train --resume RUN_ID`, then compare with "
        f"dsc compare --filter \"tags.`{SWEEP_TAG}` = '{sweep_id}'\""
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
    "sweep_job",
    "train_options",
]
