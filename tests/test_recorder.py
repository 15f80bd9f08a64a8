"""The recorder on a user's own model and loop: scikit-learn's digits, a hand-written CNN with
BatchNorm and Dropout, trained by a plain loop of this file's own."""

import copy

import mlflow
import numpy as np
import pytest
import torch
from conftest import fresh_store
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits
from torch import nn

from dsc import tracking
from dsc.core.scores import probe_metrics
from dsc.errors import ConfigError, TrainingDiverged
from dsc.jobs.recorder import Recorder
from dsc.nn.layers import list_layers, resolve_layers


def digits(n_val=200, side=8):
    """Digits as (1, side, side) images: train and validation tensors, labels 0..9."""
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if side != 8:
        x = nn.functional.interpolate(x, size=side, mode="bilinear", align_corners=False)
    y = torch.from_numpy(d.target.astype(np.int64))
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


def train_epoch(model, opt, x, y, epoch, batch=64):
    model.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
    total = 0.0
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(y)


def run_loop(record, epochs=3, seed=0, **options):
    (xt, yt), probe = digits()
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rec = None
    if record:
        rec = Recorder(
            model,
            probe=probe,
            class_names=[f"d{i}" for i in range(10)],
            experiment="mine",
            params={"lr": 3e-3},
            optimizer=opt,
            epochs=epochs,
            **options,
        )
        with rec:
            rec.epoch(0)
            for e in range(1, epochs + 1):
                rec.epoch(e, **{"loss/train": train_epoch(model, opt, xt, yt, e)})
    else:
        for e in range(1, epochs + 1):
            train_epoch(model, opt, xt, yt, e)
    return model, rec, probe


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, cache_dir, empty_store):
    """One recorded run of the CNN in a store of this module's own."""
    root = tmp_path_factory.mktemp("recorder")
    with pytest.MonkeyPatch.context() as mp:
        uri = fresh_store(root, mp, cache_dir, empty_store)
        model, rec, probe = run_loop(True)
        yield model, rec, probe, uri


@pytest.mark.slow
def test_the_recorder_leaves_training_bit_identical(recorded):
    """Same seed, with and without the recorder: the same final weights and BatchNorm statistics."""
    with_rec = recorded[0]
    without, _, _ = run_loop(False)
    a, b = with_rec.state_dict(), without.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_a_recorded_run_is_a_training_run_with_the_metrics_of_dsc_train(recorded):
    model, rec, (xv, yv), _ = recorded
    run = MlflowClient().get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.KIND_TAG] == "train"
    keys = set(run.data.metrics)
    for name in (
        "acc/val",
        "loss/val",
        "loss/train",
        "acc_class/d3",
        "prob_class/d3",
        "alpha/head.1",
        "stable_rank/features.0",
        "cka/features.0-features.3",
    ):
        assert name in keys, name
    steps, acc = tracking.metric_history(rec.run_id, "acc/val")
    assert steps.tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        model.eval()
        logits = model(xv).numpy()
    direct = probe_metrics(logits, yv.numpy(), [f"d{i}" for i in range(10)])
    assert acc[-1] == pytest.approx(direct["acc/val"])
    _, prob = tracking.metric_history(rec.run_id, "prob_class/d3")
    assert prob[-1] == pytest.approx(direct["prob_class/d3"], rel=1e-6)
    assert abs(prob[0] - 0.1) < 0.1  # near 1/C before training


def test_its_snapshots_hold_the_users_layer_names_and_every_weights_spectrum(recorded):
    _, rec, (_, yv), _ = recorded
    snaps = tracking.snapshot.load(rec.run_id)
    assert snaps.epochs == [0, 1, 2, 3]
    assert snaps.layers == ["features.0", "features.3", "head.1", "head.4"]
    assert snaps.output == "head.4"  # the last Linear gives the model's output
    assert snaps.weight_layers == ["features.0", "features.3", "head.1", "head.4"]
    assert snaps.weight_shapes["features.3"] == (16, 8)  # (out, in) of each 3x3 kernel position
    assert np.array_equal(snaps.labels, yv.numpy())
    assert snaps.by_epoch[3].activations["head.4"].shape == (len(yv), 10)
    ckpts = tracking.list_checkpoints(rec.run_id)
    assert sorted(ckpts) == [0, 1, 2, 3]
    state = tracking.load_checkpoint(rec.run_id, ckpts[3])["model_state"]
    assert torch.equal(state["head.4.weight"], recorded[0].state_dict()["head.4.weight"])


