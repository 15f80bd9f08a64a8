"""Every setting of dsc, declared once: one frozen dataclass per concern.

Each field carries its default, type, range or choices and help (:func:`setting`) and is
checked where it enters: on construction. The command line, the sweep, MLproject (a test
holds it to these) and the command reference generated from the command line
(docs/reference/cli.md) are derived from the declarations. Imports nothing heavy (no torch,
mlflow or click).
"""

from dsc.settings.analysis import (
    MAX_COMPONENTS,
    AnalyzeConfig,
    CompareConfig,
    SweepConfig,
    parse_seeds,
)
from dsc.settings.base import (
    Option,
    Settings,
    Spec,
    build,
    options_of,
    parse_text,
    setting,
)
from dsc.settings.data import KINDS, DataConfig
from dsc.settings.model import ARCHS, ModelConfig
from dsc.settings.train import (
    CONV_KERNELS,
    OPTIMIZERS,
    SnapshotConfig,
    TrackConfig,
    TrainConfig,
)

TRAIN_CONFIGS = (DataConfig, ModelConfig, TrainConfig, SnapshotConfig, TrackConfig)  # `dsc train`'s

__all__ = [
    "ARCHS",
    "CONV_KERNELS",
    "KINDS",
    "MAX_COMPONENTS",
    "OPTIMIZERS",
    "TRAIN_CONFIGS",
    "AnalyzeConfig",
    "CompareConfig",
    "DataConfig",
    "ModelConfig",
    "Option",
    "Settings",
    "SnapshotConfig",
    "Spec",
    "SweepConfig",
    "TrackConfig",
    "TrainConfig",
    "build",
    "options_of",
    "parse_seeds",
    "parse_text",
    "setting",
]
