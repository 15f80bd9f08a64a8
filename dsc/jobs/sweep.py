"""Sweeps: a grid of seeds and train options, trained as parallel tracked runs, then compared.

``dsc sweep --seeds 0,1,2 --grid lr=1e-4,3e-4 --set epochs=30`` trains every combination of
the grid (here 2 learning rates x 3 seeds = 6 runs), ``--parallel N`` at a time, each as its
own ``python -m dsc train`` process logging to the same tracking store (MLFLOW_TRACKING_URI:
a file, a database or a shared server). Every member run is tagged ``dsc.sweep = <sweep id>``
and named after its settings; when all have finished, :func:`dsc.jobs.compare.compare_job`
decomposes the learning curves of exactly those runs, grouped by the grid's keys (the seeds
are the replicates of each group).

Keys are ``dsc train`` option names (``image-size`` or ``image_size``) and every value is
checked up front with the setting's declared type, range and choices (:mod:`dsc.settings`)
and the configs' rules, so a typo fails the sweep before anything trains. A member that
fails does not stop the others; the sweep then fails with one line naming it, and the
finished runs stay in the store.

Public API: :class:`SweepConfig`, :class:`Member`, :func:`plan`, :func:`expand`,
:func:`parse_seeds`, :func:`parse_assignments`, :func:`sweep_job`.
"""
from __future__ import annotations

import difflib
import itertools
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

from dsc.errors import ConfigError, TrackingError
from dsc.settings import (
    TRAIN_CONFIGS,
    Option,
    SweepConfig,
    build,
    options_of,
    parse_seeds,
    parse_text,
)

SWEEP_TAG = "dsc.sweep"
MEMBER_TAG = "dsc.sweep_member"  # the member's grid settings, e.g. "lr=0.0003 seed=1"
# Train options a sweep sets itself: the key, and what to do instead.
RESERVED = {
    "seed": "list seeds with --seeds",
    "experiment": "pass --experiment to dsc sweep",
    "run_name": "member runs are named after their settings",
    "progress": "members run without progress bars; the sweep shows one",
    "resume": "resume a failed member with `dsc train --resume RUN_ID`",
}
_POLL_S = 0.2


@dataclass(frozen=True)
class Member:
    """One training of a sweep: its grid settings (option name -> checked value)."""

    index: int
    settings: dict[str, object] = field(hash=False)

    @property
    def label(self) -> str:
        """``lr=0.0003 seed=1``: the settings that tell this member from the others."""
        return " ".join(f"{k}={_text(v)}" for k, v in self.settings.items())


@dataclass(frozen=True)
class Plan:
    """A checked sweep: the shared options, the members, and the ``dsc train`` command of each."""

    config: SweepConfig
    fixed: dict[str, object]
    members: list[Member]

    def argv(self, member: Member) -> list[str]:
        """``dsc train`` arguments of one member (the fixed options, then its own)."""
        return [*_argv({**self.fixed, **member.settings}), "--no-progress"]

    @property
    def grid_keys(self) -> tuple[str, ...]:
        """The swept options but the seed: what the comparison groups the runs by."""
        return tuple(k for k in self.members[0].settings if k != "seed")

    @property
    def color_by(self) -> str:
        if self.config.color_by:
            return self.config.color_by
        return self.grid_keys[0] if self.grid_keys else "seed"


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    run_ids: list[str]  # member runs, in member order
    comparison_id: str


# --------------------------------------------------------------------------- parsing (pure)


def parse_assignments(items: Sequence[str], option: str, many: bool) -> dict[str, list[str]]:
    """``["lr=1e-4,3e-4 epochs=5"]`` to ``{"lr": ["1e-4", "3e-4"], "epochs": ["5"]}``.

    Items hold whitespace-separated ``KEY=VALUE`` words; keys are normalised to option names
    (``--image-size`` and ``image-size`` to ``image_size``). With ``many``, a value is a comma
    list; without, it is taken whole (a single value).
    """
    out: dict[str, list[str]] = {}
    for word in (w for item in items for w in item.split()):
        key, eq, value = word.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not eq or not key or not value:
            raise ConfigError(f"{option} {word!r}: use KEY=VALUE{',VALUE...' if many else ''}, "
                              f"e.g. {'lr=1e-4,3e-4' if many else 'epochs=30'}")
        if key in out:
            raise ConfigError(f"{option} {word!r}: {key} is given twice")
        values = [v for v in value.split(",")] if many else [value]
        if any(not v for v in values) or len(set(values)) < len(values):
            raise ConfigError(f"{option} {word!r}: values must be distinct and non-empty")
        out[key] = values
    return out


