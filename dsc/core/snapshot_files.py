"""The snapshot files: one ``.npz`` per epoch and the run's ``probe.npz``, written and read back.

A snapshot (:func:`dsc.core.snapshot.compute`) is stored as one ``.npz`` per epoch;
:func:`read_dir` reads them back by epoch (``dsc.tracking.snapshot.load`` for a tracked run).
File layout, under the run's ``snapshots/`` artifact directory:

- ``probe.npz``: ``labels`` (n,), ``indices`` (n,) into the dataset, ``classes``, ``layers``,
  ``grids`` (pooling side per layer, 0 = full resolution), once per run;
- ``epoch_EEEE.npz``: ``act__<layer>`` float16 (n, ...), ``eig__<layer>`` float32 ESD,
  ``spec__<key>`` (L,) per-layer spectral scalars, ``phase`` (L,) strings, ``cka`` (L, L),
  ``corr_pairs`` / ``corr`` successive-layer Pearson correlations.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsc.core import zips
from dsc.core.atomic import write_atomic
from dsc.core.spectra import PHASES
from dsc.errors import TrackingError

SPECTRAL_KEYS = ("alpha", "xmin", "ks_distance", "lambda_max", "stable_rank", "log_norm", "lambda_plus", "num_spikes")
# spectral scalar -> MLflow metric prefix (metric name = prefix/layer)
METRIC_PREFIX = {
    "alpha": "alpha",
    "num_spikes": "spikes",
    "stable_rank": "stable_rank",
    "log_norm": "log_norm",
    "lambda_max": "lambda_max",
    "lambda_plus": "lambda_plus",
    "ks_distance": "ks",
}
EPOCH_FMT = "epoch_{:04d}.npz"
# How a snapshot's entries are packed: run-length deflate (``zlib.Z_RLE``, matches of the
# previous byte only) where it saves a tenth. On float16 activations it is quicker than level 1
# and, summed over a snapshot's layers, gives slightly smaller entries.
_ENTRIES = functools.partial(zips.choose, strategies=(zlib.Z_RLE,), gain=0.1)


@dataclass
class Snapshot:
    """One epoch's snapshot. Arrays are NumPy; ``layers`` fixes the order of per-layer rows."""

    epoch: int
    layers: list[str]  # the layers with activations: rows of ``cka``
    activations: dict[str, np.ndarray]
    eigenvalues: dict[str, np.ndarray]
    spectra: dict[str, np.ndarray]  # key -> (L_w,) float, rows in ``weight_layers`` order
    phases: list[str]  # (L_w,)
    cka: np.ndarray  # (L, L)
    corr: dict[str, float] = field(default_factory=dict)
    weight_layers: list[str] = field(default_factory=list)  # the layers with spectra (default: ``layers``)
    weight_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (N, M) of each ESD's matrices

    def __post_init__(self) -> None:
        if not self.weight_layers:
            self.weight_layers = [n for n in self.layers if n in self.eigenvalues]

    def metrics(self) -> dict[str, float]:
        """Scalar figures as MLflow metric names (``alpha/fc1``, ``cka/conv1-conv2``, ...)."""
        out: dict[str, float] = {}
        for key, prefix in METRIC_PREFIX.items():
            for layer, v in zip(self.weight_layers, self.spectra[key]):
                if np.isfinite(v):
                    out[f"{prefix}/{layer}"] = float(v)
        for layer, phase in zip(self.weight_layers, self.phases):
            out[f"phase/{layer}"] = float(PHASES.index(phase))
        for i, a in enumerate(self.layers):
            for j in range(i + 1, len(self.layers)):
                if np.isfinite(self.cka[i, j]):
                    out[f"cka/{a}-{self.layers[j]}"] = float(self.cka[i, j])
        out.update({f"corr/{k}": float(v) for k, v in self.corr.items() if np.isfinite(v)})
        return out