def test_the_logged_model_is_the_final_one(recorded):
    model, rec, (xv, _), _ = recorded
    loaded = tracking.load_logged_model(rec.run_id)
    with torch.no_grad():
        model.eval()
        assert torch.allclose(loaded(xv[:5]), model(xv[:5]), atol=1e-5)


def test_layers_by_pattern_callable_and_wrapper_prefixes():
    model = SmallCNN()
    assert list(resolve_layers(model, ["features.*"])) == [f"features.{i}" for i in range(7)]
    assert list(resolve_layers(model, lambda n, m: isinstance(m, nn.BatchNorm2d))) == ["features.1", "features.4"]
    wrapped = nn.DataParallel(model)
    assert list(resolve_layers(wrapped, ["module.head.1"])) == ["head.1"]
    assert list(resolve_layers(torch.compile(model))) == ["features.0", "features.3", "head.1", "head.4"]
    rows = list_layers(model, torch.zeros(2, 1, 8, 8), echo=False)
    assert {r["name"]: r["output"] for r in rows}["features.6"] == (16, 4, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(probe=(torch.zeros(20, 1, 8, 8), torch.zeros(20))), "integer class indices"),
        (
            dict(probe=(torch.zeros(20, 1, 8, 8), torch.arange(20) % 2), layers=["nothing.*"]),
            "matches no module.*features.0",
        ),
        (
            dict(probe=(torch.zeros(20, 1, 8, 8), torch.arange(20) % 2), class_names=["a", "b"]),
            "2 names but the model gives 10",
        ),
        (dict(probe=(torch.zeros(20, 1, 8, 8), torch.arange(20) % 2), snapshot_every=-1), "snapshot_every=-1"),
    ],
)
def test_bad_arguments_are_one_line_before_any_run(bad, match, store):
    with pytest.raises(ConfigError, match=match) as info:
        Recorder(SmallCNN(), **bad)
    assert "\n" not in str(info.value)


def test_a_model_without_logits_is_refused():
    class Features(nn.Module):
        def forward(self, x):
            return x.flatten(1).unsqueeze(-1)

    with pytest.raises(ConfigError, match=r"not \(2, classes\) logits"):
        Recorder(nn.Sequential(nn.Conv2d(1, 2, 3), Features()), probe=(torch.zeros(4, 1, 8, 8), torch.arange(4) % 2))


def test_a_probe_larger_than_memory_says_how_to_shrink_it(store):
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))
    x = torch.zeros(1, 3, 512, 512).expand(200_000, -1, -1, -1)  # no memory of its own
    rec = Recorder(model, probe=(x, torch.arange(200_000) % 2), grid=512, log_model=False)
    with pytest.raises(ConfigError, match=r"probe_size=\d+") as info, rec:
        pass
    run = MlflowClient().get_run(rec.run_id)
    assert run.info.status == "FAILED" and "probe_size=" in run.data.tags["error"]
    assert "\n" not in str(info.value)


def test_an_epoch_recorded_twice_fails_the_run_and_keeps_what_was_logged(store):
    _, probe = digits(n_val=60)
    rec = Recorder(SmallCNN(), probe=probe, snapshot_every=0, log_model=False)
    with pytest.raises(ConfigError, match="epoch 1 recorded twice"), rec:
        rec.epoch(0)
        rec.epoch(1)
        rec.epoch(1)
    run = MlflowClient().get_run(rec.run_id)
    assert run.info.status == "FAILED"
    assert tracking.metric_history(rec.run_id, "acc/val")[0].tolist() == [0, 1]
    assert sorted(tracking.list_checkpoints(rec.run_id)) == [0, 1]


def test_a_diverging_loss_ends_the_run_failed(store):
    _, probe = digits(n_val=60)
    rec = Recorder(SmallCNN(), probe=probe, snapshot_every=0, checkpoint_every=0, log_model=False)
    with pytest.raises(TrainingDiverged, match="loss/train is nan at epoch 1"), rec:
        rec.epoch(0)
        rec.epoch(1, **{"loss/train": float("nan")})
    assert MlflowClient().get_run(rec.run_id).info.status == "FAILED"


