import pytest
import torch

from dsc.errors import ConfigError
from dsc.nn.model import DenseVGG, build_model, count_parameters, named_layers
from dsc.settings import ModelConfig


def test_default_network_has_the_papers_parameter_count():
    model = DenseVGG()
    assert count_parameters(model) == 2_284_969
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.numel() + c.bias.numel() for c in convs] == [84] * 5


def test_layer_names_are_stable_and_in_forward_order():
    assert list(named_layers(DenseVGG())) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "out"]
    assert list(named_layers(DenseVGG(depth=2)))[:3] == ["conv1", "conv2", "fc1"]


@pytest.mark.parametrize("size", [32, 128, 150])
def test_forward_shape_any_input_size(size):
    out = DenseVGG(num_classes=7).eval()(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 7)


def test_options_change_the_shape():
    m = DenseVGG(num_classes=3, depth=3, filters=8, kernel_size=5, pool_size=10, hidden=64)
    layers = named_layers(m)
    assert layers["conv2"].weight.shape == (8, 8, 5, 5)
    assert layers["fc1"].in_features == 8 * 10 * 10
    assert layers["out"].out_features == 3
    # hand count: convs, fc1, fc2, out
    expected = (3 * 8 * 25 + 8) + 2 * (8 * 8 * 25 + 8) + (800 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)
    assert count_parameters(m) == expected


def test_vgg11_is_torchvisions_with_c_classes():
    m = build_model(ModelConfig(arch="vgg11", num_classes=5))
    names = named_layers(m)
    assert [n for n in names if n.startswith("conv")] == [f"conv{i}" for i in range(1, 9)]
    assert names["out"].out_features == 5
    assert m.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"arch": "resnet"}, "arch must be one of"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"kernel_size": 4}, "odd"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_model_options_raise_with_the_value(kw, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kw)


@pytest.mark.parametrize(
    "shape,out",
    [
        ((4, 3, 128, 128), 20),  # the default: windows of 6 and 7 that overlap
        ((2, 3, 37, 53), (7, 11)),  # non-square, non-divisible
        ((2, 5, 9, 6), 13),  # output larger than the input: windows repeat
        ((3, 1, 16, 20), (None, 3)),  # None keeps that side
        ((2, 8, 24, 24), 24),  # identity
        ((4, 17, 17), 5),  # unbatched (C, H, W)
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_grid_pool_equals_torchs_adaptive_pool_with_gradients(shape, out, channels_last):
    from dsc.nn.model import GridAvgPool2d

    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref, x_ours = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref, ours = torch.nn.AdaptiveAvgPool2d(out)(x_ref), GridAvgPool2d(out)(x_ours)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    (ref * g).sum().backward()
    (ours * g).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
