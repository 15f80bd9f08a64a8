"""Figures are built from the data they are given: checked on the artists, rarely rendered."""

from __future__ import annotations

import ast
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image, ImageSequence

from dsc.core.modes import PowerLawFit
from dsc.core.spectra import PHASES
from dsc.figures import (
    animation,
    curves,
    inputs,
    lld,
    modes,
    pca,
    similarity,
    spectra,
    style,
)

FAMILIES = (curves, pca, inputs, similarity, spectra, modes, lld)  # one module per figure family
E, N, C = 6, 30, 3
EPOCHS = np.arange(E)
NAMES = ["face 1", "face 2", "face 3"]
RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(C), N // C)
PROJ = RNG.normal(size=(E, N, 2))
ACC = np.linspace(0.2, 0.9, E)
K = np.array([1.0, 2, 4, 8, 16, 32, 64])
FIT = {"breakpoint": 8.0, "slope_1": -0.5, "slope_2": -1.5, "intercept": -0.3}
COMPS = np.stack([0.4 / (1 + np.exp(-(EPOCHS - 2.0))), 0.3 / (1 + np.exp(-(EPOCHS - 4.0)))])
EVALS = RNG.chisquare(5, 200)
MP_X = np.linspace(0.1, 15, 50)
MP_D = np.exp(-MP_X / 5) / 5
PHASE_GRID = np.array([[PHASES[(i + e) % 3] for e in range(E)] for i in range(2)], dtype=object)


def _with_nan(x):
    x = np.array(x, dtype=float)
    x.flat[::3] = np.nan
    return x


def lines(ax):
    return [line for line in ax.get_lines() if line.get_label() and not line.get_label().startswith("_")]


def vlines_at(ax, x):
    xs = [np.asarray(line.get_xdata(), float) for line in ax.get_lines()]
    return [line for line, xd in zip(ax.get_lines(), xs) if xd.shape == (2,) and np.allclose(xd, x)]