def test_inside_an_active_run_the_recorder_records_into_it(store):
    _, probe = digits(n_val=60)
    model = SmallCNN()
    with mlflow.start_run() as run:
        with Recorder(copy.deepcopy(model), probe=probe, snapshot_every=0, checkpoint_every=0, log_model=False) as rec:
            rec.epoch(0)
        assert rec.run_id == run.info.run_id
        assert mlflow.active_run().info.status == "RUNNING"  # its owner ends it
    assert "acc/val" in MlflowClient().get_run(run.info.run_id).data.metrics


@pytest.mark.slow
def test_a_torchvision_model_is_recorded_analysed_and_compared(store):
    """ResNet-18 on the digits at 32x32, trained by this test's loop: `dsc analyze` runs every
    step that needs no training split, and `dsc compare` decomposes its acc/val."""
    import torchvision

    from dsc.jobs.analyze import analyze_job
    from dsc.jobs.compare import compare_job
    from dsc.settings import AnalyzeConfig, CompareConfig

    (xt, yt), (xv, yv) = digits(n_val=100, side=32)
    xt, xv = xt.expand(-1, 3, -1, -1).contiguous(), xv.expand(-1, 3, -1, -1).contiguous()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with Recorder(model, probe=(xv, yv), run_name="resnet") as rec:
        rec.epoch(0)
        for e in range(1, 5):
            rec.epoch(e, **{"loss/train": train_epoch(model, opt, xt[:200], yt[:200], e, batch=100)})
    a = analyze_job(rec.run_id, cfg=AnalyzeConfig(progress=False, modes_points=3, modes_max_images=50))
    s = a.summary
    assert s["layer"] == "layer4.1.conv2"  # the recorded layer that feeds fc
    assert a.src.snaps.output == "fc"
    assert s["order"]["skipped"].startswith("the run was recorded by dsc.Recorder")
    assert "skipped" not in s["inputs"] and "skipped" not in s["modes"], (s["inputs"], s["modes"])
    assert set(s["modes"]["layers"]) == {"fc"}
    assert s["collapse"]["weight_epochs"] == [0, 1, 2, 3, 4]
    assert len(s["spectra"]["layers"]) == 21  # every Conv2d and Linear of ResNet-18
    arts = {f.path for f in MlflowClient().list_artifacts(rec.run_id, "analysis")}
    assert "analysis/report.html" in arts
    cmp = compare_job(CompareConfig(run_ids=(rec.run_id,), max_components=1, jobs=1), warn=lambda line: None)
    assert MlflowClient().get_run(cmp).info.status == "FINISHED"
    assert "lld/r2_1" in MlflowClient().get_run(rec.run_id).data.metrics


@pytest.mark.slow
def test_a_run_no_dsc_code_made_is_compared_on_the_steps_it_logged(store):
    """A plain MLflow script's metric, 20,000 points logged every 5th global step up to 100,000:
    compared, its fit written back, the centre on the steps' scale."""
    from mlflow.entities import Metric

    from dsc.jobs.compare import compare_job
    from dsc.settings import CompareConfig

    client = MlflowClient()
    exp = client.create_experiment("plain")
    run = client.create_run(exp)
    steps = np.arange(0, 100_000, 5)
    values = 0.2 + 0.7 / (1 + np.exp(-(steps - 40_000) / 5_000)) + np.random.default_rng(0).normal(0, 0.01, steps.size)
    for i in range(0, steps.size, 1000):
        client.log_batch(
            run.info.run_id,
            metrics=[
                Metric("val_score", float(v), 0, int(s)) for s, v in zip(steps[i : i + 1000], values[i : i + 1000])
            ],
        )
    client.set_terminated(run.info.run_id)
    assert tracking.metric_history(run.info.run_id, "val_score")[0].size == 20_000
    cmp = compare_job(
        CompareConfig(experiments=("plain",), metric="val_score", max_components=1, jobs=1), warn=lambda line: None
    )
    assert MlflowClient().get_run(cmp).info.status == "FINISHED"
    fitted = MlflowClient().get_run(run.info.run_id).data.metrics
    assert fitted["lld/n_components"] == 1
    assert fitted["lld/center_1"] == pytest.approx(40_000, rel=0.02)
    assert fitted["lld/width_1"] == pytest.approx(5_000, rel=0.05)
    with pytest.raises(Exception, match="no runs to compare"):
        compare_job(CompareConfig(experiments=("plain",), metric="val_score", dsc_only=True, jobs=1))
