"""Yale Face Database B (original, Extended, CroppedYale) read from a local path.

File names carry the labels: ``yaleB03_P06A+035E+40.pgm`` is subject 03, pose 06, light
azimuth +35 deg and elevation +40 deg. Ambient shots (``*_Ambient.pgm``), known-corrupt
captures (``*.pgm.bad``), ``.info`` lists and anything else that does not match that name are
left out. The original distribution ships one ``yaleBSS_PNN.tar.gz`` per subject and pose;
those are extracted (members checked first) into a cache directory and scanned the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from dsc.data import cache
from dsc.data.base import DataError, ImageSet
from dsc.data.images import read_images
from dsc.settings.data import parse_subjects

NAME_RE = re.compile(r"^yaleB(\d+)_P(\d+)A([+-]\d+)E([+-]\d+)\.pgm$", re.IGNORECASE)
ARCHIVE_RE = re.compile(r"\.(tar\.gz|tgz|tar)$", re.IGNORECASE)


@dataclass(frozen=True)
class YaleRecord:
    """One usable Yale B image: subject and pose as numbered in the file name, angles in deg."""

    path: Path
    subject: int
    pose: int
    azimuth: int
    elevation: int


def parse_name(name: str) -> YaleRecord | None:
    """The record for a Yale B image file name, or None when the name is not one."""
    m = NAME_RE.match(name)
    if m is None:
        return None
    subject, pose, az, el = (int(g) for g in m.groups())
    return YaleRecord(Path(name), subject, pose, az, el)


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute():
        raise DataError(f"{archive}: member {member.name!r} has an absolute path; refusing to extract")
    if ".." in parts:
        raise DataError(f"{archive}: member {member.name!r} leaves the target directory; refusing to extract")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: member {member.name!r} is a link; refusing to extract")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: member {member.name!r} is not a regular file; refusing to extract")


def extract_archive(archive: Path, dest_root: Path | None = None) -> Path:
    """Extract ``archive`` into a cache directory after checking every member; return the dir.

    The directory is keyed by the archive's name, size and mtime, so a changed archive is
    extracted again. Members with absolute paths, ``..``, links or special files are refused.
    """
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = (dest_root or cache.root() / "yale") / f"{ARCHIVE_RE.sub('', archive.name)}-{key}"
    done = dest / ".complete"
    if done.exists():
        return dest
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot read archive ({exc}); re-download or remove it") from exc
    done.touch()
    return dest


def scan(root: str | os.PathLike, extract_dir: str | os.PathLike | None = None) -> list[YaleRecord]:
    """Every usable Yale B image under ``root`` (a directory, or a folder of archives).

    Parameters
    ----------
    root : a directory holding ``.pgm`` files at any depth, ``yaleBSS_PNN.tar.gz`` archives,
        or both; or a single archive.
    extract_dir : where archives are extracted (default: ``yale/`` in :func:`dsc.data.cache.root`).

    Returns
    -------
    list of YaleRecord (``path, subject, pose, azimuth, elevation``), sorted by subject, pose,
    then file name.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"Yale B path {root} does not exist; pass yale:PATH with a directory or archive")
    dest_root = Path(extract_dir) if extract_dir is not None else None
    if root.is_file():
        if not ARCHIVE_RE.search(root.name):
            raise DataError(f"{root} is neither a directory nor a .tar.gz archive of Yale B images")
        dirs = [extract_archive(root, dest_root)]
    else:
        dirs = [root] + [
            extract_archive(a, dest_root) for a in sorted(root.rglob("*")) if a.is_file() and ARCHIVE_RE.search(a.name)
        ]
    records = []
    for d in dirs:
        for path in d.rglob("*"):
            rec = parse_name(path.name)
            if rec is not None and path.is_file():
                records.append(YaleRecord(path, rec.subject, rec.pose, rec.azimuth, rec.elevation))
    records.sort(key=lambda r: (r.subject, r.pose, r.path.name))
    return records


def choose_subjects(available: list[int], subjects: str, seed: int) -> list[int]:
    """Subjects to use: ``""`` all, ``"5"`` five at random by seed, ``"1,3,7"`` those listed."""
    wanted = parse_subjects(subjects)
    if wanted is None:
        return sorted(available)
    if isinstance(wanted, int):
        if not 2 <= wanted <= len(available):
            raise DataError(
                f"--subjects {wanted}: need between 2 and {len(available)} (subjects found: {sorted(available)})"
            )
        rng = np.random.default_rng(seed)
        return sorted(int(s) for s in rng.choice(sorted(available), size=wanted, replace=False))
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise DataError(f"--subjects: subjects {missing} not found; available: {sorted(available)}")
    if len(wanted) < 2:
        raise DataError(f"--subjects {subjects!r}: a classification task needs at least 2 subjects")
    return wanted


def load(
    root: str | os.PathLike,
    size: int = 128,
    subjects: str = "",
    seed: int = 0,
    extract_dir: str | os.PathLike | None = None,
) -> ImageSet:
    """Yale B images as an ImageSet, one class per subject, resized to ``size`` x ``size``."""
    records = scan(root, extract_dir)
    if not records:
        raise DataError(f"no Yale B images (yaleBSS_PNNA+aaaE+ee.pgm) found under {root}; check the path")
    chosen = choose_subjects(sorted({r.subject for r in records}), subjects, seed)
    records = [r for r in records if r.subject in chosen]
    images = read_images([r.path for r in records], size, grey=True)
    index = {s: i for i, s in enumerate(chosen)}
    return ImageSet(
        images=images,
        labels=np.array([index[r.subject] for r in records], dtype=np.int64),
        classes=tuple(f"yaleB{s:02d}" for s in chosen),
        meta={
            "subject": np.array([r.subject for r in records]),
            "pose": np.array([r.pose for r in records]),
            "azimuth": np.array([r.azimuth for r in records]),
            "elevation": np.array([r.elevation for r in records]),
        },
        name="yale",
        source=str(Path(root).resolve()),
    )