# name -> (figure from typical data, expected number of axes, figure from data with NaN)
CASES = {
    "learning_curves": (
        lambda: curves.learning_curves(EPOCHS, {"acc/train": ACC, "acc/val": ACC, "loss/val": 1 - ACC}, 0.2),
        2,
        lambda: curves.learning_curves(EPOCHS, {"acc/val": _with_nan(ACC)}),
    ),
    "change_point": (
        lambda: curves.change_point(EPOCHS, ACC, 2),
        1,
        lambda: curves.change_point(EPOCHS, _with_nan(ACC), float("nan")),
    ),
    "pca_scatter": (
        lambda: pca.pca_scatter(PROJ[0], LABELS, NAMES, "t"),
        1,
        lambda: pca.pca_scatter(_with_nan(PROJ[0]), LABELS, NAMES, "t"),
    ),
    "pca_scatter_grid": (
        lambda: pca.pca_scatter_grid(PROJ, LABELS, NAMES, EPOCHS, max_panels=4),
        4,
        lambda: pca.pca_scatter_grid(_with_nan(PROJ), LABELS, NAMES, EPOCHS, accuracy=_with_nan(ACC)),
    ),
    "pca_timeline": (
        lambda: pca.pca_timeline(EPOCHS, RNG.random((E, 4)), ACC),
        2,
        lambda: pca.pca_timeline(EPOCHS, _with_nan(RNG.random((E, 4))), _with_nan(ACC), ratio=True),
    ),
    "emergence": (
        lambda: pca.emergence(EPOCHS, RNG.random((E, C)), NAMES, {0: 2, 1: 4, 2: None}, 0.25),
        1,
        lambda: pca.emergence(EPOCHS, _with_nan(RNG.random((E, C))), NAMES, {}, 0.25),
    ),
    "variance_maps": (
        lambda: inputs.variance_maps(RNG.random((C, 8, 6)), NAMES),
        C + 1,
        lambda: inputs.variance_maps(_with_nan(RNG.random((C, 8, 6))), NAMES, shared_scale=False),
    ),
    "top_inputs": (
        lambda: inputs.top_inputs(RNG.random((C, 4, 8, 6)), NAMES),
        C * 4,
        lambda: inputs.top_inputs(_with_nan(RNG.random((C, 2, 8, 6))), NAMES),
    ),
    "layer_similarity": (
        lambda: similarity.layer_similarity(EPOCHS, {"c1-c2": ACC, "c2-c3": ACC / 2}, epoch_cp=3),
        1,
        lambda: similarity.layer_similarity(EPOCHS, {"c1-c2": _with_nan(ACC)}, "CKA"),
    ),
    "cka_heatmap": (
        lambda: similarity.cka_heatmap(np.eye(3), ["a", "b", "c"]),
        2,
        lambda: similarity.cka_heatmap(_with_nan(np.eye(3)), ["a", "b", "c"]),
    ),
    "spectra_over_epochs": (
        lambda: spectra.spectra_over_epochs(EPOCHS, {"fc1": ACC * 5, "fc2": ACC * 3}),
        1,
        lambda: spectra.spectra_over_epochs(EPOCHS, {"fc1": _with_nan(ACC)}),
    ),
    "phase_heatmap": (
        lambda: spectra.phase_heatmap(EPOCHS, ["conv1", "fc1"], PHASE_GRID, PHASES),
        1,
        lambda: spectra.phase_heatmap(
            EPOCHS, ["conv1", "fc1"], np.where(PHASES[0] == PHASE_GRID, None, PHASE_GRID), PHASES
        ),
    ),
    "esd_grid": (
        lambda: spectra.esd_grid([("a", EVALS, MP_X, MP_D, 12.0), ("b", EVALS, None, None, None)]),
        2,
        lambda: spectra.esd_grid(
            [("a", _with_nan(EVALS), MP_X, _with_nan(MP_D), None), ("b", [np.nan], None, None, None)]
        ),
    ),
    "modes_curves": (
        lambda: modes.modes_curves(K, {"fc1/leading": 1 / K, "fc1/random": 2 / K, "all/leading": K / 64}),
        1,
        lambda: modes.modes_curves(K, {"fc1/leading": _with_nan(1 / K)}, "loss (nats)", logx=False),
    ),
    "power_law_fit": (
        lambda: modes.power_law_fit(K, np.exp(-0.3) * K**-0.5, FIT),
        1,
        lambda: modes.power_law_fit(_with_nan(K), np.r_[-1.0, K[1:]], dict(FIT, breakpoint=np.nan)),
    ),
    "lld_fit": (
        lambda: lld.lld_fit(EPOCHS, ACC, 0.2 + COMPS.sum(0), COMPS, 0.2, r2=0.99),
        1,
        lambda: lld.lld_fit(EPOCHS, _with_nan(ACC), np.full(E, np.nan), np.zeros((0, E)), np.nan, r2=np.nan),
    ),
    "lld_overlay": (
        lambda: lld.lld_overlay(
            [dict(label=i, t=EPOCHS, y=ACC, curve=ACC, component_curves=COMPS, constant=0.2) for i in range(4)], ncols=3
        ),
        4,
        lambda: lld.lld_overlay(
            [
                dict(
                    label="a",
                    t=EPOCHS,
                    y=_with_nan(ACC),
                    curve=_with_nan(ACC),
                    component_curves=COMPS,
                    constant=0.2,
                    r2=None,
                )
            ]
        ),
    ),
    "lld_centers_widths": (
        lambda: lld.lld_centers_widths([10, 20, 30], [1, 2, 3], ["1e-3", "1e-4", "1e-3"], "lr"),
        2,
        lambda: lld.lld_centers_widths([10, np.nan, 30], [1, 2, np.nan], ["adam", "sgd", "adam"], "opt"),
    ),
    "lld_variance_explained": (
        lambda: lld.lld_variance_explained(["a", "b"], [0.94, 0.93], [0.99, 0.98]),
        1,
        lambda: lld.lld_variance_explained(["a", "b"], [np.nan, 0.93], [np.nan, np.nan]),
    ),
}

