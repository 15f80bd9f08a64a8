"""The ``dsc`` command line: one subcommand per MLproject entry point.

Every option that is a setting is generated from its declaration in :mod:`dsc.settings`
(:func:`options`); the commands build the configs from the values. Importing this module
imports neither torch nor mlflow, so ``--help`` answers at once: the jobs are imported when a
command runs.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click

from dsc.errors import ConfigError, DscError, Interrupted
from dsc.settings import (
    TRAIN_CONFIGS,
    AnalyzeConfig,
    CompareConfig,
    DataConfig,
    Option,
    SnapshotConfig,
    SweepConfig,
    TrackConfig,
    build,
    options_of,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SWEEP_CONFIGS = (DataConfig, SweepConfig)  # `dsc sweep`'s: data options given directly, and the sweep's


def os_error_line(exc: OSError) -> str:
    """What an operating-system error during a job means for the user, in one line."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (
            f"no space left on device{where}: free disk space (or point the artifact store "
            "elsewhere), then continue a training run with `dsc train --resume RUN_ID`"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; check the permissions of the store and the cache"
    return f"{exc.strerror or exc}{where}"


def error_line(exc: Exception) -> str | None:
    """The one line a user can act on for ``exc``, or None when it is a bug (keep the traceback)."""
    if isinstance(exc, DscError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_line(exc)
    mlflow_errors = sys.modules.get("mlflow.exceptions")  # not imported: the error is not MLflow's
    if mlflow_errors and isinstance(exc, mlflow_errors.MlflowException):
        return f"MLflow: {exc.message.splitlines()[0] if exc.message else exc}"
    return None


def one_line_errors(fn: Callable) -> Callable:
    """Report errors a user can act on as one ``error:`` line on stderr and exit 1.

    Project errors, operating-system errors (a full disk, a read-only store) and MLflow's own
    errors (an unreachable server, a refused request). The run is already marked FAILED by
    then. Anything else is a bug and keeps its traceback. A training stopped by a signal
    prints its one line (how to continue) and exits with 128 + the signal (130, 143).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Interrupted as exc:
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            line = error_line(exc)
            if line is None:
                raise
        click.echo(f"error: {line}", err=True)
        sys.exit(1)

    return wrapper


def given_on_command_line(ctx: click.Context, names) -> list[str]:
    """The parameters among ``names`` that the user typed (not defaults or environment)."""
    return [n for n in names if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]


def click_option(opt: Option) -> Callable:
    """The click option of one declared setting: its type, range or choices, default and help."""
    spec = opt.spec
    kw: dict[str, Any] = {"help": spec.help, "show_default": opt.default not in ("", ())}
    if opt.kind is bool:
        return click.option(f"{opt.flag}/--no-{opt.name}", opt.param, default=opt.default, **kw)
    if opt.kind in (int, float) and spec.ranged:
        rng: Callable[..., click.ParamType] = click.IntRange if opt.kind is int else click.FloatRange
        kw["type"] = rng(spec.min, spec.max, min_open=spec.min_open, max_open=spec.max_open)
    elif opt.kind in (int, float):
        kw["type"] = opt.kind
    elif spec.choices:
        kw["type"] = click.Choice(spec.choices)
    if opt.kind is tuple and spec.parse:  # given as text ("0,1,2"), parsed by the config
        assert isinstance(opt.default, tuple)  # a dataclass field's default: never a list
        return click.option(opt.flag, opt.param, default=",".join(map(str, opt.default)), metavar=spec.metavar, **kw)
    return click.option(
        opt.flag, opt.param, default=opt.default, multiple=opt.kind is tuple, metavar=spec.metavar, **kw
    )


def options(
    *classes: type, by_field: bool = False, changes: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[Callable], Callable]:
    """Decorate a command with one option per declared setting of ``classes``, in order.

    ``changes`` replaces parts of a setting's declaration for this command only, by field
    name (``dsc snapshot --every`` must be >= 1; the training option allows 0).
    """
    changes = changes or {}
    opts = [
        dataclasses.replace(o, spec=dataclasses.replace(o.spec, **changes.get(o.field, {})))
        for o in options_of(*classes, by_field=by_field).values()
    ]

    def decorate(fn: Callable) -> Callable:
        for opt in reversed(opts):
            fn = click_option(opt)(fn)
        return fn

    return decorate


class OneLineGroup(click.Group):
    """A click group whose usage errors (a bad option value, an unknown option) are one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the command; a usage error prints ``error: ...`` with where to read the help, exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "dsc"
            click.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineGroup, context_settings=CONTEXT)