def expand(seeds: Sequence[int], grid: Mapping[str, Sequence[object]]) -> list[Member]:
    """Every combination of the grid's values, each with every seed (seeds vary fastest).

    >>> [m.label for m in expand([0, 1], {"lr": [0.1, 0.2]})]
    ['lr=0.1 seed=0', 'lr=0.1 seed=1', 'lr=0.2 seed=0', 'lr=0.2 seed=1']
    """
    keys = list(grid)
    combos = itertools.product(*(grid[k] for k in keys), seeds)
    return [Member(i, {**dict(zip(keys, combo[:-1])), "seed": combo[-1]}) for i, combo in enumerate(combos)]


# --------------------------------------------------------------------------- checking


def train_options() -> dict[str, Option]:
    """``dsc train``'s settings by parameter name (``image_size`` for ``--image-size``)."""
    return options_of(*TRAIN_CONFIGS)


def _convert(key: str, raw: str, option: str, options: Mapping[str, Option]) -> object:
    """A value checked with the setting's declared type, range and choices."""
    try:
        return parse_text(options[key], raw)
    except ConfigError as exc:
        raise ConfigError(f"{option} {key}={raw}: {exc}") from None


def _check_key(key: str, option: str, options: Mapping[str, Option]) -> None:
    if key in RESERVED:
        raise ConfigError(f"{option} {key}: not a sweep key; {RESERVED[key]}")
    if key not in options:
        close = difflib.get_close_matches(key, [k for k in options if k not in RESERVED], n=1)
        hint = f"did you mean {close[0]}?" if close else "see `dsc train --help`"
        raise ConfigError(f"{option} {key}: no such dsc train option; {hint}")


def plan(config: SweepConfig, data_kw: Mapping[str, object] | None = None) -> Plan:
    """Check every key and value of a sweep and list its members.

    ``data_kw`` holds data options given to ``dsc sweep`` directly (already checked by the command line);
    they are fixed settings like ``--set`` ones. Raises :class:`ConfigError` (one line) for an
    unknown or reserved key, a key given twice, a value its option refuses, or a combination
    the configs refuse (an even kernel size, a CUDA device where there is none).
    """
    options = train_options()
    grid_raw = parse_assignments(config.grid, "--grid", many=True)
    fixed_raw = parse_assignments(config.fixed, "--set", many=False)
    fixed: dict[str, object] = dict(data_kw or {})
    for key, (raw,) in fixed_raw.items():
        _check_key(key, "--set", options)
        if key in fixed:
            raise ConfigError(f"--set {key}={raw}: --{key.replace('_', '-')} is given too; keep one")
        fixed[key] = _convert(key, raw, "--set", options)
    grid: dict[str, list[object]] = {}
    for key, raws in grid_raw.items():
        _check_key(key, "--grid", options)
        if key in fixed:
            raise ConfigError(f"--grid {key}: also a fixed setting (--set or --{key.replace('_', '-')}); "
                              "keep one")
        grid[key] = [_convert(key, raw, "--grid", options) for raw in raws]
    members = expand(config.seeds, grid)
    for member in members:
        _check_configs({**fixed, **member.settings}, member)
    return Plan(config, fixed, members)


def _check_configs(values: Mapping[str, object], member: Member) -> None:
    """Build the configs a member's training would build, so their rules apply up front."""
    from dsc.nn.train import pick_device

    try:
        build(TRAIN_CONFIGS, values)
        pick_device(str(values.get("device", train_options()["device"].default)))
    except (ConfigError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"sweep member {member.label}: {exc}") from None


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _argv(settings: Mapping[str, object]) -> list[str]:
    """Command-line words for option values (``--no-x`` for a false on/off flag)."""
    options = train_options()
    out: list[str] = []
    for key, value in settings.items():
        opt = options[key]
        if opt.kind is bool:
            out.append(opt.flag if value else f"--no-{opt.name}")
        else:
            out += [opt.flag, _text(value)]
    return out


# --------------------------------------------------------------------------- running


