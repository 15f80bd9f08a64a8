import numpy as np
import pytest
import torch

from dsc.data.dataset import load_imageset, prepare
from dsc.errors import ConfigError, TrainingDiverged
from dsc.nn.model import DenseVGG
from dsc.nn.train import pick_device, train
from dsc.settings import DataConfig, TrainConfig


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


@pytest.mark.slow
def test_same_seed_gives_identical_histories_and_weights(tiny):
    a, ma = history(tiny, optimizer="adam", lr=1e-3)
    b, mb = history(tiny, optimizer="adam", lr=1e-3)
    assert [e for e, _ in a] == [0, 1, 2, 3]
    assert a == b
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(pa, pb)
    c, _ = history(tiny, optimizer="adam", lr=1e-3, seed=1)
    assert c != a


@pytest.mark.slow
def test_metrics_are_complete_and_in_range(tiny):
    rows, _ = history(tiny, optimizer="sgd", lr=0.01)
    for _, m in rows:
        assert {"loss/train", "loss/val", "acc/train", "acc/val"} <= m.keys()
        assert {f"acc_class/face{i}" for i in (1, 2, 3)} <= m.keys()
        assert all(0 <= m[k] <= 1 for k in m if k.startswith("acc"))
    # epoch 0 is before any update: chance-level loss for 3 classes is ln 3
    assert abs(rows[0][1]["loss/val"] - np.log(3)) < 0.3


@pytest.mark.slow
def test_prob_class_is_the_mean_true_class_softmax_of_the_logits(tiny):
    from dsc.nn.train import epoch_metrics

    torch.manual_seed(1)
    model = DenseVGG(num_classes=3, hidden=64)
    train(model, tiny, TrainConfig(epochs=1, lr=1e-3, device="cpu"), progress=False)
    metrics = epoch_metrics(model, tiny, torch.device("cpu"), TrainConfig(device="cpu"))
    model.eval()
    with torch.no_grad():
        x, y = tiny.batch(tiny.val_idx, torch.device("cpu"))
        probs = torch.softmax(model(x).double(), 1).numpy()
    y = y.numpy()
    for c, name in enumerate(tiny.classes):
        assert metrics[f"prob_class/{name}"] == pytest.approx(probs[y == c, c].mean(), rel=1e-5)
    # the untrained network starts every class near 1/C, where its recall may be 0 or 1
    rows, _ = history(tiny, optimizer="sgd", lr=0.01)
    assert all(abs(rows[0][1][f"prob_class/{n}"] - 1 / 3) < 0.1 for n in tiny.classes)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 5, 12])
def test_steps_take_exactly_that_many_optimizer_steps(tiny, steps):
    from dsc.nn.train import epochs_to_train, steps_per_epoch

    cfg = TrainConfig(steps=steps, batch_size=16, seed=0, device="cpu")
    per_epoch = steps_per_epoch(cfg, len(tiny.train_idx))
    assert per_epoch == -(-len(tiny.train_idx) // 16) and per_epoch < 12 < 2 * per_epoch
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, hidden=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    taken = []
    optimizer.register_step_post_hook(lambda *_: taken.append(1))
    rows = []
    train(
        model,
        tiny,
        cfg,
        on_epoch=lambda r: rows.append((r.epoch, r.metrics["train/steps"])),
        optimizer=optimizer,
        progress=False,
    )
    assert len(taken) == steps
    assert rows[-1] == (epochs_to_train(cfg, len(tiny.train_idx)), float(steps))
    assert [s for _, s in rows] == [min(e * per_epoch, steps) for e, _ in rows]


@pytest.mark.slow
def test_channels_last_matches_nchw(tiny):
    a, _ = history(tiny, optimizer="sgd", lr=0.01, channels_last=True)
    b, _ = history(tiny, optimizer="sgd", lr=0.01, channels_last=False)
    for (_, ma), (_, mb) in zip(a, b):
        assert ma["loss/val"] == pytest.approx(mb["loss/val"], rel=1e-3, abs=1e-4)


def test_divergence_is_reported_with_a_hint(tiny):
    with pytest.raises(TrainingDiverged, match=r"lower --lr \(now 1e\+0?8\)"):
        history(tiny, optimizer="sgd", lr=1e8)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lr": 0.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"optimizer": "rmsprop"}, "--optimizer"),
        ({"epochs": -1}, "--epochs"),
    ],
)
def test_bad_training_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimizer_follows_torchs_reference_update(optimizer):
    from dsc.nn.train import make_optimizer

    torch.manual_seed(0)
    ours = DenseVGG(num_classes=3, hidden=32, pool_size=4)
    ref = DenseVGG(num_classes=3, hidden=32, pool_size=4)
    ref.load_state_dict(ours.state_dict())
    start = {k: v.clone() for k, v in ours.state_dict().items()}
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, weight_decay=1e-3)
    opt = make_optimizer(ours, cfg)
    assert opt.param_groups[0]["fused"] is True
    ref_opt = (
        torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=1e-3, foreach=False)
        if optimizer == "adam"
        else torch.optim.SGD(ref.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-3, foreach=False)
    )
    x, y = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(5):
        for m, o in ((ours, opt), (ref, ref_opt)):
            m.eval()  # no dropout: both see the same function
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    moved = max(float((p - start[k]).abs().max()) for k, p in ours.state_dict().items())
    assert moved > 1e-3  # the updates were real, and the two implementations agree on them


