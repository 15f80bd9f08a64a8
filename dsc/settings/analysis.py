"""Settings of the steps after training: analysing a run, comparing runs, sweeping a grid."""

from __future__ import annotations

from dataclasses import dataclass

from dsc.errors import ConfigError
from dsc.settings.base import FIELD_STYLE, Settings, setting

MAX_COMPONENTS = 6  # LLD: each extra component adds 3 parameters and lengthens every curve's fit


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` (or ``"0-4"`` for a range) to a tuple of distinct ints."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.replace(" ", ",").split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(part)]
        except ValueError:
            raise ConfigError(
                f"--seeds {text!r}: use a comma list of integers such as 0,1,2 or a range such as 0-4"
            ) from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r}: seed {repeated[0]} is listed twice")
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: give at least one seed, e.g. 0,1,2")
    return tuple(seeds)


def parse_epochs(text: str) -> tuple[int, ...]:
    """``"0,25,60"`` to ``(0, 25, 60)``; ``""`` to ``()``."""
    try:
        return tuple(int(e) for e in text.replace(" ", "").split(",") if e)
    except ValueError:
        raise ConfigError(f"--esd-epochs {text!r}: use a comma list of epochs, e.g. 0,25,60") from None


def _named(kind: str, example: str):
    def check(value: str) -> str | None:
        return None if value.strip() else f"must be a {kind} name such as {example!r}"

    return check


def _finite(value: float) -> str | None:
    return None if value == value else "must be a number in (0, 1], e.g. 0.5"


def _some(seeds: tuple[int, ...]) -> str | None:
    return None if seeds else "give at least one seed, e.g. 0,1,2"


@dataclass(frozen=True)
class AnalyzeConfig(Settings):
    """What ``dsc analyze`` computes of one run."""

    layer: str = setting("fc2", help="Layer whose probe activations the PCA, emergence and leading-feature views use.")
    n_components: int = setting(
        10,
        min=2,
        max=100,
        cli="components",
        help=("Leading PCs tracked over epochs (and the space class emergence is scored in)."),
    )
    esd_epochs: tuple[int, ...] = setting(
        (),
        parse=parse_epochs,
        help=("Comma list of snapshot epochs for the ESD histograms (default: first, transition, last)."),
    )
    modes_max_images: int = setting(
        576, min=1, help="Validation images (a stratified subset) the modes step evaluates."
    )
    modes_points: int = setting(10, min=2, max=100, help="Values of k per layer in the modes step.")
    top_k: int = setting(6, min=1, max=50, help="Most activating probe inputs shown per class.")
    lld_components: int = setting(
        3, min=1, max=MAX_COMPONENTS, help="Logistic components tried in the learning-curve decomposition, 1..N."
    )
    patience: int = setting(
        3,
        min=1,
        max=100,
        help=(
            "Epochs a class's recall (snapshots: its probe score, its silhouette) must stay above its "
            "level for the class to count as emerged."
        ),
    )
    probe_gain: float = setting(
        0.5,
        min=0,
        max=1,
        min_open=True,
        check=_finite,
        help=(
            "A class emerges in a layer once its probe score has closed this fraction of its epoch-0 "
            "gap to a perfect 1."
        ),
    )
    probe_components: int = setting(
        32, min=2, max=256, help=("Whitened PCA components of each layer's activations the linear probes read.")
    )
    seed: int = setting(0, help="Seeds the random-mode control, the validation subset and the probes' PCA.")
    epoch_images: bool = setting(
        True,
        help=(
            "Log each snapshot's pictures (probe PCA at fc2, ESDs of fc1 and fc2, CKA) to the run's "
            "image grid with step = epoch, for every snapshot that lacks them."
        ),
    )
    progress: bool = setting(True, help="Progress bar over the steps.")


CLASS_CURVES = ("prob", "recall")


@dataclass(frozen=True)
class CompareConfig(Settings):
    """Which runs to compare and how."""

    _style = FIELD_STYLE
    _say_type = True

    experiments: tuple[str, ...] = setting(
        (), cli="experiment", help=("Search this experiment (by name); repeatable. Default: every experiment.")
    )
    filter_string: str = setting(
        "",
        cli="filter",
        help=(
            "MLflow search filter, e.g. \"params.lr = '0.01'\" (back-quote names with '/': metrics.`acc/val` > 0.5)."
        ),
    )
    run_ids: tuple[str, ...] = setting(
        (),
        cli="run-id",
        help=(
            "Compare this run; repeatable. A named run that is not a FINISHED training run with the "
            "metric is an error (searched ones are skipped with a warning)."
        ),
    )
    metric: str = setting(
        "acc/val",
        check=_named("metric", "acc/val"),
        help=(
            "Metric to decompose: any metric key, fitted against the steps it was logged at "
            "(dsc's runs log every metric with step = epoch)."
        ),
    )
    dsc_only: bool = setting(
        False,
        help=(
            "Search only runs that dsc train or dsc.Recorder made (tag dsc.kind = train). By "
            "default any FINISHED run with the metric is compared, whoever logged it; dsc's own "
            "comparison, analysis and snapshot runs are always left out."
        ),
    )
    max_components: int = setting(
        3, min=1, max=MAX_COMPONENTS, help="Fit N = 1..K logistic components; N is chosen by BIC."
    )
    jobs: int = setting(0, min=0, help="Fitting processes (0: every CPU this process may use).")
    color_by: str = setting("lr", check=_named("param", "lr"), help="Run param that colours the centre/width scatter.")
    group_by: tuple[str, ...] = setting(
        (),
        help=(
            "Group the runs by this param (repeatable, or a comma list): the other runs of a group "
            "are its replicates (seeds); per group n, mean, sd and t-based 95% intervals, mean "
            "curves with bands, and Spearman trend tests against the param."
        ),
    )
    class_curve: str = setting(
        "prob",
        choices=CLASS_CURVES,
        help=(
            "Per-class curve decomposed on every run: prob (prob_class/<name>, the mean softmax of "
            "the true class) or recall (acc_class/<name>)."
        ),
    )
    cluster_factor: float = setting(
        2.0,
        min=0,
        min_open=True,
        help=(
            "lld/class_clusters: two classes are one group when their main rises' centres lie within "
            "this many times the larger of their widths."
        ),
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(
            self,
            "group_by",
            tuple(dict.fromkeys(name.strip() for item in self.group_by for name in item.split(",") if name.strip())),
        )
        set_(self, "experiments", tuple(e.strip() for e in self.experiments if e.strip()))
        set_(self, "run_ids", tuple(dict.fromkeys(r.strip() for r in self.run_ids if r.strip())))
        set_(self, "filter_string", self.filter_string.strip())
        super().__post_init__()

    def params(self) -> dict[str, object]:
        """What the comparison run logs as params (the MLproject's names and spellings)."""
        return {
            "experiment": ",".join(self.experiments),
            "filter": self.filter_string,
            "metric": self.metric,
            "dsc_only": self.dsc_only,
            "max_components": self.max_components,
            "color_by": self.color_by,
            "n_named_runs": len(self.run_ids),
            "group_by": ",".join(self.group_by),
        }


@dataclass(frozen=True)
class SweepConfig(Settings):
    """A sweep as given on the command line; ``dsc.jobs.sweep.plan`` checks and expands it."""

    _say_type = True
    _title = "Sweep"

    seeds: tuple[int, ...] = setting(
        (0,),
        parse=parse_seeds,
        check=_some,
        help=("Training seeds, a comma list (0,1,2) or a range (0-4); each grid point runs once per seed."),
    )
    grid: tuple[str, ...] = setting(
        (),
        metavar="KEY=V1,V2",
        help=(
            "A dsc train option and the values to sweep, e.g. lr=1e-4,3e-4; repeatable (the grid is "
            "every combination). One --grid may hold several, space-separated."
        ),
    )
    fixed: tuple[str, ...] = setting(
        (),
        cli="set",
        metavar="KEY=VALUE",
        help=(
            "A dsc train option every run shares, e.g. epochs=30; repeatable, or several "
            "space-separated. Data options may also be given directly (--image-size 32)."
        ),
    )
    parallel: int = setting(
        2,
        min=1,
        help=(
            "Local engine: trainings at a time, each a `python -m dsc train` process with "
            "OMP_NUM_THREADS = CPUs / N unless set (the ray engine schedules by --cpus-per-run)."
        ),
    )
    per_process: int = setting(
        1,
        min=1,
        max=1000,
        help=(
            "Local engine: members trained one after another in each process, its imports paid once "
            "(for small members, whose fixed cost is most of their time); results are those of one "
            "process a member."
        ),
    )
    engine: str = setting(
        "local",
        choices=("local", "ray"),
        help=(
            "Where the members train: local processes on this machine, or Ray tasks on a cluster "
            "(needs `uv sync --group ray`)."
        ),
    )
    ray_address: str = setting(
        "",
        help=(
            "ray engine: the cluster to join; empty starts a local Ray instance, `auto` joins the "
            "one `ray start` made here, `ray://HOST:10001` a remote one."
        ),
    )
    cpus_per_run: float = setting(
        1.0, min=0, min_open=True, help=("ray engine: CPUs each member reserves (and its OMP_NUM_THREADS).")
    )
    gpus_per_run: float = setting(
        0.0,
        min=0,
        help=("ray engine: GPUs each member reserves (fractions share one); members given GPUs train on CUDA."),
    )
    max_retries: int = setting(
        3,
        min=0,
        help=(
            "ray engine: attempts after the first for a member whose node or process dies; each "
            "continues its run from its last full checkpoint. A member failing by itself is not retried."
        ),
    )
    shared_store: bool = setting(
        False,
        help=(
            "ray engine: the sqlite or file tracking store lies on a filesystem every node mounts at "
            "the same path (else a cluster of several nodes needs a tracking server)."
        ),
    )
    register: bool = setting(
        False,
        help=(
            "Register each member's final and best models (off: a member's fixed cost without the registry's writes)."
        ),
    )
    experiment: str = setting("", help="MLflow experiment of the runs (default: the current one).")
    metric: str = setting("acc/val", help="Metric the comparison decomposes.")
    max_components: int = setting(3, min=1, max=MAX_COMPONENTS, help="Logistic components the comparison tries, 1..N.")
    color_by: str = setting("", help="Run param colouring the comparison (default: the first grid key, else seed).")
