"""End-to-end time of `dsc analyze` on a run of the default size, without training one.

The run is fabricated with the real shapes of a 60-epoch default run: the default synthetic
task (5 identities x 576 images, 128 x 128), its 576-image validation split as the probe set,
the paper's DenseVGG (2,284,969 parameters), a snapshot at every epoch 0..60 written by
`dsc.core.snapshot.compute` / `write` with the activations pooled to the default 4 MB budget, the
four learning curves and each class's validation recall, and a checkpoint at every epoch (the
weights only; the last one complete, as `dsc train` leaves it). Activations are synthetic
(classes that separate one after another around epoch 25) and the weights drift from their
initialisation towards a few spikes, so every step has real work to do; the model is untrained,
so the modes curves sit at chance, which costs the same time as a trained one. Snapshots are
cached (under $DSC_CACHE_DIR or ~/.cache/dsc) after the first call; the analysis itself runs
against a fresh SQLite store in a temporary directory, and prints wall seconds, process CPU
seconds and seconds per step.

    uv run python bench/analyze.py [--epochs 60] [--modes-max-images 576] [--repeats 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dsc.core import snapshot
from dsc.data import cache
from dsc.data.dataset import load_imageset, prepare
from dsc.nn.capture import plan_grids
from dsc.nn.model import build_model, named_layers
from dsc.settings import DataConfig, ModelConfig

VERSION = 1  # bump when the fabricated snapshots change


def fabricate(epochs: int, data, model, directory: Path) -> None:
    """Write probe.npz and epoch_0000..epoch_EEEE.npz of the default run's sizes."""
    rng = np.random.default_rng(0)
    probe = data.val_idx
    labels = data.y[probe].numpy()
    n, n_cls = len(probe), len(data.classes)
    sample = data.batch(probe[:1], torch.device("cpu"))[0]
    grids = plan_grids(model, sample, n, 0.95 * 4e6)
    snapshot.write_probe(directory, labels, probe, data.classes, list(grids), grids)
    w0 = {k: w.detach().numpy().copy() for k, w in ((k, m.weight) for k, m in named_layers(model).items())}
    spikes = {
        k: rng.standard_normal((w.shape[0], 3)) @ rng.standard_normal((3, int(np.prod(w.shape[1:]))))
        for k, w in w0.items()
    }
    centres = rng.standard_normal((n_cls, 1024)) * 3.0
    feats = rng.standard_normal((n, 1024))
    for e in range(epochs + 1):
        # class c separates from the others around epoch 20 + 3c (a logistic in e)
        sep = 1 / (1 + np.exp(-(e - 20 - 3 * labels) / 1.5))  # (n,)
        hidden = np.maximum(0, feats + sep[:, None] * centres[labels])
        acts = {}
        for name, g in grids.items():
            if name.startswith("conv"):
                side = g or data.x.shape[-1]
                acts[name] = rng.random((n, 3, side, side)).astype(np.float16)
        acts["fc1"] = (hidden + 0.5 * rng.standard_normal((n, 1024))).clip(0).astype(np.float16)
        acts["fc2"] = hidden.astype(np.float16)
        acts["out"] = (hidden[:, :n_cls] * 0.1).astype(np.float16)
        drift = 0.02 * e / max(epochs, 1)
        weights = {k: w + drift * spikes[k].reshape(w.shape) for k, w in w0.items()}
        snapshot.write(snapshot.compute(e, acts, weights), directory)


def build_run(epochs: int) -> str:
    """Log the fabricated run to the current tracking store; returns its id."""
    import mlflow
    from mlflow.entities import Metric

    cfg = DataConfig()
    ims = load_imageset(cfg)
    data = prepare(ims, cfg)
    torch.manual_seed(0)
    model_cfg = ModelConfig(num_classes=len(data.classes))
    model = build_model(model_cfg)
    key = hashlib.sha256(f"{VERSION}-{epochs}-{ims.digest()}".encode()).hexdigest()[:12]
    snaps = cache.root() / f"bench-analyze-{key}"
    if not (snaps / "probe.npz").exists() or len(list(snaps.glob("epoch_*.npz"))) != epochs + 1:
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(dir=cache.root(), prefix=".bench-"))
        fabricate(epochs, data, model, tmp)
        shutil.rmtree(snaps, ignore_errors=True)
        tmp.rename(snaps)
        print(f"fabricated {epochs + 1} snapshots in {time.perf_counter() - t0:.1f} s ({snaps})")
    t = np.arange(epochs + 1)
    acc = 0.2 + 0.77 / (1 + np.exp(-(t - 25) / 2.5))
    with mlflow.start_run(tags={"dsc.kind": "train"}) as run:
        mlflow.log_params({"data_digest": ims.digest(), "epochs": epochs})
        stamp = int(time.time() * 1000)
        curves = {"acc/val": acc, "acc/train": acc, "loss/val": 1.7 - acc, "loss/train": 1.7 - acc}
        # each class's recall rises where its activations separate (epoch 20 + 3c)
        curves |= {
            f"acc_class/{name}": 0.2 + 0.78 / (1 + np.exp(-(t - 20 - 3 * c) / 1.5))
            for c, name in enumerate(data.classes)
        }
        metrics = [Metric(k, float(v[e]), stamp, int(e)) for e in t for k, v in curves.items()]
        for start in range(0, len(metrics), 1000):
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        mlflow.log_artifacts(str(snaps), "snapshots")
        with tempfile.TemporaryDirectory() as tmp:
            # analyze reads the classifier's weights from the checkpoints of several epochs
            for e in range(epochs):
                torch.save({"epoch": e, "model_state": model.state_dict()}, Path(tmp) / f"epoch_{e:04d}.pt")
            torch.save(
                {
                    "epoch": epochs,
                    "model_state": model.state_dict(),
                    "optimizer_state": {},
                    "metrics": {},
                    "model_config": model_cfg.to_dict(),
                    "train_config": {},
                    "data_config": cfg.to_dict(),
                    "classes": list(data.classes),
                    "norm_mean": data.mean,
                    "norm_std": data.std,
                },
                Path(tmp) / f"epoch_{epochs:04d}.pt",
            )
            mlflow.log_artifacts(tmp, "checkpoints")
    return run.info.run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60, help="last epoch of the fabricated run")
    ap.add_argument("--modes-max-images", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=1, help="analyses of the same run (best kept)")
    args = ap.parse_args()

    import mlflow

    from dsc.jobs.analyze import analyze_job
    from dsc.settings import AnalyzeConfig

    with tempfile.TemporaryDirectory(prefix="dsc-bench-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        os.environ["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        run_id = build_run(args.epochs)
        cfg = AnalyzeConfig(modes_max_images=args.modes_max_images, progress=False)
        best = None
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            result = analyze_job(run_id, cfg=cfg)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if best is None or wall < best[0]:
                best = (wall, cpu, result.timings)
    wall, cpu, timings = best
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"analyze of a {args.epochs}-epoch default-size run: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(
        "per step (s; modes_background runs beside the steps after 'model'): "
        + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
    )


if __name__ == "__main__":
    main()