EMPTY = {
    "learning_curves": lambda: curves.learning_curves([], {}),
    "change_point": lambda: curves.change_point([], [], None),
    "pca_scatter": lambda: pca.pca_scatter(np.zeros((0, 2)), [], NAMES),
    "pca_scatter_grid": lambda: pca.pca_scatter_grid(np.zeros((0, 0, 2)), [], NAMES, []),
    "pca_timeline": lambda: pca.pca_timeline([], [], None),
    "emergence": lambda: pca.emergence([], [], NAMES, {}, 0.25),
    "variance_maps": lambda: inputs.variance_maps(np.zeros((0, 4, 4)), []),
    "top_inputs": lambda: inputs.top_inputs(np.zeros((0, 0, 4, 4)), []),
    "layer_similarity": lambda: similarity.layer_similarity([], {}),
    "cka_heatmap": lambda: similarity.cka_heatmap(np.zeros((0, 0)), []),
    "spectra_over_epochs": lambda: spectra.spectra_over_epochs([], {}),
    "phase_heatmap": lambda: spectra.phase_heatmap([], [], [], PHASES),
    "esd_grid": lambda: spectra.esd_grid([]),
    "modes_curves": lambda: modes.modes_curves([], {}),
    "power_law_fit": lambda: modes.power_law_fit([], [], FIT),
    "lld_fit": lambda: lld.lld_fit([], [], [], np.zeros((0, 0)), 0.0),
    "lld_overlay": lambda: lld.lld_overlay([]),
    "lld_centers_widths": lambda: lld.lld_centers_widths([], [], [], "lr"),
    "lld_variance_explained": lambda: lld.lld_variance_explained([], [], []),
}


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.mark.parametrize("name", sorted(CASES))
def test_returns_figure_with_expected_axes(name):
    make, n_axes, _ = CASES[name]
    fig = make()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    assert fig.axes[0].get_title() or fig.get_suptitle()


@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_inputs_do_not_raise(name):
    assert isinstance(CASES[name][2](), Figure)


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_inputs_give_a_no_data_figure(name):
    fig = EMPTY[name]()
    assert isinstance(fig, Figure)
    assert "no data" in _texts(fig)


def test_every_public_figure_is_covered():
    public = {
        n
        for m in FAMILIES
        for n, f in vars(m).items()
        if callable(f) and getattr(f, "__module__", "") == m.__name__ and not n.startswith("_")
    }
    assert public - set(CASES) == {"limits"}
    assert set(EMPTY) == set(CASES)


def test_learning_curves_draw_each_series_and_chance():
    fig = CASES["learning_curves"][0]()
    acc_ax, loss_ax = fig.axes
    by_label = {line.get_label(): line for line in lines(acc_ax)}
    np.testing.assert_array_equal(by_label["val"].get_ydata(), ACC)
    np.testing.assert_array_equal(by_label["train"].get_xdata(), EPOCHS)
    assert by_label["chance (0.20)"].get_ydata()[0] == 0.2
    np.testing.assert_array_equal(lines(loss_ax)[0].get_ydata(), 1 - ACC)
    assert acc_ax.get_xlabel() == "epoch" and "accuracy" in acc_ax.get_ylabel()


def test_learning_curves_reject_series_of_the_wrong_length():
    with pytest.raises(ValueError, match="acc/val has 2 values but there are 6; pass one per epoch"):
        curves.learning_curves(EPOCHS, {"acc/val": [0.1, 0.2]})


def test_pca_scatter_offsets_are_the_points_of_each_class():
    fig = CASES["pca_scatter"][0]()
    collections = fig.axes[0].collections
    assert len(collections) == C
    for c, coll in enumerate(collections):
        np.testing.assert_array_equal(coll.get_offsets(), PROJ[0][c == LABELS])
        assert coll.get_label() == NAMES[c]


def test_pca_scatter_skips_nan_points():
    fig = CASES["pca_scatter"][2]()
    pts = _with_nan(PROJ[0])
    n_finite = np.isfinite(pts).all(axis=1).sum()
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == n_finite


def test_class_colour_is_the_same_in_every_figure():
    scatter = CASES["pca_scatter"][0]().axes[0].collections
    emerge = lines(CASES["emergence"][0]().axes[0])
    maps = CASES["variance_maps"][0]().axes
    for c in range(C):
        expected = to_rgba(style.class_color(c))
        assert tuple(scatter[c].get_facecolor()[0][:3]) == pytest.approx(expected[:3])
        assert to_rgba(emerge[c].get_color()) == pytest.approx(expected)
        assert to_rgba(maps[c].title.get_color()) == pytest.approx(expected)


def test_many_classes_cycle_colours_and_change_marker():
    labels = np.arange(13)
    fig = pca.pca_scatter(RNG.normal(size=(13, 2)), labels, [f"c{i}" for i in labels])
    colls = fig.axes[0].collections
    assert len(colls) == 13
    assert np.allclose(colls[11].get_facecolor()[0][:3], colls[1].get_facecolor()[0][:3])
    assert style.class_marker(11) != style.class_marker(1)


def test_pca_scatter_grid_shares_limits_and_keeps_first_and_last_epoch():
    fig = pca.pca_scatter_grid(PROJ, LABELS, NAMES, EPOCHS * 10, max_panels=3)
    assert [ax.get_title() for ax in fig.axes] == ["epoch 0", "epoch 20", "epoch 50"]
    assert len({ax.get_xlim() for ax in fig.axes}) == 1
    np.testing.assert_array_equal(fig.axes[-1].collections[0].get_offsets(), PROJ[-1][LABELS == 0])


