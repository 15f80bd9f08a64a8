"""The dataset a run trained on, as MLflow dataset inputs."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.dataset_source import DatasetSource

from dsc.data.dataset import Prepared
from dsc.tracking.store import clash_retried


def log_dataset(data: Prepared) -> None:
    """Log the train and validation splits as MLflow dataset inputs, with sizes and class counts."""
    from mlflow.data.numpy_dataset import from_numpy  # mlflow.data.from_numpy, which it registers at import

    ims = data.imageset
    digest = ims.digest()
    for context, idx in (("training", data.train_idx), ("validation", data.val_idx)):
        counts = np.bincount(ims.labels[idx], minlength=ims.num_classes)
        # The split's own indices key its digest: splits of one image set (another seed, another
        # --exemplars-per-class) are different datasets to MLflow.
        split = hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:8]
        ds = from_numpy(
            ims.images[idx],
            targets=ims.labels[idx],
            source=_dataset_source(ims),
            name=ims.name,
            digest=f"{digest}-{context[:5]}-{split}",
        )
        tags = {
            "split_size": str(len(idx)),
            "class_counts": json.dumps({c: int(n) for c, n in zip(ims.classes, counts)}),
        }
        clash_retried(functools.partial(mlflow.log_input, ds, context=context, tags=tags))
    mlflow.log_params(
        {
            "data_digest": digest,
            "n_train": len(data.train_idx),
            "n_val": len(data.val_idx),
            "classes": ",".join(ims.classes),
        }
    )


def _dataset_source(ims) -> DatasetSource:
    """A local path for data read from disk; for generated data, its generator parameters."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import get_registered_sources

    if ims.source and Path(ims.source).exists():
        # The registry holds MLflow's local-file source class; naming it avoids the
        # "can be interpreted in multiple ways" guess that a bare path triggers.
        local = next(s for s in get_registered_sources() if s._get_source_type() == "local")
        return local(ims.source)  # type: ignore[operator]  # typed as instances, the registry holds classes
    return CodeDatasetSource(tags={"generator": ims.source or ims.name})
