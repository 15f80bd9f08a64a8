"""Every setting of dsc, declared once: one frozen dataclass per concern.

Data, network, training, recording, tracking, analysis, comparison and sweep settings. Each
value is checked here, where it enters; the command line, the sweep and MLproject use these
classes. Imports nothing heavy (no torch, mlflow or click).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from dsc.errors import ConfigError, DataError

KINDS = ("synthetic", "yale", "folder")  # --data kinds
ARCHS = ("dense-vgg", "vgg11")
OPTIMIZERS = ("adam", "sgd")
CONV_KERNELS = ("auto", "dsc", "torch")
MAX_COMPONENTS = 6  # LLD: each extra component adds 3 parameters and ~50% fitting time


@dataclass(frozen=True)
class SweepConfig:
    """A sweep as given on the command line; :func:`plan` checks and expands it."""

    seeds: tuple[int, ...] = (0,)  # training seeds; every grid point runs once per seed
    grid: tuple[str, ...] = ()  # "KEY=V1,V2" assignments (several per item, space-separated)
    fixed: tuple[str, ...] = ()  # "KEY=VALUE" train options every member shares
    parallel: int = 2  # member trainings at a time
    experiment: str = ""  # experiment name ("" = MLflow's current one)
    metric: str = "acc/val"  # metric the comparison decomposes
    max_components: int = 3  # logistic components the comparison tries, 1..K
    color_by: str = ""  # run param colouring the comparison ("" = the first grid key, else seed)

    def __post_init__(self) -> None:
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or self.parallel < 1:
            raise ConfigError(f"--parallel {self.parallel!r}: must be an integer >= 1")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed, e.g. 0,1,2")


@dataclass(frozen=True)
class CompareConfig:
    """Which runs to compare and how; checked on construction (:class:`ConfigError`)."""

    experiments: tuple[str, ...] = ()  # experiment names to search ('' entries are ignored)
    filter_string: str = ""  # MLflow search filter, ANDed with tags.`dsc.kind` = 'train'
    run_ids: tuple[str, ...] = ()  # runs named explicitly: each must qualify, or it is an error
    metric: str = "acc/val"  # the metric to decompose, logged with step = epoch
    max_components: int = 3  # fits with N = 1..max_components logistics
    jobs: int = 0  # fitting processes (0 = every CPU this process may use)
    color_by: str = "lr"  # run param that colours the centre/width scatter

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "experiments", tuple(e.strip() for e in self.experiments if e.strip()))
        set_(self, "run_ids", tuple(dict.fromkeys(r.strip() for r in self.run_ids if r.strip())))
        set_(self, "filter_string", self.filter_string.strip())
        k = self.max_components
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_COMPONENTS:
            raise ConfigError(f"max_components must be an integer in 1..{MAX_COMPONENTS}, got {k!r}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 0:
            raise ConfigError(f"jobs must be an integer >= 0 (0 = every CPU), got {self.jobs!r}")
        if not self.metric.strip():
            raise ConfigError("metric must be a metric name such as 'acc/val', got ''")
        if not self.color_by.strip():
            raise ConfigError("color_by must be a param name such as 'lr', got ''")

    def params(self) -> dict[str, object]:
        """What the comparison run logs as params (the MLproject's names and spellings)."""
        return {"experiment": ",".join(self.experiments), "filter": self.filter_string,
                "metric": self.metric, "max_components": self.max_components,
                "color_by": self.color_by, "n_named_runs": len(self.run_ids)}


@dataclass(frozen=True)
class AnalyzeConfig:
    layer: str = "fc2"  # layer whose probe activations the PCA, emergence and feature views use
    n_components: int = 10  # leading PCs tracked over epochs
    esd_epochs: tuple[int, ...] = ()  # snapshot epochs of the ESD histograms (() = first, transition, last)
    modes_max_images: int = 576  # validation images (a stratified subset) the modes step evaluates
    modes_points: int = 10  # k values per layer (k_grid of the layer's modes)
    top_k: int = 6  # most activating probe inputs shown per class
    lld_components: int = 3  # logistic components tried, 1..N
    seed: int = 0  # seeds the random-mode control and the validation subset
    progress: bool = True  # progress bar over the steps

    def __post_init__(self) -> None:
        checks = [
            (self.n_components >= 2, f"--components {self.n_components}: must be >= 2"),
            (self.modes_max_images >= 1, f"--modes-max-images {self.modes_max_images}: must be >= 1"),
            (self.modes_points >= 2, f"--modes-points {self.modes_points}: must be >= 2"),
            (self.top_k >= 1, f"--top-k {self.top_k}: must be >= 1"),
            (self.lld_components >= 1, f"--lld-components {self.lld_components}: must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass(frozen=True)
class TrackConfig:
    experiment: str = ""  # experiment name ("" = MLflow's current one)
    run_name: str = ""  # run name ("" = MLflow's generated one)
    register_name: str = ""  # registered model name ("" = dsc-<data>-<arch>)
    checkpoint_every: int = 1  # keep a checkpoint every N epochs (epoch 0, the last and each new best always)
    progress: bool = True  # show progress bars


@dataclass(frozen=True)
class SnapshotConfig:
    every: int = 1  # snapshot epoch 0 and every N epochs (0 = no snapshots)
    probe_per_class: int = 0  # cap on probe images per class from the validation split (0 = all)
    budget_mb: float = 4.0  # snapshot megabytes (10^6 bytes) per epoch; conv maps are pooled to fit

    def __post_init__(self) -> None:
        if self.every < 0 or self.probe_per_class < 0 or not self.budget_mb > 0:
            raise ConfigError(f"snapshot options: every={self.every} and probe_per_class="
                              f"{self.probe_per_class} must be >= 0, budget_mb={self.budget_mb} > 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60  # epochs after the epoch-0 evaluation
    batch_size: int = 32  # images per optimizer step
    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = 1e-4  # learning rate
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 0.0  # L2 penalty
    seed: int = 0  # seeds weights, dropout and batch order
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:N"
    channels_last: bool = True  # NHWC memory format: several times faster on CPU for 3 channels
    eval_batch_size: int = 256  # images per evaluation batch (split into passes like a step's batch)
    micro_batch: int = 0  # images per forward/backward pass within a step; 0 = auto (see micro_batch_size)
    conv_kernel: str = "auto"  # DenseVGG's 3->3 convs on CPU: "dsc" (dsc.nn.conv3), "torch", "auto" (by size)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"--epochs {self.epochs}: must be >= 0"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1"),
            (self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: use one of {OPTIMIZERS}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr {self.lr}: must be a finite number > 0"),
            (0 <= self.momentum < 1, f"--momentum {self.momentum}: must be in [0, 1)"),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay}: must be >= 0"),
            (self.eval_batch_size >= 1, f"--eval-batch-size {self.eval_batch_size}: must be >= 1"),
            (self.micro_batch >= 0, f"--micro-batch {self.micro_batch}: must be >= 0 (0 = auto)"),
            (self.conv_kernel in CONV_KERNELS, f"--conv-kernel {self.conv_kernel!r}: use one of {CONV_KERNELS}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "dense-vgg"  # "dense-vgg" (the paper's network) or "vgg11" (its starting point)
    num_classes: int = 5  # output units; set from the data
    depth: int = 5  # number of conv layers (dense-vgg)
    filters: int = 3  # channels of every conv layer (dense-vgg)
    kernel_size: int = 3  # odd conv kernel size; padding keeps the spatial size
    pool_size: int = 20  # AdaptiveAvgPool2d output side
    hidden: int = 1024  # width of fc1 and fc2
    dropout: float = 0.5  # dropout after fc1 and fc2
    in_channels: int = 3  # grey images are replicated to 3 channels

    def __post_init__(self) -> None:
        checks = [
            (self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}"),
            (self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}"),
            (1 <= self.depth <= 32, f"depth must be in [1, 32], got {self.depth}"),
            (self.filters >= 1, f"filters must be >= 1, got {self.filters}"),
            (self.kernel_size >= 1 and self.kernel_size % 2 == 1,
             f"kernel_size must be a positive odd int, got {self.kernel_size}"),
            (self.pool_size >= 1, f"pool_size must be >= 1, got {self.pool_size}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataConfig:
    data: str = "synthetic"  # "synthetic", "yale:PATH" or "folder:PATH"
    image_size: int = 128  # images are resized to image_size x image_size
    val_fraction: float = 0.2  # stratified validation share
    data_seed: int = 0  # seeds the synthetic faces, the Yale subject draw and the split
    identities: int = 5  # synthetic: number of identities (classes)
    subjects: str = "5"  # yale: "5" = five subjects drawn by data_seed, "1,3,7" = those, "" = all
    cache_dir: str = ""  # where generated data and extracted archives go ("" = $DSC_CACHE_DIR or ~/.cache/dsc)

    def __post_init__(self) -> None:
        kind, _, path = self.data.partition(":")
        if kind not in KINDS or (kind == "synthetic") == bool(path):
            raise DataError(f"--data {self.data!r}: use 'synthetic', 'yale:PATH' or 'folder:PATH'")
        if not 16 <= self.image_size <= 1024:
            raise DataError(f"--image-size {self.image_size}: must be in [16, 1024]")
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"--val-fraction {self.val_fraction}: must be in (0, 1), e.g. 0.2")
        from dsc.data.yale import parse_subjects

        parse_subjects(self.subjects)  # a malformed list fails here, before any data is read

    @property
    def kind(self) -> str:
        return self.data.partition(":")[0]

    @property
    def path(self) -> Path:
        return Path(self.data.partition(":")[2]).expanduser()

    def to_dict(self) -> dict:
        return asdict(self)
