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


def test_forward_only_path_equals_the_differentiable_one_bit_for_bit():
    x, w, b = _inputs((3, 3, 20, 17), torch.float32, seed=5, channels_last=True)
    fast = conv3.conv3x3_relu_forward(x, w, b)
    assert fast.grad_fn is None and fast.is_contiguous()
    assert torch.equal(fast, conv3.conv3x3_relu(x, w, b))


def test_densevgg_trains_through_the_kernel_and_hooked_convs_run_torchs_layers():
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
    seen = []  # eval mode with gradients, and training with hooks on the layers, run torch's layers
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


@pytest.mark.parametrize("shape,dtype", [((3, 3, 9, 7), torch.float32), ((2, 3, 5, 1), torch.float64),
                                         ((2, 3, 128, 128), torch.float32)])
def test_the_layer_stack_equals_one_call_per_layer_bit_for_bit(shape, dtype):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(*shape, dtype=dtype, generator=g)
    weights = [torch.randn(3, 3, 3, 3, dtype=dtype, generator=g) / 2 for _ in range(4)]
    biases = [torch.randn(3, dtype=dtype, generator=g) / 3 for _ in range(4)]
    y = x
    for w, b in zip(weights, biases):
        y = conv3.conv3x3_relu_forward(y, w, b)
    stacked = conv3.conv3x3_relu_stack(x, weights, biases)
    assert stacked.is_contiguous() and stacked.shape == x.shape
    assert torch.equal(stacked, y)
    assert torch.equal(conv3.conv3x3_relu_stack(x, weights[:1], biases[:1]),
                       conv3.conv3x3_relu_forward(x, weights[0], biases[0]))


def _counting(monkeypatch, name: str) -> list[int]:
    """Counts the calls to ``conv3.<name>`` (which DenseVGG looks up at each pass)."""
    calls = []
    kernel = getattr(conv3, name)
    monkeypatch.setattr(conv3, name, lambda *a: calls.append(1) or kernel(*a))
    return calls


@pytest.mark.parametrize("channels_last", [False, True])
def test_evaluation_runs_the_kernel_and_agrees_with_torchs_layers(monkeypatch, channels_last):
    torch.manual_seed(0)
    model = DenseVGG(num_classes=4, hidden=32).eval()
    x = torch.randn(5, 3, 24, 24)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    calls = _counting(monkeypatch, "conv3x3_relu_stack")
    with torch.no_grad():
        model.conv_kernel = "torch"
        ref = model(x)
        assert calls == []
        model.conv_kernel = "dsc"
        ours = model(x)
    assert len(calls) == 1  # the whole conv stack in one call
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    loss = [float(nn.functional.cross_entropy(y, torch.arange(5) % 4)) for y in (ours, ref)]
    assert loss[0] == pytest.approx(loss[1], rel=1e-6)


def test_hooks_on_the_relus_see_the_kernels_rectified_maps(monkeypatch):
    torch.manual_seed(1)
    model = DenseVGG(num_classes=3, hidden=16).eval()
    model.conv_kernel = "dsc"
    x = torch.randn(2, 3, 12, 12)
    seen = {}

    def record(name):
        def hook(module, inputs, out):
            seen[name] = (inputs[0].clone(), out.clone())
        return hook

    for name in ("relu1", "relu4"):
        getattr(model.features, name).register_forward_hook(record(name))
    calls = _counting(monkeypatch, "conv3x3_relu_forward")
    with torch.no_grad():
        model(x)
        c1 = torch.relu(model.features.conv1(x))
        c4 = model.features[:8](x)
    assert len(calls) == 5  # hooked ReLUs need each layer's map: one call per layer
    for name, ref in (("relu1", c1), ("relu4", c4)):
        inp, out = seen[name]
        assert torch.equal(inp, out) and out.min() >= 0  # in place, as torch's ReLU: input is output
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6, msg=name)


def test_a_traced_model_keeps_torchs_layers():
    torch.manual_seed(2)
    model = DenseVGG(num_classes=3, hidden=16).eval()
    model.conv_kernel = "dsc"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        program = torch.export.export(model, (x,))
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)