def test_pca_gif_writes_one_frame_per_epoch(tmp_path):
    proj = RNG.normal(size=(4, 12, 2))
    path = animation.pca_gif(proj, np.repeat([0, 1, 2], 4), NAMES, [0, 5, 10, 15], tmp_path / "a.gif", dpi=30)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == 4


def test_pca_gif_needs_an_epoch(tmp_path):
    with pytest.raises(ValueError, match="E = 0 >= 1 epochs"):
        animation.pca_gif(np.zeros((0, 3, 2)), [0, 1, 2], NAMES, [], tmp_path / "a.gif", dpi=30)


def test_pca_timeline_lines_and_twin_accuracy():
    var = RNG.random((E, 4))
    fig = pca.pca_timeline(EPOCHS, var, ACC)
    ax, twin = fig.axes
    for i, line in enumerate(lines(ax)):
        np.testing.assert_array_equal(line.get_ydata(), var[:, i])
    np.testing.assert_array_equal(lines(twin)[0].get_ydata(), ACC)
    assert len(pca.pca_timeline(EPOCHS, var).axes) == 1


def test_emergence_marks_each_epoch_and_the_order():
    scores = RNG.random((E, C))
    fig = pca.emergence(EPOCHS, scores, NAMES, {0: 4, 1: 2, 2: None}, 0.25)
    ax = fig.axes[0]
    np.testing.assert_array_equal(lines(ax)[0].get_ydata(), scores[:, 0])
    assert vlines_at(ax, 4) and vlines_at(ax, 2)
    assert "face 2 → face 1" in ax.get_title()
    assert "face 3 (never)" in [line.get_label() for line in lines(ax)]


@pytest.mark.parametrize("epoch_cp", [2, 3.5])
def test_change_point_vertical_line_at_the_epoch(epoch_cp):
    ax = curves.change_point(EPOCHS, ACC, epoch_cp).axes[0]
    (line,) = vlines_at(ax, epoch_cp)
    assert f"{epoch_cp:g}" in line.get_label()
    np.testing.assert_array_equal(lines(ax)[0].get_ydata(), ACC)


def test_variance_maps_show_each_class_map():
    maps = RNG.random((C, 8, 6))
    fig = inputs.variance_maps(maps, NAMES)
    for c in range(C):
        (image,) = fig.axes[c].get_images()
        np.testing.assert_array_equal(image.get_array(), maps[c])
    assert len(inputs.variance_maps(maps, NAMES, shared_scale=False).axes) == 2 * C


def test_top_inputs_rows_are_classes():
    images = RNG.random((C, 2, 5, 4))
    fig = inputs.top_inputs(images, NAMES)
    np.testing.assert_array_equal(fig.axes[2 * 1 + 1].get_images()[0].get_array(), images[1, 1])
    assert fig.axes[2].get_ylabel() == NAMES[1]


def test_layer_similarity_series_and_change_point():
    ax = CASES["layer_similarity"][0]().axes[0]
    np.testing.assert_array_equal(lines(ax)[1].get_ydata(), ACC / 2)
    assert vlines_at(ax, 3)


def test_cka_heatmap_shows_the_matrix():
    m = np.array([[1.0, 0.3], [0.3, 1.0]])
    fig = similarity.cka_heatmap(m, ["a", "b"])
    np.testing.assert_array_equal(fig.axes[0].get_images()[0].get_array(), m)
    assert "0.30" in _texts(fig)


def test_spectra_over_epochs_shades_the_heavy_tailed_band():
    ax = CASES["spectra_over_epochs"][0]().axes[0]
    np.testing.assert_array_equal(lines(ax)[0].get_ydata(), ACC * 5)
    (band,) = ax.patches
    assert (band.get_y(), band.get_y() + band.get_height()) == (2.0, 6.0)


def test_phase_heatmap_codes_and_unknown_phases():
    grid = PHASE_GRID.copy()
    grid[1, 2] = "not a phase"
    fig = spectra.phase_heatmap(EPOCHS, ["conv1", "fc1"], grid, PHASES)
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    codes = np.ma.asarray(mesh.get_array()).reshape(2, E)
    assert codes[0, 0] == PHASES.index(PHASE_GRID[0, 0])
    assert codes.mask[1, 2] and codes.mask.sum() == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*PHASES, "unknown"]


