"""The ``dsc`` command line: one subcommand per MLproject entry point."""
from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable

import click

from dsc.errors import ConfigError, DscError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def os_error_line(exc: OSError) -> str:
    """What an operating-system error during a job means for the user, in one line."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on device{where}: free disk space (or point the artifact store "
                "elsewhere), then continue a training run with `dsc train --resume RUN_ID`")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; check the permissions of the store and the cache"
    return f"{exc.strerror or exc}{where}"


def one_line_errors(fn: Callable) -> Callable:
    """Report errors a user can act on as one ``error:`` line on stderr and exit 1.

    Project errors, operating-system errors (a full disk, a read-only store) and MLflow's own
    errors (an unreachable server, a refused request). The run is already marked FAILED by
    then. Anything else is a bug and keeps its traceback.
    """
    from mlflow.exceptions import MlflowException

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DscError as exc:
            line = str(exc)
        except OSError as exc:
            line = os_error_line(exc)
        except MlflowException as exc:
            line = f"MLflow: {exc.message.splitlines()[0] if exc.message else exc}"
        click.echo(f"error: {line}", err=True)
        sys.exit(1)

    return wrapper


def given_on_command_line(ctx: click.Context, names) -> list[str]:
    """The parameters among ``names`` that the user typed (not defaults or environment)."""
    return [n for n in names if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]


class OneLineGroup(click.Group):
    """A click group whose usage errors (a bad option value, an unknown option) are one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
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


def data_options(fn: Callable) -> Callable:
    """The --data family of options, shared by every command that reads a dataset."""
    opts = [
        click.option("--data", default="synthetic", show_default=True,
                     help="Dataset: 'synthetic' (generated Lambertian faces), 'yale:PATH' "
                          "(Yale Face Database B directory or .tar.gz archives) or 'folder:PATH' "
                          "(an ImageFolder tree, one sub-directory per class)."),
        click.option("--image-size", type=click.IntRange(16, 1024), default=128, show_default=True,
                     help="Images are resized to SIZE x SIZE."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=0.2, show_default=True, help="Stratified validation share."),
        click.option("--data-seed", type=int, default=0, show_default=True,
                     help="Seeds the synthetic faces, the Yale subject draw and the split."),
        click.option("--identities", type=click.IntRange(2, 100), default=5, show_default=True,
                     help="synthetic: number of identities (classes)."),
        click.option("--subjects", default="5", show_default=True,
                     help="yale: a count drawn at random by --data-seed (the paper: 5), "
                          "a comma list of subject numbers, or '' for all."),
        click.option("--cache-dir", default="", help="Where generated data and extracted archives "
                                                      "are kept (default $DSC_CACHE_DIR or ~/.cache/dsc)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@main.command(context_settings=CONTEXT)
@data_options
@click.option("--arch", type=click.Choice(["dense-vgg", "vgg11"]), default="dense-vgg", show_default=True,
              help="dense-vgg: the paper's network; vgg11: torchvision's VGG-11, its starting point.")
@click.option("--depth", type=click.IntRange(1, 32), default=5, show_default=True, help="Conv layers.")
@click.option("--filters", type=click.IntRange(1, 512), default=3, show_default=True, help="Channels per conv layer.")
@click.option("--kernel-size", type=click.IntRange(1, 15), default=3, show_default=True, help="Conv kernel size (odd).")
@click.option("--hidden", type=click.IntRange(1, 65536), default=1024, show_default=True, help="Width of fc1 and fc2.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Dropout after fc1 and fc2.")
@click.option("--epochs", type=click.IntRange(0, 100000), default=60, show_default=True,
              help="Training epochs (epoch 0 is the evaluation before any update).")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-4, show_default=True, help="Learning rate.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True,
              help="SGD momentum.")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, dropout and batch order.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="NHWC memory format (several times faster on CPU).")
@click.option("--micro-batch", type=click.IntRange(0, 65536), default=0, show_default=True,
              help="Images per forward/backward pass within a step; gradients are summed, so the update "
                   "is the whole batch's. 0: auto (CPU: parts whose input maps fit in 4 MB; CUDA: whole batch).")