@pytest.mark.slow
def test_one_epoch_with_the_kernel_matches_torchs_layers(tiny):
    from dsc.nn.train import make_optimizer, train_one_epoch, uses_conv3

    states = {}
    for kernel in ("dsc", "torch"):
        torch.manual_seed(0)
        model = DenseVGG(num_classes=3, hidden=64, dropout=0.0)
        cfg = TrainConfig(batch_size=16, lr=1e-3, conv_kernel=kernel, device="cpu")
        assert uses_conv3(model, cfg, torch.device("cpu"), tuple(tiny.x.shape[1:])) is (kernel == "dsc")
        opt = make_optimizer(model, cfg)
        for epoch in (1, 2):
            train_one_epoch(model, tiny, opt, cfg, epoch, torch.device("cpu"))
        states[kernel] = model.state_dict()
    for k in states["dsc"]:
        torch.testing.assert_close(states["dsc"][k], states["torch"][k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_micro_batches_give_the_full_batch_update(tiny):
    from dsc.nn.train import make_optimizer, train_one_epoch

    results = []
    for micro in (0, 5, 1):  # auto (one pass at 32x32), uneven parts of 5, single images
        torch.manual_seed(0)
        model = DenseVGG(num_classes=3, hidden=64, dropout=0.0)
        cfg = TrainConfig(batch_size=16, lr=1e-3, micro_batch=micro, device="cpu")
        opt = make_optimizer(model, cfg)
        for epoch in (1, 2):
            train_one_epoch(model, tiny, opt, cfg, epoch, torch.device("cpu"))
        results.append(model.state_dict())
    torch.manual_seed(0)
    start = DenseVGG(num_classes=3, hidden=64, dropout=0.0).state_dict()
    assert max(float((results[0][k] - start[k]).abs().max()) for k in start) > 1e-3
    for other in results[1:]:
        for k in start:
            torch.testing.assert_close(other[k], results[0][k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize(
    "shape,device,micro,expected",
    [
        ((1, 128, 128), "cpu", 0, 16),  # 32 grey images of 128x128 as 3 channels: 6 MB -> 2 x 16
        ((3, 128, 128), "cpu", 0, 16),
        ((1, 256, 256), "cpu", 0, 6),  # 24 MB -> 6 parts: five of 6 and one of 2
        ((1, 32, 32), "cpu", 0, 32),  # fits: one pass
        ((1, 128, 128), "cuda", 0, 32),  # the GPU keeps the whole batch
        ((1, 128, 128), "cpu", 8, 8),  # explicit
        ((1, 128, 128), "cpu", 100, 32),  # never more than the batch
    ],
)
def test_micro_batch_size_rule(shape, device, micro, expected):
    from dsc.nn.train import micro_batch_size

    cfg = TrainConfig(batch_size=32, micro_batch=micro)
    assert micro_batch_size(cfg, shape, torch.device(device)) == expected


def test_keep_freed_memory_takes_effect_on_glibc():
    import platform

    from dsc.nn.train import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent: cached, the thresholds set once


def test_flush_denormals_zeroes_subnormal_results_and_only_those():
    import platform

    from dsc.nn.train import flush_denormals

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("FTZ/DAZ are x86's")
    x = torch.tensor([1e-30, 1.0], dtype=torch.float32)
    assert flush_denormals() is True
    product = x * 1e-10  # 1e-40 is subnormal in float32 (below 1.18e-38): flushed to 0
    assert product[0].item() == 0.0 and product[1].item() == pytest.approx(1e-10)
    assert (x * 1e-5)[0].item() == pytest.approx(1e-35, rel=1e-6)  # normal: unchanged


def test_the_conv_kernel_keeps_the_whole_batch():
    from dsc.nn.train import micro_batch_size

    cfg = TrainConfig(batch_size=32)
    assert micro_batch_size(cfg, (1, 128, 128), torch.device("cpu"), conv3=True) == 32
    assert (
        micro_batch_size(TrainConfig(batch_size=32, micro_batch=8), (1, 128, 128), torch.device("cpu"), conv3=True) == 8
    )  # an explicit size still wins
    with pytest.raises(ConfigError, match="--conv-kernel 'numba'"):
        TrainConfig(conv_kernel="numba")


def test_evaluation_batches_split_by_the_same_rule():
    from dsc.nn.train import micro_batch_size

    cfg = TrainConfig()  # eval_batch_size 256: 48 MB of 128x128 maps -> 12 passes of at most 22
    assert micro_batch_size(cfg, (1, 128, 128), torch.device("cpu"), batch=cfg.eval_batch_size) == 22
    assert micro_batch_size(cfg, (1, 128, 128), torch.device("cuda"), batch=cfg.eval_batch_size) == 256


def test_evaluation_through_the_kernel_matches_torchs_layers(tiny):
    from dsc.nn.train import evaluate, logits

    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, hidden=64)
    cfgs = [TrainConfig(conv_kernel=kernel, device="cpu") for kernel in ("dsc", "torch")]
    (loss, acc, pred), (ref_loss, ref_acc, ref_pred) = [
        evaluate(model, tiny, tiny.val_idx, torch.device("cpu"), c) for c in cfgs
    ]
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert acc == ref_acc and np.array_equal(pred, ref_pred)
    out, ref = [logits(model, tiny, tiny.val_idx, torch.device("cpu"), c) for c in cfgs]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert model.training  # the train flag is restored


@pytest.mark.parametrize(
    "shape,batch,expected",
    [
        ((1, 128, 128), 256, 128),  # 48 MB of maps: two passes of 128 (24 MB each)
        ((3, 128, 128), 32, 32),  # fits: one pass
        ((1, 256, 256), 256, 43),  # 192 MB: six parts
    ],
)
def test_kernel_evaluation_passes_fit_the_blocks_glibc_keeps(shape, batch, expected):
    from dsc.nn.train import KEPT_BLOCK_BYTES, _pass_size

    assert _pass_size(batch, shape, KEPT_BLOCK_BYTES) == expected
