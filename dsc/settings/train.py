"""Training settings: the optimisation, what each epoch records, and where the run goes."""

from __future__ import annotations

from dataclasses import dataclass

from dsc.settings.base import FIELD_STYLE, Settings, seed_range, setting

OPTIMIZERS = ("adam", "sgd")
CONV_KERNELS = ("auto", "dsc", "torch")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """The optimisation: epochs, batches, optimizer, seed and device."""

    _title = "Training"

    epochs: int = setting(60, min=0, max=100000, help="Training epochs (epoch 0 is the evaluation before any update).")
    steps: int = setting(
        0,
        min=0,
        max=10**9,
        help=(
            "Train for this many optimizer steps instead of --epochs (0: use --epochs); the epochs "
            "follow from the training split's size, the last one may be partial. Holds the number of "
            "updates fixed across data sizes."
        ),
    )
    batch_size: int = setting(32, min=1, max=65536, help="Images per optimizer step.")
    optimizer: str = setting("adam", choices=OPTIMIZERS, help="adam or sgd.")
    lr: float = setting(1e-4, min=0, min_open=True, help="Learning rate.")
    momentum: float = setting(0.9, min=0, max=1, max_open=True, help="SGD momentum (ignored by Adam).")
    weight_decay: float = setting(0.0, min=0, help="L2 penalty.")
    seed: int = setting(0, check=seed_range, help="Seeds weights, dropout and batch order.")
    device: str = setting("auto", help="auto (CUDA when present), cpu, cuda, cuda:N.")
    channels_last: bool = setting(
        True,
        help=(
            "NHWC memory format (several times faster on CPU for 3 channels) where torch runs the "
            "convolutions, in training and evaluation."
        ),
    )
    eval_batch_size: int = setting(
        256, min=1, cli=None, help="Images per evaluation batch (split into passes like a step's batch)."
    )
    micro_batch: int = setting(
        0,
        min=0,
        max=65536,
        help=(
            "Images per forward/backward pass within a step; gradients are summed, so the update is "
            "the whole batch's. 0: auto (a step's batch runs whole through dsc's kernel or on CUDA; "
            "with torch's convolutions on CPU, as the fewest equal passes whose input maps fit in "
            "4 MB)."
        ),
    )
    conv_kernel: str = setting(
        "auto",
        choices=CONV_KERNELS,
        help=(
            "Who runs DenseVGG's 3->3 channel 3x3 convolutions on CPU, in training, evaluation and "
            "activation capture. dsc: dsc's kernel (dsc/nn/conv3.py, vectorised over the image width; "
            "see Benchmarks); torch: torch's layers; auto: dsc's from 64x64 images up. A traced or "
            "exported model runs torch's."
        ),
    )


@dataclass(frozen=True)
class SnapshotConfig(Settings):
    """What each epoch's snapshot holds (``dsc train`` names these options ``--snapshot-*``)."""

    _style = FIELD_STYLE  # `dsc train` and `dsc snapshot` name the options differently
    _title = "Recording"

    every: int = setting(
        1,
        min=0,
        cli="snapshot-every",
        help=("Snapshot activations, spectra and similarity at epoch 0 and every N epochs (0: none)."),
    )
    probe_per_class: int = setting(
        0, min=0, help=("Cap on probe images per class, taken from the validation split (0: all of it).")
    )
    budget_mb: float = setting(
        4.0,
        min=0,
        min_open=True,
        cli="snapshot-budget-mb",
        help=("Snapshot megabytes (10^6 bytes) per epoch; conv maps are average-pooled to fit."),
    )
    images: bool = setting(
        False,
        cli="snapshot-images",
        help=(
            "Also log each snapshot's pictures to the run's image grid during training (about 0.2 s "
            "a snapshot); without it `dsc analyze` logs them, for every snapshot that lacks them."
        ),
    )


@dataclass(frozen=True)
class TrackConfig(Settings):
    """Where a training run goes in MLflow, and what it keeps."""

    _title = "Tracking"

    experiment: str = setting("", help="MLflow experiment name (default: the current one).")
    run_name: str = setting("", help="MLflow run name (default: MLflow's generated one).")
    register: bool = setting(
        True,
        help=(
            "Register the final and best models in the model registry (sweep members skip it "
            "unless `dsc sweep --register`)."
        ),
    )
    register_name: str = setting("", help="Registered model name (default dsc-<data>-<arch>).")
    checkpoint_every: int = setting(
        1, min=1, help=("Keep a checkpoint every N epochs (epoch 0, the last and each new best always).")
    )
    state_every: int = setting(
        20,
        min=1,
        help=(
            "Also keep the optimizer and generator state (what resuming needs) every N epochs "
            "(epoch 0, the last and a stopped run's last epoch always); a killed run replays the "
            "epochs since the latest one."
        ),
    )
    progress: bool = setting(True, help="Progress bars.")
