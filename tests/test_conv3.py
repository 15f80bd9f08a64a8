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


@pytest.mark.parametrize(
    "shape,channels_last",
    [
        ((2, 3, 7, 5), False),  # odd sizes
        ((1, 3, 1, 1), False),  # one pixel: only the centre tap
        ((2, 3, 1, 4), False),  # one row
        ((3, 3, 6, 1), False),  # one column
        ((2, 3, 5, 2), False),  # two columns: both are borders
        ((2, 3, 16, 16), True),  # NHWC input
        ((2, 3, 128, 128), False),  # the paper's size
    ],
)
@pytest.mark.slow
def test_values_and_gradients_match_torch_in_float64(shape, channels_last):
    x, w, b = _inputs(shape, torch.float64, channels_last=channels_last)
    gy = torch.randn(shape, dtype=torch.float64)
    ours = _grads(conv3.conv3x3_relu, x, w, b, gy)
    ref = _grads(_reference, x, w, b, gy)
    for name, a, r in zip(("y", "dx", "dw", "db"), ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-11, msg=name)
    assert ours[0].is_contiguous()


@pytest.mark.slow
def test_gradcheck_float64():
    x, w, b = _inputs((2, 3, 5, 6), torch.float64, seed=3)
    assert torch.autograd.gradcheck(conv3.conv3x3_relu, (x, w, b))


@pytest.mark.slow
def test_float32_matches_torch_to_rounding():
    x, w, b = _inputs((4, 3, 64, 64), torch.float32, seed=1)
    gy = torch.randn(4, 3, 64, 64)
    for name, a, r in zip(
        ("y", "dx", "dw", "db"), _grads(conv3.conv3x3_relu, x, w, b, gy), _grads(_reference, x, w, b, gy)
    ):
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


def _on_one_and_two_threads(run):
    """run() on one thread, then on two: both results."""
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(run())
    finally:
        torch.set_num_threads(before)
    return runs


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _inputs((6, 3, 32, 32), torch.float32, seed=4)
    gy = torch.randn(6, 3, 32, 32)
    for a, r in zip(*_on_one_and_two_threads(lambda: _grads(conv3.conv3x3_relu, x, w, b, gy))):
        assert torch.equal(a, r)


@pytest.mark.parametrize(
    "layer,device,dtype,ok",
    [
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
    ],
)
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


@pytest.mark.slow
def test_densevgg_trains_through_the_kernel_and_hooked_convs_run_torchs_layers():
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, hidden=32, dropout=0.0)
    model.conv_kernel = "dsc"  # at any size ("auto" leaves maps under 64x64 to torch)
    x = torch.randn(4, 3, 24, 24)
    fast = model.train()(x)
    assert "_Conv3x3ReLUStackBackward" in _backward_nodes(fast)  # all five layers in one node
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


@pytest.mark.parametrize(
    "shape,dtype", [((3, 3, 9, 7), torch.float32), ((2, 3, 5, 1), torch.float64), ((2, 3, 128, 128), torch.float32)]
)
@pytest.mark.slow
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
    assert torch.equal(
        conv3.conv3x3_relu_stack(x, weights[:1], biases[:1]), conv3.conv3x3_relu_forward(x, weights[0], biases[0])
    )


def _stack_reference(x, weights, biases):
    for w, b in zip(weights, biases):
        x = _reference(x, w, b)
    return x


def _stack_inputs(shape, dtype, depth=4, seed=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, dtype=dtype, generator=g).requires_grad_()
    weights = [(torch.randn(3, 3, 3, 3, dtype=dtype, generator=g) / 2).requires_grad_() for _ in range(depth)]
    biases = [(torch.randn(3, dtype=dtype, generator=g) / 3).requires_grad_() for _ in range(depth)]
    return x, weights, biases


def _stack_grads(fn, x, weights, biases, gy):
    y = fn(x, weights, biases)
    return (y, *torch.autograd.grad(y, (x, *weights, *biases), gy))


@pytest.mark.parametrize(
    "shape", [(2, 3, 7, 5), (1, 3, 1, 1), (2, 3, 1, 4), (3, 3, 6, 1), (2, 3, 5, 2), (2, 3, 128, 128)]
)
@pytest.mark.slow
def test_the_differentiable_stack_matches_torchs_layers_in_float64(shape):
    x, weights, biases = _stack_inputs(shape, torch.float64)
    gy = torch.randn(shape, dtype=torch.float64)
    ours = _stack_grads(conv3.conv3x3_relu_stack, x, weights, biases, gy)
    ref = _stack_grads(_stack_reference, x, weights, biases, gy)
    assert ours[0].grad_fn is not None and ours[0].is_contiguous()
    for i, (a, r) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f"output {i}")
    with torch.no_grad():  # its values are the forward-only stack's, bit for bit
        assert torch.equal(ours[0], conv3.conv3x3_relu_stack(x, weights, biases))