@click.version_option(package_name="dsc")
def main() -> None:
    """Dense-sample deep learning, tracked in MLflow.

    Train the paper's small VGG-style network on a dense-sample task (few classes, hundreds
    of exemplars each), record every epoch, and analyse the learning curve. Runs go to the
    MLflow tracking store named by MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db here).
    """
    # One progress bar per command: dsc's own. MLflow would add one for every artifact a
    # command downloads (analyze reads each snapshot); MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true
    # brings them back.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@main.command(context_settings=CONTEXT)
@options(*TRAIN_CONFIGS)
@click.option(
    "--resume",
    "resume_id",
    default="",
    metavar="RUN_ID",
    help="Continue this stopped training run from its latest full checkpoint (replaying the "
    "epochs kept after it), into the same run and with its own settings (no other option "
    "may be given).",
)
@click.option(
    "--takeover",
    is_flag=True,
    help="With --resume: continue the run even though its heartbeat says a training process "
    "still holds it (for a holder known to be dead, on another host).",
)
@click.pass_context
@one_line_errors
def train(ctx, resume_id, takeover, **values) -> None:
    """Train the network and log metrics, checkpoints, the dataset and a registered model.

    Metrics (step = epoch, epoch 0 before any update): loss/train, loss/val, acc/train,
    acc/val, acc_class/<class>. The final model is registered with alias 'final', the
    best-validation one with alias 'best'. A run that was killed continues with
    --resume RUN_ID (or `mlflow run . -e resume --run-id RUN_ID`). SIGTERM or Ctrl-C stops
    after the current step: the run ends KILLED and can be resumed; a second one stops at once.
    """
    from dsc.jobs.resume import resume_job
    from dsc.jobs.train import failing_run, train_job

    if takeover and not resume_id:
        raise ConfigError("--takeover applies to --resume RUN_ID only")
    if resume_id:
        given = [
            f"--{name.replace('_', '-')}" for name in given_on_command_line(ctx, [n for n in values if n != "progress"])
        ]
        if given:
            raise ConfigError(f"--resume continues run {resume_id} with its own settings; drop {', '.join(given)}")
        run_id = resume_job(resume_id, progress=values["progress"], takeover=takeover)
        click.echo(f"run {run_id} resumed and finished")
        return

    (track,) = build([TrackConfig], values)
    with failing_run(track):  # a refused value leaves a FAILED run, as a failed training does
        data_cfg, model_cfg, train_cfg, snap_cfg = build(TRAIN_CONFIGS[:4], values)
    run_id = train_job(data_cfg, model_cfg, train_cfg, track, snap_cfg)
    click.echo(f"run {run_id} finished")