@dataclass
class _Launched:
    member: Member
    run_id: str
    proc: subprocess.Popen
    log: Path


def sweep_job(config: SweepConfig, data_kw: Mapping[str, object] | None = None, progress: bool = True,
              echo: Callable[[str], None] | None = None) -> SweepResult:
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
    tracking.ensure_store()
    if config.experiment:
        mlflow.set_experiment(config.experiment)  # created once here, not raced by the members
    experiment_id = mlflow.tracking.fluent._get_experiment_id()
    sweep_id = uuid.uuid4().hex[:8]
    bar = tqdm(total=len(the_plan.members), desc=f"sweep {sweep_id}", unit="run", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="dsc-sweep-") as logs, bar:
        done = _train_all(the_plan, sweep_id, experiment_id, Path(logs), bar, echo)
    failed = [(m, rid, why) for m, rid, why in done if why]
    run_ids = [rid for _, rid, _ in done]
    if failed:
        raise TrackingError(_failure_line(sweep_id, failed, len(done)))
    comparison = compare_job(CompareConfig(run_ids=tuple(run_ids), metric=config.metric,
                                           max_components=config.max_components,
                                           color_by=the_plan.color_by,
                                           group_by=_logged(the_plan.grid_keys, run_ids[0])),
                             warn=lambda line: echo(f"warning: {line}"))
    mlflow.MlflowClient().set_tag(comparison, SWEEP_TAG, sweep_id)
    return SweepResult(sweep_id, run_ids, comparison)


def _logged(keys: Sequence[str], run_id: str) -> tuple[str, ...]:
    """The grid keys a member logged as params under the same name: those the runs group by."""
    import mlflow

    params = mlflow.MlflowClient().get_run(run_id).data.params
    return tuple(k for k in keys if k in params)


def _train_all(the_plan: Plan, sweep_id: str, experiment_id: str, logs: Path, bar,
               echo: Callable[[str], None]) -> list[tuple[Member, str, str]]:
    """Run the members; ``(member, run id, why it failed or "")`` in member order."""
    pending, running, done = deque(the_plan.members), [], {}
    try:
        while pending or running:
            while pending and len(running) < the_plan.config.parallel:
                running.append(_launch(the_plan, pending.popleft(), sweep_id, experiment_id, logs))
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


def _launch(the_plan: Plan, member: Member, sweep_id: str, experiment_id: str, logs: Path) -> _Launched:
    """Create the member's run, then start ``python -m dsc train`` attached to it (MLFLOW_RUN_ID)."""
    import mlflow

    from dsc import tracking

    run = mlflow.MlflowClient().create_run(
        experiment_id, run_name=f"sweep-{sweep_id} {member.label}",
        tags={SWEEP_TAG: sweep_id, MEMBER_TAG: member.label, tracking.KIND_TAG: "train"})
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "MLFLOW_RUN_ID": run.info.run_id}
    # Members share the CPUs: one BLAS/OpenMP pool each, sized to its share, unless set.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // the_plan.config.parallel)))
    log = logs / f"{member.index:04d}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dsc", "train", *the_plan.argv(member)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    return _Launched(member, run.info.run_id, proc, log)


def _outcome(job: _Launched) -> str:
    """Why a finished member failed ("" when it did not); a run its process left open is FAILED."""
    import mlflow

    client = mlflow.MlflowClient()
    status = client.get_run(job.run_id).info.status
    if job.proc.returncode == 0 and status == "FINISHED":
        return ""
    if status == "RUNNING":
        client.set_terminated(job.run_id, "FAILED")
    lines = [ln.strip() for ln in job.log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {job.proc.returncode}, run {status}"


def _stop(running: list[_Launched]) -> None:
    """Interrupted: stop the members still training and mark their runs KILLED."""
    import mlflow

    for job in running:
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
    return (f"sweep {sweep_id}: {len(failed)} of {total} runs failed: {shown}{more}; kept: "
            f"{total - len(failed)} finished run(s) (tag {SWEEP_TAG} = {sweep_id}); continue a "
            "failed run with `dsc train --resume RUN_ID`, then compare with "
            f"dsc compare --filter \"tags.`{SWEEP_TAG}` = '{sweep_id}'\"")


__all__ = ["SweepConfig", "Member", "Plan", "SweepResult", "plan", "expand", "parse_seeds",
           "parse_assignments", "train_options", "sweep_job"]
