"""dsc.nn.conv3 (the CPU kernel for DenseVGG's 3->3 channel 3x3 convolutions) against torch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dsc.nn import conv3
from dsc.nn.model import DenseVGG


def _reference(x, w, b):
    return torch.relu(nn.functional.conv2d(x, w, b, padding=1))


def _grads(fn, x, w, b, gy):
    y = fn(x, w, b)
    return (y, *torch.autograd.grad(y, (x, w, b), gy))


def _inputs(shape, dtype, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, dtype=dtype, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 3, 3, 3, dtype=dtype, generator=g) / 3
    b = torch.randn(3, dtype=dtype, generator=g) / 3
    return x.requires_grad_(), w.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("shape,channels_last", [
    ((2, 3, 7, 5), False),  # odd sizes
    ((1, 3, 1, 1), False),  # one pixel: only the centre tap
    ((2, 3, 1, 4), False),  # one row
    ((3, 3, 6, 1), False),  # one column
    ((2, 3, 5, 2), False),  # two columns: both are borders
    ((2, 3, 16, 16), True),  # NHWC input
    ((2, 3, 128, 128), False),  # the paper's size
])
def test_values_and_gradients_match_torch_in_float64(shape, channels_last):
    x, w, b = _inputs(shape, torch.float64, channels_last=channels_last)
    gy = torch.randn(shape, dtype=torch.float64)
    ours = _grads(conv3.conv3x3_relu, x, w, b, gy)
    ref = _grads(_reference, x, w, b, gy)
    for name, a, r in zip(("y", "dx", "dw", "db"), ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-11, msg=name)
    assert ours[0].is_contiguous()


def test_gradcheck_float64():
    x, w, b = _inputs((2, 3, 5, 6), torch.float64, seed=3)
    assert torch.autograd.gradcheck(conv3.conv3x3_relu, (x, w, b))


def test_float32_matches_torch_to_rounding():
    x, w, b = _inputs((4, 3, 64, 64), torch.float32, seed=1)
    gy = torch.randn(4, 3, 64, 64)
    for name, a, r in zip(("y", "dx", "dw", "db"), _grads(conv3.conv3x3_relu, x, w, b, gy),
                          _grads(_reference, x, w, b, gy)):
        a, r = a.detach(), r.detach()
        scale = float(r.abs().max())
        assert float((a - r).abs().max()) <= 1e-5 * scale, name


def test_nan_and_inf_propagate_as_in_torch():
    x, w, b = _inputs((1, 3, 8, 8), torch.float32, seed=2)
    with torch.no_grad():
        x[0, 1, 3, 4] = float("nan")
        x[0, 2, 6, 1] = float("inf")
    ours, ref = conv3.conv3x3_relu(x, w, b), _reference(x, w, b)
    assert torch.equal(ours.isnan(), ref.isnan()) and ours.isnan().sum() > 0
    assert torch.equal(ours.isinf(), ref.isinf())


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _inputs((6, 3, 32, 32), torch.float32, seed=4)
    gy = torch.randn(6, 3, 32, 32)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(_grads(conv3.conv3x3_relu, x, w, b, gy))
    finally:
        torch.set_num_threads(before)
    for a, r in zip(*runs):
        assert torch.equal(a, r)


@pytest.mark.parametrize("layer,device,dtype,ok", [
    (nn.Conv2d(3, 3, 3, padding=1), "cpu", torch.float32, True),
    (nn.Conv2d(3, 3, 3, padding=1), "cpu", torch.float64, True),
    (nn.Conv2d(3, 3, 3, padding=1), "cpu", torch.float16, False),
    (nn.Conv2d(3, 3, 3, padding=1), "cuda", torch.float32, False),
    (nn.Conv2d(3, 4, 3, padding=1), "cpu", torch.float32, False),
    (nn.Conv2d(1, 3, 3, padding=1), "cpu", torch.float32, False),
    (nn.Conv2d(3, 3, 5, padding=2), "cpu", torch.float32, False),
    (nn.Conv2d(3, 3, 3, padding=1, bias=False), "cpu", torch.float32, False),
    (nn.Conv2d(3, 3, 3, padding=1, stride=2), "cpu", torch.float32, False),
    (nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), "cpu", torch.float32, False),
])
def test_supports_only_the_layer_it_computes(layer, device, dtype, ok):
    assert conv3.supports(layer.to(dtype), torch.device(device), dtype) is ok


def _backward_nodes(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def test_densevgg_trains_through_the_kernel_and_evaluates_through_torch():
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, hidden=32, dropout=0.0)
    model.conv_kernel = "dsc"  # at any size ("auto" leaves maps under 64x64 to torch)
    x = torch.randn(4, 3, 24, 24)
    fast = model.train()(x)
    assert "_Conv3x3ReLUBackward" in _backward_nodes(fast)
    assert "ConvolutionBackward0" not in _backward_nodes(fast)
    model.conv_kernel = "torch"
    slow = model(x)
    assert "ConvolutionBackward0" in _backward_nodes(slow)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    model.conv_kernel = "dsc"
    with torch.no_grad():
        assert model.eval()(x).grad_fn is None
    seen = []  # eval mode, and training with hooks on the layers, run torch's layers
    model.features.conv1.register_forward_hook(lambda m, i, o: seen.append(m.training))
    model.eval()(x)
    model.train()(x)
    assert seen == [False, True]
    assert not DenseVGG(filters=4).uses_conv3(torch.device("cpu"))


def test_auto_picks_the_kernel_by_map_size():
    model, cpu = DenseVGG(), torch.device("cpu")
    assert model.uses_conv3(cpu, torch.float32, 128 * 128) and model.uses_conv3(cpu, torch.float32, 64 * 64)
    assert not model.uses_conv3(cpu, torch.float32, 63 * 64)
    model.conv_kernel = "dsc"
    assert model.uses_conv3(cpu, torch.float32, 16 * 16)
    model.conv_kernel = "torch"
    assert not model.uses_conv3(cpu, torch.float32, 128 * 128)
    assert not DenseVGG().uses_conv3(torch.device("cuda"), torch.float32, 128 * 128)
