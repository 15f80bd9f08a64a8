"""Data settings: which images, at what size, split how."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsc.errors import DataError
from dsc.settings.base import Settings, seed_range, setting

KINDS = ("synthetic", "yale", "folder")  # --data kinds


def _data_spec(spec: str) -> str | None:
    kind, _, path = spec.partition(":")
    if kind not in KINDS or (kind == "synthetic") == bool(path):
        return "use 'synthetic', 'yale:PATH' or 'folder:PATH'"
    return None


_SUBJECTS_HINT = "give a count (5), a comma list of subject numbers (1,3,7) or '' for all"


def parse_subjects(subjects: str) -> int | list[int] | None:
    """``--subjects`` read: ``""`` -> None (all), ``"5"`` -> 5 (a count), ``"1,3,7"`` -> [1, 3, 7]."""
    text = subjects.strip()
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise DataError(f"--subjects {text!r}: {_SUBJECTS_HINT}")
    if not parts:
        return None
    if "," not in text:
        return int(text)
    return sorted({int(part) for part in parts})


def _subjects(text: str) -> str | None:
    try:
        parse_subjects(text)
    except DataError:
        return _SUBJECTS_HINT
    return None


_CLASSES_HINT = "give a count (5), a comma list of class names (cat,dog) or '' for all"


def parse_classes(classes: str) -> int | list[str] | None:
    """``--pick-classes`` read: ``""`` -> None (all), ``"5"`` -> 5 (a count), ``"cat,dog"`` -> the names."""
    text = classes.strip()
    parts = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not parts:
        return None
    if "," not in text and text.isdigit():
        if int(text) < 2:
            raise DataError(f"--pick-classes {text!r}: a classification task needs at least 2 classes; {_CLASSES_HINT}")
        return int(text)
    if len(parts) < 2:
        raise DataError(f"--pick-classes {text!r}: name at least 2 classes; {_CLASSES_HINT}")
    return parts


def _classes(text: str) -> str | None:
    try:
        parse_classes(text)
    except DataError as exc:
        return str(exc).partition(": ")[2]
    return None


@dataclass(frozen=True)
class DataConfig(Settings):
    """The dataset, its size and its stratified split."""

    _error = DataError
    _title = "Data"

    data: str = setting(
        "synthetic",
        check=_data_spec,
        help=(
            "synthetic (faces generated here), yale:PATH (Yale Face Database B, Extended Yale B or "
            "CroppedYale: a directory or a folder of the original archives) or folder:PATH (an "
            "ImageFolder tree, one sub-directory per class)."
        ),
    )
    image_size: int = setting(128, min=16, max=1024, help="Images are resized to SIZE x SIZE.")
    val_fraction: float = setting(0.2, min=0, max=1, min_open=True, max_open=True, help="Stratified validation share.")
    data_seed: int = setting(
        0,
        check=seed_range,
        help=(
            "Seeds the synthetic faces, the Yale subject draw and the stratified split: runs with "
            "one data seed share one split."
        ),
    )
    identities: int = setting(5, min=2, max=100, help="synthetic: number of identities (classes).")
    subjects: str = setting(
        "5",
        check=_subjects,
        help=(
            "yale: a count drawn at random by --data-seed (the paper: 5), a comma list of subject "
            "numbers, or '' for all."
        ),
    )
    pick_classes: str = setting(
        "",
        check=_classes,
        help=(
            "folder: a count of classes drawn at random by --data-seed, a comma list of class "
            "(sub-directory) names, or '' for all (the run's param classes lists those kept)."
        ),
    )
    exemplars_per_class: int = setting(
        0,
        min=0,
        help=(
            "Training images per class, drawn by --data-seed from the training split (0: all); "
            "the validation split is unchanged, and a smaller count's images are among a larger "
            "one's."
        ),
    )
    cache_dir: str = setting(
        "", help=("Where generated data and extracted archives are kept (default $DSC_CACHE_DIR or ~/.cache/dsc).")
    )

    @property
    def kind(self) -> str:
        return self.data.partition(":")[0]

    @property
    def path(self) -> Path:
        return Path(self.data.partition(":")[2]).expanduser()
