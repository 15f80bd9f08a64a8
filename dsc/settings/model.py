"""Network settings: the architecture and its sizes."""

from __future__ import annotations

from dataclasses import dataclass

from dsc.settings.base import FIELD_STYLE, Settings, setting

ARCHS = ("dense-vgg", "vgg11")


def _odd(size: int) -> str | None:
    return None if size % 2 == 1 else "must be a positive odd int"


@dataclass(frozen=True)
class ModelConfig(Settings):
    """The network; ``num_classes`` is set from the data."""

    _style = FIELD_STYLE  # built from checkpoints and code as often as from the command line
    _title = "Network"

    arch: str = setting(
        "dense-vgg",
        choices=ARCHS,
        help=("dense-vgg: the paper's network; vgg11: torchvision's VGG-11, its starting point."),
    )
    num_classes: int = setting(5, min=2, cli=None, help="Output units; set from the data.")
    depth: int = setting(5, min=1, max=32, help="Conv layers (dense-vgg).")
    filters: int = setting(3, min=1, max=512, help="Channels per conv layer (dense-vgg).")
    kernel_size: int = setting(
        3, min=1, max=15, check=_odd, help="Conv kernel size (odd); padding keeps the spatial size."
    )
    pool_size: int = setting(20, min=1, cli=None, help="AdaptiveAvgPool2d output side.")
    hidden: int = setting(1024, min=1, max=65536, help="Width of fc1 and fc2.")
    dropout: float = setting(0.5, min=0, max=1, max_open=True, help="Dropout after fc1 and fc2.")
    in_channels: int = setting(3, min=1, cli=None, help="Input channels; grey images are replicated to 3.")