@click.option("--conv-kernel", type=click.Choice(["auto", "dsc", "torch"]), default="auto", show_default=True,
              help="Who runs DenseVGG's 3->3 channel 3x3 convolutions in training on CPU. dsc: dsc's "
                   "kernel (vectorised over the image width; 1.4x torch's images/s at 128x128); torch: "
                   "torch's layers; auto: dsc's from 64x64 images up. Evaluation always runs torch's.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=1, show_default=True,
              help="Keep a checkpoint every N epochs (epoch 0, the last and each new best always).")
@click.option("--snapshot-every", type=click.IntRange(0), default=1, show_default=True,
              help="Snapshot activations, spectra and similarity at epoch 0 and every N epochs (0: none).")
@click.option("--probe-per-class", type=click.IntRange(0), default=0, show_default=True,
              help="Cap on probe images per class, taken from the validation split (0: all of it).")
@click.option("--snapshot-budget-mb", type=click.FloatRange(0, min_open=True), default=4.0, show_default=True,
              help="Activation bytes per snapshot; conv maps are average-pooled to fit.")
@click.option("--experiment", default="", help="MLflow experiment name (default: the current one).")
@click.option("--run-name", default="", help="MLflow run name.")
@click.option("--register-name", default="", help="Registered model name (default dsc-<data>-<arch>).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
@click.option("--resume", "resume_id", default="", metavar="RUN_ID",
              help="Continue this stopped training run from its last complete checkpoint, into the "
                   "same run and with its own settings (no other option may be given).")
@click.pass_context
@one_line_errors
def train(ctx, data, image_size, val_fraction, data_seed, identities, subjects, cache_dir, arch, depth, filters,
          kernel_size, hidden, dropout, epochs, batch_size, optimizer, lr, momentum, weight_decay, seed,
          device, channels_last, micro_batch, conv_kernel, snapshot_every, probe_per_class, snapshot_budget_mb, checkpoint_every,
          experiment, run_name, register_name, progress, resume_id) -> None:
    """Train the network and log metrics, checkpoints, the dataset and a registered model.

    Metrics (step = epoch, epoch 0 before any update): loss/train, loss/val, acc/train,
    acc/val, acc_class/<class>. The final model is registered with alias 'final', the
    best-validation one with alias 'best'. A run that was killed continues with
    --resume RUN_ID (or `mlflow run . -e resume --run-id RUN_ID`).
    """
    from dsc.jobs.train import resume_job, train_job
    from dsc.settings import TrackConfig

    if resume_id:
        given = [f"--{name.replace('_', '-')}" for name in given_on_command_line(
            ctx, [n for n in ctx.params if n not in ("resume_id", "progress")])]
        if given:
            raise ConfigError(f"--resume continues run {resume_id} with its own settings; drop {', '.join(given)}")
        run_id = resume_job(resume_id, progress=progress)
        click.echo(f"run {run_id} resumed and finished")
        return

    data_kw = dict(data=data, image_size=image_size, val_fraction=val_fraction, data_seed=data_seed,
                   identities=identities, subjects=subjects, cache_dir=cache_dir)
    model_kw = dict(arch=arch, depth=depth, filters=filters, kernel_size=kernel_size, hidden=hidden,
                    dropout=dropout)
    train_kw = dict(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                    weight_decay=weight_decay, seed=seed, device=device, channels_last=channels_last,
                    micro_batch=micro_batch, conv_kernel=conv_kernel)
    track = TrackConfig(experiment=experiment, run_name=run_name, register_name=register_name,
                        checkpoint_every=checkpoint_every, progress=progress)
    snap_kw = dict(every=snapshot_every, probe_per_class=probe_per_class, budget_mb=snapshot_budget_mb)
    run_id = train_job(data_kw, model_kw, train_kw, track, snap_kw)
    click.echo(f"run {run_id} finished")


@main.command(context_settings=CONTEXT)
@click.option("--run-id", required=True, help="Training run whose per-epoch checkpoints are snapshotted.")
@click.option("--every", type=click.IntRange(1), default=1, show_default=True,
              help="Snapshot checkpoints whose epoch is a multiple of N.")
@click.option("--probe-per-class", type=click.IntRange(0), default=0, show_default=True,
              help="Cap on probe images per class from the validation split (0: all of it).")
@click.option("--budget-mb", type=click.FloatRange(0, min_open=True), default=4.0, show_default=True,
              help="Megabytes per snapshot; conv maps are average-pooled to fit.")
@click.option("--prefix", default="snapshots", show_default=True, help="Artifact directory to write.")
@click.option("--child", is_flag=True, help="Write to a new child run instead of the training run.")
@click.option("--overwrite", is_flag=True, help="Replace snapshots the run already has under --prefix.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@one_line_errors
def snapshot(run_id, every, probe_per_class, budget_mb, prefix, child, overwrite, progress) -> None:
    """Recompute per-epoch snapshots of a training run from its checkpoints.

    Use it to snapshot a run trained with --snapshot-every 0, or with a larger probe set or
    budget. Results go to the training run (refused if it already has them, unless
    --overwrite or another --prefix) or, with --child, to a new child run.
    """
    from dsc.jobs.train import snapshot_job

    target = snapshot_job(run_id, dict(every=every, probe_per_class=probe_per_class, budget_mb=budget_mb),
                          child=child, overwrite=overwrite, prefix=prefix, progress=progress)
    click.echo(f"snapshots written to run {target} under {prefix}/")


@main.command(context_settings=CONTEXT)
@click.option("--experiment", "experiments", multiple=True,
              help="Search this experiment (by name); repeatable. Default: every experiment.")
@click.option("--filter", "filter_string", default="",
              help="MLflow search filter, e.g. \"params.lr = '0.01'\" (back-quote names with '/': "
                   "metrics.`acc/val` > 0.5); ANDed with tags.`dsc.kind` = 'train'.")
@click.option("--run-id", "run_ids", multiple=True,
              help="Compare this run; repeatable. A named run that is not a FINISHED training "
                   "run with the metric is an error (searched ones are skipped with a warning).")
@click.option("--metric", default="acc/val", show_default=True,
              help="Metric to decompose (logged with step = epoch).")
@click.option("--max-components", type=click.IntRange(1, 6), default=3, show_default=True,
              help="Fit N = 1..K logistic components; N is chosen by BIC.")
@click.option("--jobs", type=click.IntRange(0), default=0,
              help="Fitting processes (default 0: every CPU).")
@click.option("--color-by", default="lr", show_default=True,
              help="Run param that colours the centre/width scatter.")
@one_line_errors
def compare(experiments, filter_string, run_ids, metric, max_components, jobs, color_by) -> None:
    """Logistic learning decomposition of one metric across tracked runs.

    Logs a comparison run (tag dsc.kind = compare) with lld/table.csv, lld/table.json,
    lld/overlay.png, lld/centers_widths.png, lld/variance_explained.png and lld/runs.json,
    and lld/* metrics (lld/n_components, lld/r2_N, lld/center_i, ...) on every source run.
    """
    from dsc.jobs.compare import compare_job
    from dsc.settings import CompareConfig

    config = CompareConfig(experiments=experiments, filter_string=filter_string, run_ids=run_ids,
                           metric=metric, max_components=max_components, jobs=jobs,
                           color_by=color_by)
    run_id = compare_job(config, warn=lambda line: click.echo(f"warning: {line}", err=True))
    click.echo(f"comparison run {run_id} finished")


@main.command(context_settings=CONTEXT)
@click.option("--run-id", default="",
              help="Training run to analyse (default: the latest FINISHED one, tag dsc.kind = train).")
@click.option("--experiment", default="",
              help="Without --run-id: search this experiment (by name; default MLFLOW_EXPERIMENT_NAME/ID, "
                   "else every experiment).")
@click.option("--layer", default="fc2", show_default=True,
              help="Layer whose probe activations the PCA, emergence and leading-feature views use.")
@click.option("--components", type=click.IntRange(2, 100), default=10, show_default=True,
              help="Leading PCs tracked over epochs (and the space class emergence is scored in).")
@click.option("--esd-epochs", default="",
              help="Comma list of snapshot epochs for the ESD histograms (default: first, transition, last).")
@click.option("--modes-max-images", type=click.IntRange(1), default=576, show_default=True,
              help="Validation images (a stratified subset) the modes step evaluates.")
@click.option("--modes-points", type=click.IntRange(2, 100), default=10, show_default=True,
              help="Values of k per layer in the modes step.")
@click.option("--top-k", type=click.IntRange(1, 50), default=6, show_default=True,
              help="Most activating probe inputs shown per class.")
@click.option("--lld-components", type=click.IntRange(1, 6), default=3, show_default=True,
              help="Logistic components tried in the learning-curve decomposition, 1..N.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the random-mode control and the validation subset.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@one_line_errors
def analyze(run_id, experiment, layer, components, esd_epochs, modes_max_images, modes_points, top_k,
            lld_components, seed, progress) -> None:
    """Figures, numbers and an HTML report of a finished training run, logged onto that run.

    Writes analysis/figures/*.png (and pca.gif), analysis/summary.json and a self-contained
    analysis/report.html, and logs metrics emergence/class_<name> and transition_epoch. The
    run's status is not changed; an error leaves it as it was.
    """
    from dsc.jobs.analyze import analyze_job
    from dsc.settings import AnalyzeConfig

    try:
        epochs = tuple(int(e) for e in esd_epochs.replace(" ", "").split(",") if e)
    except ValueError:
        raise ConfigError(f"--esd-epochs {esd_epochs!r}: use a comma list of epochs, e.g. 0,25,60") from None
    cfg = AnalyzeConfig(layer=layer, n_components=components, esd_epochs=epochs,
                        modes_max_images=modes_max_images, modes_points=modes_points, top_k=top_k,
                        lld_components=lld_components, seed=seed, progress=progress)
    result = analyze_job(run_id, experiment, cfg)
    click.echo(f"run {result.src.run_id} analysed in {result.wall_s:.1f} s: "
               f"{len(result.summary['figures'])} figures, analysis/summary.json, analysis/report.html")


@main.command(context_settings=CONTEXT)
@data_options
@click.option("--seeds", default="0", show_default=True,
              help="Training seeds, a comma list (0,1,2) or a range (0-4); each grid point runs once per seed.")
@click.option("--grid", multiple=True, metavar="KEY=V1,V2",
              help="A dsc train option and the values to sweep, e.g. lr=1e-4,3e-4; repeatable "
                   "(the grid is every combination). One --grid may hold several, space-separated.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A dsc train option every run shares, e.g. epochs=30; repeatable, or several "
                   "space-separated. Data options may also be given directly (--image-size 32).")
@click.option("--parallel", type=click.IntRange(1), default=2, show_default=True,
              help="Trainings at a time (each a `python -m dsc train` process).")
@click.option("--experiment", default="", help="MLflow experiment of the runs (default: the current one).")
@click.option("--metric", default="acc/val", show_default=True, help="Metric the comparison decomposes.")
@click.option("--max-components", type=click.IntRange(1, 6), default=3, show_default=True,
              help="Logistic components the comparison tries, 1..N.")
@click.option("--color-by", default="", help="Param colouring the comparison (default: the first grid key, else seed).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@click.pass_context
@one_line_errors
def sweep(ctx, data, image_size, val_fraction, data_seed, identities, subjects, cache_dir, seeds, grid,
          settings, parallel, experiment, metric, max_components, color_by, progress) -> None:
    """Train a grid of seeds and options as parallel tracked runs, then compare them.

    Every combination of the --grid values and --seeds is one `dsc train` run in the current
    tracking store (MLFLOW_TRACKING_URI, shared by every run: a server spreads the load),
    tagged dsc.sweep = <sweep id>. When all have finished, `dsc compare` runs on exactly
    those runs. Every key and value is checked before anything trains; a failed run does not
    stop the others, and the sweep then fails naming it.
    """
    from dsc.jobs.sweep import parse_seeds, sweep_job
    from dsc.settings import SweepConfig

    data_names = [p.name for p in data_options(lambda: None).__click_params__]
    given = {name: ctx.params[name] for name in given_on_command_line(ctx, data_names)}
    config = SweepConfig(seeds=parse_seeds(seeds), grid=grid, fixed=settings, parallel=parallel,
                         experiment=experiment, metric=metric, max_components=max_components,
                         color_by=color_by)
    result = sweep_job(config, given, progress=progress)
    click.echo(f"sweep {result.sweep_id}: {len(result.run_ids)} runs; "
               f"comparison run {result.comparison_id} finished")


if __name__ == "__main__":
    main()