@pytest.mark.parametrize("log", [True, False])
def test_esd_panel_is_a_density_with_mp_curve_and_edge(log):
    ax = spectra.esd_grid([("fc1", EVALS, MP_X, MP_D, 12.0)], log=log).axes[0]
    area = sum(p.get_width() * p.get_height() for p in ax.patches)
    assert area == pytest.approx(1.0)
    np.testing.assert_array_equal(lines(ax)[0].get_ydata(), MP_D)
    assert vlines_at(ax, 12.0)
    assert ax.get_xscale() == ("log" if log else "linear")


def test_modes_curves_random_modes_are_dashed_in_their_layer_colour():
    ax = CASES["modes_curves"][0]().axes[0]
    by_label = {line.get_label(): line for line in lines(ax)}
    leading, random = by_label["fc1/leading"], by_label["fc1/random"]
    assert leading.get_color() == random.get_color() != by_label["all/leading"].get_color()
    assert random.get_linestyle() == "--" and leading.get_linestyle() == "-"
    np.testing.assert_array_equal(random.get_ydata(), 2 / K)


@pytest.mark.parametrize(
    "fit",
    [
        FIT,
        PowerLawFit(**FIT, r2=1.0, single_slope=-1.0, single_r2=0.9, n_points=7, n_dropped=0, success=True, message=""),
    ],
)
def test_power_law_fit_follows_both_segments(fit):
    ax = modes.power_law_fit(K, np.exp(-0.3) * K**-0.5, fit).axes[0]
    fitted = next(line for line in lines(ax) if line.get_label().startswith("fit"))
    k, y = np.asarray(fitted.get_xdata()), np.asarray(fitted.get_ydata())
    assert k[0] == 1.0 and y[0] == pytest.approx(np.exp(-0.3 + -0.5 * np.log(1.0)))
    at_b = np.exp(-0.3 - 0.5 * np.log(8.0))
    assert y[-1] == pytest.approx(at_b * (64 / 8) ** -1.5)
    assert vlines_at(ax, 8.0)
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_lld_fit_draws_components_offset_by_the_constant():
    ax = CASES["lld_fit"][0]().axes[0]
    by_label = {line.get_label(): line for line in lines(ax)}
    np.testing.assert_allclose(by_label["component 2"].get_ydata(), COMPS[1] + 0.2)
    np.testing.assert_allclose(by_label["sum of logistics"].get_ydata(), 0.2 + COMPS.sum(0))
    assert "R² = 0.990" in ax.get_title()


def test_lld_centers_widths_numeric_gets_colour_bar_strings_a_legend():
    numeric = lld.lld_centers_widths([10, 20], [1, 2], ["0.1", "0.2"], "lr")
    np.testing.assert_array_equal(numeric.axes[0].collections[0].get_offsets(), [[10, 1], [20, 2]])
    labels = lld.lld_centers_widths([10, 20, 30], [1, 2, 3], ["adam", "sgd", "adam"], "opt")
    assert len(labels.axes) == 1
    assert [t.get_text() for t in labels.axes[0].get_legend().get_texts()] == ["adam", "sgd"]


def test_lld_variance_explained_bar_heights():
    ax = CASES["lld_variance_explained"][0]().axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.94, 0.93, 0.99, 0.98])


def test_save_writes_a_png_and_closes_the_figure(tmp_path):
    fig = CASES["change_point"][0]()
    path = style.save(fig, tmp_path / "sub" / "cp.png", dpi=40)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert fig.axes == []


def test_save_closes_pyplot_figures_too(tmp_path):
    from matplotlib import pyplot

    fig = pyplot.figure()
    style.save(fig, tmp_path / "p.png", dpi=20)
    assert not pyplot.fignum_exists(fig.number)


def test_to_base64_png_is_a_png():
    data = base64.b64decode(style.to_base64_png(CASES["cka_heatmap"][0](), dpi=30))
    assert Image.open(io.BytesIO(data)).format == "PNG"


@pytest.mark.parametrize("module", [style, animation, *FAMILIES], ids=lambda m: m.__name__)
def test_module_imports_no_pyplot_torch_mlflow_or_click_and_runs_nothing(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        f"{node.module}.{alias.name}" for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert not {n for n in imported if n.split(".")[0] in {"torch", "mlflow", "click"}}
    assert not {n for n in imported if "pyplot" in n}
    assert not [node for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