def pack_array(a: np.ndarray) -> zips.Packed:
    """One ``.npy`` entry of an ``.npz``, as ``np.savez`` writes it, packed for the archive."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return zips.pack(buf.getvalue(), _ENTRIES)


def _atomic_savez(path: Path, arrays: Mapping[str, np.ndarray | Future]) -> None:
    """Write ``arrays`` as the ``.npz`` file ``path``, its entries deflated where that pays.

    A value may also be a future of its packed entry (`pack_array`, on another thread). A
    reader never sees half a file. ``np.load`` reads it as it reads ``np.savez``'s files.
    """
    entries = [(f"{name}.npy", v.result() if isinstance(v, Future) else pack_array(v)) for name, v in arrays.items()]
    write_atomic(path, lambda f: zips.write_packed(f, entries))


def _arrays(snap: Snapshot) -> dict[str, np.ndarray]:
    """The snapshot's entries, in file order."""
    arrays: dict[str, np.ndarray] = {f"act__{n}": a for n, a in snap.activations.items()}
    arrays.update({f"eig__{n}": e for n, e in snap.eigenvalues.items()})
    arrays.update({f"spec__{k}": v for k, v in snap.spectra.items()})
    pairs = list(snap.corr)
    wl = snap.weight_layers
    arrays.update(
        epoch=np.array(snap.epoch),
        layers=np.array(snap.layers),
        wlayers=np.array(wl, dtype=str),
        wshape=np.array([snap.weight_shapes[n] for n in wl], dtype=np.int64).reshape(len(wl), 2),
        phase=np.array(snap.phases),
        cka=snap.cka.astype(np.float32),
        corr_pairs=np.array(pairs, dtype=str),
        corr=np.array([snap.corr[p] for p in pairs], dtype=np.float64),
    )
    return arrays


def write(snap: Snapshot, directory: str | os.PathLike, threads: int = 2) -> Path:
    """Write ``snap`` as ``directory/epoch_EEEE.npz``, its entries deflated on ``threads`` threads."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return write_into(snap, Path(directory), pool, {})


def write_into(snap: Snapshot, directory: Path, pool: ThreadPoolExecutor, packed: Mapping[str, Future]) -> Path:
    """`write` on the caller's ``pool``, reusing the entries already packed into ``packed``."""
    arrays = _arrays(snap)
    pending = {k: packed.get(k) or pool.submit(pack_array, a) for k, a in arrays.items()}
    path = directory / EPOCH_FMT.format(snap.epoch)
    _atomic_savez(path, pending)
    return path


def read(path: str | os.PathLike) -> Snapshot:
    """The snapshot in the ``.npz`` file ``path`` (files that predate ``wlayers`` read as one layer list)."""
    with np.load(path, allow_pickle=False) as z:
        layers = [str(s) for s in z["layers"]]
        # Files written before weights and activations could differ hold one list for both.
        wl = [str(s) for s in z["wlayers"]] if "wlayers" in z else layers
        shapes = {n: (int(a), int(b)) for n, (a, b) in zip(wl, z["wshape"])} if "wshape" in z else {}
        return Snapshot(
            epoch=int(z["epoch"]),
            layers=layers,
            activations={n: z[f"act__{n}"] for n in layers if f"act__{n}" in z},
            eigenvalues={n: z[f"eig__{n}"] for n in wl},
            weight_layers=wl,
            weight_shapes=shapes,
            spectra={k: z[f"spec__{k}"] for k in SPECTRAL_KEYS},
            phases=[str(p) for p in z["phase"]],
            cka=z["cka"].astype(np.float64),
            corr={str(k): float(v) for k, v in zip(z["corr_pairs"], z["corr"])},
        )


DEFAULT_OUTPUT = "out"  # the logits layer of a dsc model, and of probe files that name none


def write_probe(
    directory: Path,
    labels: np.ndarray,
    indices: np.ndarray,
    classes: Sequence[str],
    layers: Sequence[str],
    grids: Mapping[str, int | None],
    output: str = DEFAULT_OUTPUT,
) -> Path:
    """``probe.npz``: the probe's labels and dataset indices, the classes, the layers and their
    grids, and ``output``, the layer whose activations are the model's logits ("" for none)."""
    path = Path(directory) / "probe.npz"
    _atomic_savez(
        path,
        {
            "labels": np.asarray(labels, np.int64),
            "indices": np.asarray(indices, np.int64),
            "classes": np.array(list(classes)),
            "layers": np.array(list(layers)),
            "grids": np.array([grids.get(n) or 0 for n in layers], np.int64),
            "output": np.array(output),
        },
    )
    return path