@pytest.mark.slow
def test_the_differentiable_stack_passes_gradcheck_and_skips_an_input_without_grad():
    x, weights, biases = _stack_inputs((2, 3, 5, 6), torch.float64, depth=3, seed=8)
    assert torch.autograd.gradcheck(lambda x, *p: conv3.conv3x3_relu_stack(x, p[:3], p[3:]), (x, *weights, *biases))
    y = conv3.conv3x3_relu_stack(x.detach(), weights, biases)  # an input image: no gradient wanted
    grads = torch.autograd.grad(y.sum(), weights + biases)
    ref = torch.autograd.grad(_stack_reference(x.detach(), weights, biases).sum(), weights + biases)
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_the_differentiable_stack_in_float32_is_deterministic_across_thread_counts():
    x, weights, biases = _stack_inputs((6, 3, 40, 33), torch.float32, depth=5, seed=9)
    gy = torch.randn(6, 3, 40, 33)
    runs = _on_one_and_two_threads(lambda: _stack_grads(conv3.conv3x3_relu_stack, x, weights, biases, gy))
    for a, r in zip(*runs):
        assert torch.equal(a, r)
    for a, r in zip(runs[0], _stack_grads(_stack_reference, x, weights, biases, gy)):
        a, r = a.detach(), r.detach()  # five layers of float32 rounding, summed differently
        assert float((a - r).abs().max()) <= 1e-4 * float(r.abs().max())


@pytest.mark.parametrize(
    "shape,pool",
    [
        ((2, 3, 128, 128), (20, 20)),
        ((2, 3, 13, 7), (4, 3)),
        ((1, 3, 5, 6), (7, 9)),
        ((2, 3, 9, 9), (1, 1)),
        ((1, 3, 6, 4), (6, 4)),
    ],
)
@pytest.mark.slow
def test_the_pooled_stack_matches_torchs_adaptive_pooling_in_float64(shape, pool):
    x, weights, biases = _stack_inputs(shape, torch.float64, depth=3, seed=10)
    gp = torch.randn(shape[0], 3, *pool, dtype=torch.float64)

    def reference(x, weights, biases):
        return nn.functional.adaptive_avg_pool2d(_stack_reference(x, weights, biases), pool)

    ours = _stack_grads(lambda *a: conv3.conv3x3_relu_stack(*a, pool=pool), x, weights, biases, gp)
    ref = _stack_grads(reference, x, weights, biases, gp)
    assert ours[0].shape == (shape[0], 3, *pool)
    for i, (a, r) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=f"output {i}")
    with torch.no_grad():
        torch.testing.assert_close(
            conv3.conv3x3_relu_stack(x, weights, biases, pool=pool), ref[0], rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("taps", [(4, 4), (9, 7), (2, 5)])
def test_the_stack_taps_every_layers_map_pooled(taps):
    x, weights, biases = _stack_inputs((3, 3, 9, 7), torch.float64, depth=3, seed=11)
    with torch.no_grad():
        out, tapped = conv3.conv3x3_relu_stack(x, weights, biases, pool=(3, 2), taps=taps)
        assert tapped.shape == (3, 3, 3, *taps)
        h = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = _reference(h, w, b)
            torch.testing.assert_close(tapped[:, i], nn.functional.adaptive_avg_pool2d(h, taps), rtol=1e-12, atol=1e-12)
        assert torch.equal(out, conv3.conv3x3_relu_stack(x, weights, biases, pool=(3, 2)))
        whole = conv3.conv3x3_relu_stack(x, weights, biases, taps=(9, 7))[1]  # taps as wide as the maps: the maps
        assert torch.equal(whole[:, -1], conv3.conv3x3_relu_stack(x, weights, biases))
    with pytest.raises(ValueError, match="without gradients"):
        conv3.conv3x3_relu_stack(x, weights, biases, taps=taps)


def test_a_grey_image_expanded_to_three_channels_is_read_without_the_copy():
    """A channel-stride-0 view (grey images replicated) gives what its materialised copy gives."""
    x, weights, biases = _stack_inputs((3, 1, 11, 9), torch.float32, depth=3, seed=12)
    view, copy = x.detach().expand(-1, 3, -1, -1), x.detach().expand(-1, 3, -1, -1).contiguous()
    assert view.stride(1) == 0
    with torch.no_grad():
        for pool in (None, (4, 3)):
            assert torch.equal(
                conv3.conv3x3_relu_stack(view, weights, biases, pool=pool),
                conv3.conv3x3_relu_stack(copy, weights, biases, pool=pool),
            )
    gp = torch.randn(3, 3, 4, 3)
    a, b = (
        (y := conv3.conv3x3_relu_stack(t, weights, biases, pool=(4, 3)), *torch.autograd.grad(y, weights + biases, gp))
        for t in (view, copy)
    )
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # values, weight and bias gradients
    with pytest.raises(ValueError, match="3 channels"):
        conv3.conv3x3_relu_stack(x.detach(), weights, biases)


def test_pool_windows_are_adaptive_poolings():
    for size, out in [(128, 20), (7, 3), (5, 9), (1, 1), (10, 10)]:
        start, end, first, last = conv3.pool_windows(size, out)
        x = torch.zeros(1, 1, 1, size, dtype=torch.float64)
        for i in range(out):  # a window's pixels are exactly those the pooled cell averages
            probe = x.clone()
            probe[..., start[i] : end[i]] = 1.0
            assert float(nn.functional.adaptive_avg_pool2d(probe, (1, out))[0, 0, 0, i]) == 1.0
            outside = x.clone()
            outside[..., : start[i]] = 1.0
            outside[..., end[i] :] = 1.0
            assert float(nn.functional.adaptive_avg_pool2d(outside, (1, out))[0, 0, 0, i]) == 0.0
        for p in range(size):
            assert [i for i in range(out) if start[i] <= p < end[i]] == list(range(first[p], last[p]))


def _counting(monkeypatch, name: str) -> list[int]:
    """Counts the calls to ``conv3.<name>`` (which DenseVGG looks up at each pass)."""
    calls = []
    kernel = getattr(conv3, name)
    monkeypatch.setattr(conv3, name, lambda *a, **k: calls.append(1) or kernel(*a, **k))
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
