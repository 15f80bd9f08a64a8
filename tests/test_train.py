import numpy as np
import pytest
import torch

from dsc.data.dataset import DataConfig, load_imageset, prepare
from dsc.errors import ConfigError, TrainingDiverged
from dsc.model import DenseVGG
from dsc.train import TrainConfig, pick_device, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = DataConfig(identities=3, image_size=32, cache_dir=str(tmp_path_factory.mktemp("c")))
    data = prepare(load_imageset(cfg), cfg)
    # a small, fixed subset keeps each epoch to a fraction of a second
    data.train_idx, data.val_idx = data.train_idx[::8], data.val_idx[::4]
    return data


def history(data, **kw):
    cfg = TrainConfig(epochs=3, seed=kw.pop("seed", 0), device="cpu", **kw)
    torch.manual_seed(cfg.seed)
    model = DenseVGG(num_classes=3, hidden=64)
    rows = []
    train(model, data, cfg, on_epoch=lambda r: rows.append((r.epoch, r.metrics)), progress=False)
    return rows, model


def test_same_seed_gives_identical_histories_and_weights(tiny):
    a, ma = history(tiny, optimizer="adam", lr=1e-3)
    b, mb = history(tiny, optimizer="adam", lr=1e-3)
    assert [e for e, _ in a] == [0, 1, 2, 3]
    assert a == b
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(pa, pb)
    c, _ = history(tiny, optimizer="adam", lr=1e-3, seed=1)
    assert c != a


def test_metrics_are_complete_and_in_range(tiny):
    rows, _ = history(tiny, optimizer="sgd", lr=0.01)
    for _, m in rows:
        assert {"loss/train", "loss/val", "acc/train", "acc/val"} <= m.keys()
        assert {f"acc_class/face{i}" for i in (1, 2, 3)} <= m.keys()
        assert all(0 <= m[k] <= 1 for k in m if k.startswith("acc"))
    # epoch 0 is before any update: chance-level loss for 3 classes is ln 3
    assert abs(rows[0][1]["loss/val"] - np.log(3)) < 0.3


def test_channels_last_matches_nchw(tiny):
    a, _ = history(tiny, optimizer="sgd", lr=0.01, channels_last=True)
    b, _ = history(tiny, optimizer="sgd", lr=0.01, channels_last=False)
    for (_, ma), (_, mb) in zip(a, b):
        assert ma["loss/val"] == pytest.approx(mb["loss/val"], rel=1e-3, abs=1e-4)


def test_divergence_is_reported_with_a_hint(tiny):
    with pytest.raises(TrainingDiverged, match=r"lower --lr \(now 1e\+0?8\)"):
        history(tiny, optimizer="sgd", lr=1e8)


@pytest.mark.parametrize("kw, match", [({"lr": 0.0}, "--lr"), ({"lr": float("nan")}, "--lr"),
                                       ({"optimizer": "rmsprop"}, "--optimizer"), ({"epochs": -1}, "--epochs")])
def test_bad_training_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")