@main.command(context_settings=CONTEXT)
@click.option("--run-id", required=True, help="Training run whose per-epoch checkpoints are snapshotted.")
@options(
    SnapshotConfig,
    by_field=True,
    changes={"every": {"min": 1, "help": "Snapshot checkpoints whose epoch is a multiple of N."}},
)
@click.option("--prefix", default="snapshots", show_default=True, help="Artifact directory to write.")
@click.option("--child", is_flag=True, help="Write to a new child run instead of the training run.")
@click.option("--overwrite", is_flag=True, help="Replace snapshots the run already has under --prefix.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@one_line_errors
def snapshot(run_id, prefix, child, overwrite, progress, **values) -> None:
    """Recompute per-epoch snapshots of a training run from its checkpoints.

    Use it to snapshot a run trained with --snapshot-every 0, or with a larger probe set or
    budget. Results go to the training run (refused if it already has them, unless
    --overwrite or another --prefix) or, with --child, to a new child run.
    """
    from dsc.jobs.snapshot import snapshot_job

    (snap_cfg,) = build([SnapshotConfig], values, by_field=True)
    target = snapshot_job(run_id, snap_cfg, child=child, overwrite=overwrite, prefix=prefix, progress=progress)
    click.echo(f"snapshots written to run {target} under {prefix}/")


@main.command(context_settings=CONTEXT)
@click.option("--run-id", required=True, help="Training run whose checkpoint is registered.")
@click.option("--epoch", required=True, type=click.IntRange(min=0), help="Epoch of the checkpoint.")
@click.option("--name", default="", help="Registered model name (default: the run's registered model).")
@click.option("--alias", default="", help="Alias to point at the new version (none by default).")
@one_line_errors
def register(run_id, epoch, name, alias) -> None:
    """Register one epoch's checkpoint of a training run as a model version.

    The version loads like the final model (`mlflow.pytorch.load_model("models:/NAME@ALIAS")`)
    and carries the tags dsc.run_id and dsc.epoch.
    """
    from dsc.jobs.register import register_job

    name, version = register_job(run_id, epoch, name=name, alias=alias)
    click.echo(
        f"epoch {epoch} of run {run_id} registered as {name} version {version}" + (f" (alias {alias})" if alias else "")
    )


@main.command(context_settings=CONTEXT)
@options(CompareConfig)
@one_line_errors
def compare(**values) -> None:
    """Logistic learning decomposition of one metric across tracked runs.

    Logs a comparison run (tag dsc.kind = compare) with lld/table.csv, lld/table.json,
    lld/overlay.png, lld/centers_widths.png, lld/variance_explained.png and lld/runs.json,
    and lld/* metrics (lld/n_components, lld/r2_N, lld/center_i, ...) on every source run.
    """
    from dsc.jobs.compare import compare_job

    (config,) = build([CompareConfig], values)
    run_id = compare_job(config, warn=lambda line: click.echo(f"warning: {line}", err=True))
    click.echo(f"comparison run {run_id} finished")


@main.command(context_settings=CONTEXT)
@click.option(
    "--run-id", default="", help="Training run to analyse (default: the latest FINISHED one, tag dsc.kind = train)."
)
@click.option(
    "--experiment",
    default="",
    help="Without --run-id: search this experiment (by name; default MLFLOW_EXPERIMENT_NAME/ID, "
    "else every experiment).",
)
@options(AnalyzeConfig)
@one_line_errors
def analyze(run_id, experiment, **values) -> None:
    """Figures, numbers and an HTML report of a finished training run, logged onto that run.

    Writes analysis/figures/*.png (and pca.gif), analysis/summary.json and a self-contained
    analysis/report.html, and logs metrics emergence/class_<name> and transition_epoch. The
    run's status is not changed; an error leaves it as it was.
    """
    from dsc.jobs.analyze import analyze_job

    (cfg,) = build([AnalyzeConfig], values)
    result = analyze_job(run_id, experiment, cfg)
    click.echo(
        f"run {result.src.run_id} analysed in {result.wall_s:.1f} s: "
        f"{len(result.summary['figures'])} figures, analysis/summary.json, analysis/report.html"
    )


@main.command(context_settings=CONTEXT)
@options(*SWEEP_CONFIGS)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@click.pass_context
@one_line_errors
def sweep(ctx, progress, **values) -> None:
    """Train a grid of seeds and options as parallel tracked runs, then compare them.

    Every combination of the --grid values and --seeds is one `dsc train` run in the current
    tracking store (MLFLOW_TRACKING_URI, shared by every run: a server spreads the load),
    tagged dsc.sweep = <sweep id>. When all have finished, `dsc compare` runs on exactly
    those runs. Every key and value is checked before anything trains; a failed run does not
    stop the others, and the sweep then fails naming it.
    """
    from dsc.jobs.sweep import sweep_job

    given = {name: values[name] for name in given_on_command_line(ctx, options_of(DataConfig))}
    (config,) = build([SweepConfig], values)
    result = sweep_job(config, given, progress=progress)
    click.echo(f"sweep {result.sweep_id}: {len(result.run_ids)} runs; comparison run {result.comparison_id} finished")


@main.command("train-members", hidden=True, context_settings=CONTEXT)
@click.argument("spec", type=click.Path(exists=True, dir_okay=False))
def train_members(spec) -> None:
    """Train the sweep members listed in SPEC one after another (`dsc sweep --per-process`)."""
    from pathlib import Path

    from dsc.jobs.sweep.batch import run_members

    sys.exit(run_members(Path(spec), lambda argv: main.main(["train", *argv], prog_name="dsc")))


if __name__ == "__main__":
    main()
