"""Known answers for layer similarity: CKA invariances, the HSIC formula, Pearson correlation."""

from __future__ import annotations

import numpy as np
import pytest

from dsc.core import similarity


def _hsic_cka(X, Y):
    """CKA from the biased HSIC with linear kernels: tr(K H L H) / (n - 1)^2."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A, B):
        return np.trace(A @ H @ B @ H) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12))
    Y = X @ rng.standard_normal((12, 7)) + 0.5 * rng.standard_normal((40, 7))
    return X, Y


def _orthogonal(rng, p):
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q


@pytest.mark.parametrize(
    "transform",
    [
        lambda X, rng: X @ _orthogonal(rng, X.shape[1]),
        lambda X, rng: 7.5 * X,
        lambda X, rng: X + 3.0,  # a shift of every unit: removed by centring
    ],
    ids=["orthogonal", "scale", "shift"],
)
def test_invariances(xy, transform):
    X, Y = xy
    rng = np.random.default_rng(1)
    assert similarity.linear_cka(transform(X, rng), Y) == pytest.approx(similarity.linear_cka(X, Y), rel=1e-10)


def test_self_symmetric_and_hsic(xy):
    X, Y = xy
    assert similarity.linear_cka(X, X) == pytest.approx(1.0)
    assert similarity.linear_cka(X, Y) == pytest.approx(similarity.linear_cka(Y, X))
    assert similarity.linear_cka(X, Y) == pytest.approx(_hsic_cka(X, Y), rel=1e-10)
    assert 0 < similarity.linear_cka(X, Y) < 1


@pytest.mark.parametrize("n, p1, p2", [(30, 5, 8), (20, 300, 50), (10, 4, 400)])
def test_gram_and_feature_forms_agree(n, p1, p2):
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((n, p1)), rng.standard_normal((n, p2))
    gram = similarity._gram_cka(similarity._centred_gram(X), similarity._centred_gram(Y))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    feature = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert gram == pytest.approx(feature, rel=1e-10)
    assert similarity.linear_cka(X, Y) == pytest.approx(feature, rel=1e-10)


def test_float16_conv_maps():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((16, 3, 8, 8)).astype(np.float16)
    Y = (X.astype(np.float64) * 2).astype(np.float16)
    assert similarity.linear_cka(X, Y) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("constant", [0.0, 0.1, 5.0])
def test_constant_layer_is_nan(xy, constant):
    X, _ = xy
    assert np.isnan(similarity.linear_cka(X, np.full((X.shape[0], 6), constant)))
    assert np.isnan(similarity.pearson(X, np.full(X.shape, constant)))


def test_cka_matrix(xy):
    X, Y = xy
    rng = np.random.default_rng(4)
    acts = {
        "a": X,
        "b": Y,
        "c": rng.standard_normal((40, 2, 3, 3)),
        "flat": np.full((40, 4), 0.1),
    }
    names, cka = similarity.cka_matrix(acts)
    assert names == ["a", "b", "c", "flat"]
    assert cka.shape == (4, 4)
    core = cka[:3, :3]
    np.testing.assert_allclose(core, core.T)
    np.testing.assert_allclose(np.diag(core), 1.0)
    assert core[0, 1] == pytest.approx(similarity.linear_cka(X, Y))
    assert np.isnan(cka[3]).all() and np.isnan(cka[:, 3]).all()


def test_mismatched_rows_raise(xy):
    X, Y = xy
    with pytest.raises(ValueError, match="same probes"):
        similarity.linear_cka(X, Y[:-1])
    with pytest.raises(ValueError, match="same probes"):
        similarity.cka_matrix({"a": X, "b": Y[:-1]})


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_pearson_matches_corrcoef(dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 3, 5)).astype(dtype)
    b = (a + rng.standard_normal(a.shape)).astype(dtype)
    expected = np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1]
    assert similarity.pearson(a, b) == pytest.approx(expected, rel=1e-12)


def test_pearson_chunked(monkeypatch):
    monkeypatch.setattr(similarity, "_PEARSON_CHUNK", 7)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(100), rng.standard_normal(100)
    assert similarity.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)


def test_successive_correlation():
    rng = np.random.default_rng(7)
    conv1 = rng.standard_normal((6, 3, 4, 4))
    conv2 = conv1 + 0.1 * rng.standard_normal(conv1.shape)
    conv3 = rng.standard_normal(conv1.shape)
    acts = {"conv1": conv1, "conv2": conv2, "conv3": conv3, "fc": rng.standard_normal((6, 9))}
    out = similarity.successive_correlation(acts, ["conv1", "conv2", "conv3"])
    assert list(out) == ["conv1-conv2", "conv2-conv3"]
    assert out["conv1-conv2"] == pytest.approx(np.corrcoef(conv1.ravel(), conv2.ravel())[0, 1])
    assert out["conv1-conv2"] > 0.9 and abs(out["conv2-conv3"]) < 0.3
    with pytest.raises(ValueError, match="same shape"):
        similarity.successive_correlation(acts, ["conv3", "fc"])
    with pytest.raises(ValueError, match="no activations"):
        similarity.successive_correlation(acts, ["conv1", "conv9"])


def test_the_two_halves_give_the_pairwise_formula():
    """`unit_gram` + `cka_of_units` equal the Gram form <K, L> / (|K| |L|), pair by pair."""
    rng = np.random.default_rng(9)
    acts = [
        rng.standard_normal((30, 7)),
        np.maximum(rng.standard_normal((30, 2, 4, 4)), 0),
        np.full((30, 3), 2.0),
        rng.standard_normal((30, 50)).astype(np.float16),
    ]
    units = [similarity.unit_gram(a) for a in acts]
    assert units[2] is None  # constant over the probes
    table = similarity.cka_of_units(units)
    for i, a in enumerate(acts):
        for j, b in enumerate(acts):
            K, L = similarity._centred_gram(a.reshape(30, -1)), similarity._centred_gram(b.reshape(30, -1))
            expect = similarity._gram_cka(K, L)
            if np.isnan(expect):
                assert np.isnan(table[i, j])
            else:
                assert table[i, j] == pytest.approx(expect, rel=1e-12)
    np.testing.assert_array_equal(table, table.T)
    assert np.isnan(similarity.cka_of_units([None, None])).all()
