"""What a sweep's members are: the grid checked and expanded, each member's run and outcome.

Shared by both engines of :mod:`dsc.jobs.sweep` (local processes) and
:mod:`dsc.jobs.sweep.cluster` (Ray tasks). Keys are ``dsc train`` option names (``image-size`` or
``image_size``) and every value is checked up front with the setting's declared type, range and
choices (:mod:`dsc.settings`) and the configs' rules, so a typo fails the sweep before
anything trains.

Public API: :class:`Member`, :class:`Plan`, :func:`plan`, :func:`expand`,
:func:`parse_assignments`, :func:`train_options`, :func:`member_run`, :func:`member_outcome`.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dsc.errors import ConfigError
from dsc.settings import (
    TRAIN_CONFIGS,
    Option,
    SweepConfig,
    build,
    options_of,
    parse_text,
)

SWEEP_TAG = "dsc.sweep"
MEMBER_TAG = "dsc.sweep_member"  # the member's grid settings, e.g. "lr=0.0003 seed=1"
ENGINE_TAG = "dsc.sweep_engine"  # local or ray
# Train options a sweep sets itself: the key, and what to do instead.
RESERVED = {
    "seed": "list seeds with --seeds",
    "experiment": "pass --experiment to dsc sweep",
    "run_name": "member runs are named after their settings",
    "progress": "members run without progress bars; the sweep shows one",
    "resume": "resume a failed member with `dsc train --resume RUN_ID`",
    "register": "pass --register to dsc sweep",
}
# Sweep settings that only the ray engine reads.
# A member's thread pools (torch's OpenMP, BLAS, numba's kernel threads), sized to its CPU share.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
RAY_ONLY = ("ray_address", "cpus_per_run", "gpus_per_run", "max_retries", "shared_store")
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
        register = [] if self.config.register else ["--no-register"]
        return [*_argv({**self.fixed, **member.settings}), "--no-progress", *register]

    @property
    def grid_keys(self) -> tuple[str, ...]:
        """The swept options but the seed: what the comparison groups the runs by."""
        return tuple(k for k in self.members[0].settings if k != "seed")

    @property
    def color_by(self) -> str:
        if self.config.color_by:
            return self.config.color_by
        return self.grid_keys[0] if self.grid_keys else "seed"


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
            raise ConfigError(
                f"{option} {word!r}: use KEY=VALUE{',VALUE...' if many else ''}, "
                f"e.g. {'lr=1e-4,3e-4' if many else 'epochs=30'}"
            )
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
    defaults = SweepConfig()
    if config.engine != "ray":
        for key in (k for k in RAY_ONLY if getattr(config, k) != getattr(defaults, k)):
            raise ConfigError(f"--{key.replace('_', '-')} applies to --engine ray only")
    elif config.per_process != defaults.per_process:
        raise ConfigError("--per-process applies to --engine local only (Ray schedules each member)")
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
            raise ConfigError(f"--grid {key}: also a fixed setting (--set or --{key.replace('_', '-')}); keep one")
        grid[key] = [_convert(key, raw, "--grid", options) for raw in raws]
    members = expand(config.seeds, grid)
    for member in members:
        _check_configs({**fixed, **member.settings}, member, config)
    return Plan(config, fixed, members)


def _check_configs(values: Mapping[str, object], member: Member, config: SweepConfig) -> None:
    """Build the configs a member's training would build, so their rules apply up front.

    The device is checked here for the local engine; on Ray the member's node has the devices,
    so a CUDA device asks for reserved GPUs (``--gpus-per-run``) instead.
    """
    from dsc.nn.train import pick_device

    device = str(values.get("device", train_options()["device"].default))
    try:
        build(TRAIN_CONFIGS, values)
        if config.engine == "local":
            pick_device(device)
        elif device.startswith("cuda") and config.gpus_per_run <= 0:
            raise ConfigError(f"--device {device} on --engine ray needs GPUs reserved with --gpus-per-run")
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


# --------------------------------------------------------------------------- each member's run


def member_run(the_plan: Plan, member: Member, sweep_id: str, experiment_id: str) -> str:
    """Create a member's run (named and tagged), for its training process to attach to; its id."""
    import mlflow

    from dsc import tracking

    run = mlflow.MlflowClient().create_run(
        experiment_id,
        run_name=f"sweep-{sweep_id} {member.label}",
        tags={
            SWEEP_TAG: sweep_id,
            MEMBER_TAG: member.label,
            tracking.KIND_TAG: "train",
            ENGINE_TAG: the_plan.config.engine,
        },
    )
    return run.info.run_id


def member_outcome(run_id: str, returncode: int, log_text: str) -> str:
    """Why a finished member failed ("" when it did not); a run its process left open is FAILED.

    ``log_text`` is the training process's output: its last ``error:`` line is the reason.
    """
    import mlflow

    client = mlflow.MlflowClient()
    status = client.get_run(run_id).info.status
    if returncode == 0 and status == "FINISHED":
        return ""
    if status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run_id, "FAILED")
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {returncode}, run {status}"


__all__ = [
    "ENGINE_TAG",
    "MEMBER_TAG",
    "RAY_ONLY",
    "RESERVED",
    "SWEEP_TAG",
    "THREAD_VARS",
    "Member",
    "Plan",
    "expand",
    "member_outcome",
    "member_run",
    "parse_assignments",
    "plan",
    "train_options",
]
