"""Neural collapse: known answers and a direct NumPy computation of the definitions."""

import numpy as np
import pytest

from dsc.core.collapse import KEYS, neural_collapse


def _reference(h, y, W, b):
    """The definitions, written out with explicit (d, d) matrices."""
    classes = np.unique(y)
    C, n = len(classes), len(h)
    mu_g = h.mean(axis=0)
    mu = np.stack([h[y == c].mean(axis=0) for c in classes])
    dev = h - mu[np.searchsorted(classes, y)]
    sw = dev.T @ dev / n
    M = mu - mu_g
    sb = M.T @ M / C
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / C
    norms = np.linalg.norm(M, axis=1)
    cos = [M[i] @ M[j] / (norms[i] * norms[j]) for i in range(C) for j in range(C) if i != j]
    nc3 = np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
    dist = ((h[:, None] - mu[None]) ** 2).sum(-1)
    nc4 = np.mean(np.argmax(h @ W.T + b, axis=1) != np.argmin(dist, axis=1))
    return {
        "nc1": nc1,
        "nc2_equinorm": np.std(norms) / np.mean(norms),
        "nc2_equiangle": np.mean(np.abs(np.array(cos) + 1 / (C - 1))),
        "nc3": nc3,
        "nc4": nc4,
    }


def test_matches_direct_computation_on_unbalanced_labels():
    rng = np.random.default_rng(0)
    y = rng.choice([-3, 2, 5, 11], size=90, p=[0.1, 0.2, 0.3, 0.4])
    h = rng.standard_normal((90, 12)) + 0.8 * (y[:, None] % 4)
    W, b = rng.standard_normal((4, 12)), rng.standard_normal(4)
    got, want = neural_collapse(h, y, W, b), _reference(h, y, W, b)
    assert list(got) == list(KEYS)
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    assert all(isinstance(v, float) for v in got.values())


def test_simplex_etf_and_collapsed_features():
    C, d = 5, 9
    rng = np.random.default_rng(1)
    etf = (np.eye(C) - 1 / C) @ np.linalg.qr(rng.standard_normal((d, C)))[0].T * 3.0  # (C, d), rows sum to 0
    y = np.repeat(np.arange(C) * 10 + 1, 4)  # balanced: the global mean is the ETF's centre
    nc = neural_collapse(etf[np.searchsorted(np.arange(C) * 10 + 1, y)], y, weights=etf)
    assert nc["nc2_equinorm"] == pytest.approx(0, abs=1e-12)
    assert nc["nc2_equiangle"] == pytest.approx(0, abs=1e-12)
    assert nc["nc1"] == pytest.approx(0, abs=1e-12)  # every feature on its class mean
    assert nc["nc3"] == pytest.approx(0, abs=1e-12) and nc["nc4"] == 0


def test_spread_features_have_positive_nc1_and_bias_defaults_to_zero():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 20)
    h = rng.standard_normal((60, 4)) + 3 * np.eye(3, 4)[y]
    W = rng.standard_normal((3, 4))
    assert neural_collapse(h, y)["nc1"] > 0
    assert neural_collapse(h, y, W)["nc4"] == neural_collapse(h, y, W, np.zeros(3))["nc4"]


@pytest.mark.parametrize(
    "h, y",
    [
        (np.ones((6, 3)), np.zeros(6)),  # one class
        (np.full((6, 3), np.nan), np.arange(6) % 2),  # NaN activations
        (np.ones((6, 3)), np.arange(6) % 2),
    ],
)  # coinciding means
def test_undefined_is_nan(h, y):
    nc = neural_collapse(h, y)
    assert np.isnan(nc["nc1"]) and np.isnan(nc["nc2_equiangle"]) and np.isnan(nc["nc3"]) and np.isnan(nc["nc4"])


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"expected \(C, d\) = \(2, 3\)"):
        neural_collapse(np.ones((4, 3)), np.arange(4) % 2, np.ones((3, 3)))
    with pytest.raises(ValueError, match="labels has 3"):
        neural_collapse(np.ones((4, 3)), np.arange(3))
