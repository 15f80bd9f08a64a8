"""The mode evaluator scores a model with replaced weights exactly as the replaced model would."""

import copy

import numpy as np
import pytest
import torch

from dsc.nn.model import DenseVGG, named_layers
from dsc.nn.modes import ModeEvaluator, mode_sweep


@pytest.mark.parametrize("depth", [1, 3])
@torch.no_grad()
def test_mode_evaluator_matches_a_model_with_the_weights_replaced(depth):
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, depth=depth, pool_size=4, hidden=12).eval()
    x, y = torch.randn(20, 3, 8, 8), torch.randint(0, 3, (20,))
    ev = ModeEvaluator(model, x, y, batch=7)
    assert len(ev.stages) == depth + 4  # the staged path, not the whole-model fallback
    layers = named_layers(model)

    def replaced(weights):
        ref = copy.deepcopy(model)
        for n, w in weights.items():
            named_layers(ref)[n].weight.data = w
        return ref(x)

    for names in (["conv1"], ["fc2"], ["conv1", "fc1", "out"], list(layers), ["conv1"]):  # the last: memoised
        weights = {n: 0.5 * layers[n].weight.detach() for n in names}
        got = ev.logits({n: ((1, "half"), w) for n, w in weights.items()})
        torch.testing.assert_close(got, replaced(weights), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ev.logits({}), model(x), atol=1e-5, rtol=1e-5)
    w = layers["fc1"].weight.detach()
    a, b = w[:, :2].clone(), torch.eye(2, w.shape[1])  # a rank-2 weight given as its factors
    got = ev.logits({"fc1": ((2, "factors"), (a, b))})
    torch.testing.assert_close(got, replaced({"fc1": a @ b}), atol=1e-5, rtol=1e-5)


def test_mode_sweep_shares_one_k_axis_and_ends_at_the_full_model():
    torch.manual_seed(0)
    model = DenseVGG(num_classes=3, depth=1, pool_size=4, hidden=12).eval()
    x, y = torch.randn(24, 3, 8, 8), torch.randint(0, 3, (24,))
    sweep = mode_sweep(model, x, y, points=4, seed=0)
    assert sweep.k == tuple(sorted(set().union(*(r.k for r in sweep.layers.values()))))
    for name, r in sweep.layers.items():
        assert r.k[-1] == sweep.n_modes[name] == min(named_layers(model)[name].weight.shape[:2])
        assert r.leading.acc[-1] == r.random.acc[-1] == sweep.full_acc  # every mode kept: the full model
    summary = sweep.to_dict()
    assert summary["layers"]["fc1"]["n_modes"] == sweep.n_modes["fc1"]
    assert summary["all"]["fraction"][-1] == 1.0 and set(summary["all"]) >= {"k", "leading", "fit_error"}
    assert np.isfinite(summary["full"]["loss"])