@dataclass
class Snapshots:
    """All snapshots of a run, by epoch (ascending)."""

    epochs: list[int]
    labels: np.ndarray  # (n,)
    indices: np.ndarray  # (n,) dataset indices of the probe images
    classes: list[str]
    layers: list[str]
    grids: dict[str, int]
    by_epoch: dict[int, Snapshot]
    output: str = DEFAULT_OUTPUT  # the layer whose activations are the logits ("" for none)

    @property
    def weight_layers(self) -> list[str]:
        """The layers with spectra (those of the first snapshot; a dsc model's equal ``layers``)."""
        return self.by_epoch[self.epochs[0]].weight_layers if self.epochs else list(self.layers)

    @property
    def weight_shapes(self) -> dict[str, tuple[int, int]]:
        """(N, M) of the matrices each layer's ESD pools (empty for files that predate them)."""
        return self.by_epoch[self.epochs[0]].weight_shapes if self.epochs else {}

    def activations(self, layer: str) -> np.ndarray:
        """(E, n, ...) activations of ``layer`` over epochs, float16."""
        return np.stack([self.by_epoch[e].activations[layer] for e in self.epochs])

    def spectral(self, key: str) -> dict[str, np.ndarray]:
        """``{layer: (E,) values}`` of one spectral scalar (e.g. ``alpha``) over epochs."""
        rows = np.stack([self.by_epoch[e].spectra[key] for e in self.epochs])  # (E, L_w)
        return {n: rows[:, i] for i, n in enumerate(self.weight_layers)}

    def phases(self) -> np.ndarray:
        """(L_w, E) phase names, rows in ``weight_layers`` order."""
        return np.array([self.by_epoch[e].phases for e in self.epochs]).T

    def cka(self) -> np.ndarray:
        """(E, L, L) CKA matrices."""
        return np.stack([self.by_epoch[e].cka for e in self.epochs])

    def corr(self) -> dict[str, np.ndarray]:
        """``{"conv1-conv2": (E,)}`` successive-layer correlations."""
        pairs = list(self.by_epoch[self.epochs[0]].corr)
        return {p: np.array([self.by_epoch[e].corr.get(p, np.nan) for e in self.epochs]) for p in pairs}


def _epoch_of(path: Path) -> int | None:
    digits = path.stem[len("epoch_") :]
    return int(digits) if digits.isdigit() else None


def read_dir(directory: str | os.PathLike, through: int | None = None) -> Snapshots:
    """Snapshots from a local directory laid out as above.

    ``through``: the last epoch known complete; files of later epochs (left half-written by a
    process that died) are ignored. An unreadable file of a complete epoch is an error.
    """
    directory = Path(directory)
    try:
        with np.load(directory / "probe.npz", allow_pickle=False) as z:
            layers = [str(s) for s in z["layers"]]
            probe = dict(
                labels=z["labels"],
                indices=z["indices"],
                classes=[str(c) for c in z["classes"]],
                layers=layers,
                grids={n: int(g) for n, g in zip(layers, z["grids"])},
                output=str(z["output"]) if "output" in z else DEFAULT_OUTPUT,
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise TrackingError(
            f"{directory / 'probe.npz'} is unreadable ({type(exc).__name__}: {exc}); "
            "recompute the snapshots with `dsc snapshot --overwrite`"
        ) from None
    epochs = {p: _epoch_of(p) for p in sorted(directory.glob("epoch_*.npz"))}
    paths = [p for p, e in epochs.items() if e is not None and (through is None or e <= through)]
    snaps = {}
    for path in paths:
        try:
            snap = read(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise TrackingError(
                f"snapshot {path.name} is unreadable ({type(exc).__name__}: {exc}); "
                "recompute the snapshots with `dsc snapshot --overwrite`"
            ) from None
        snaps[snap.epoch] = snap
    return Snapshots(epochs=sorted(snaps), by_epoch=snaps, **probe)
