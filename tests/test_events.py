"""The event timeline's rules, and the collapse step on bad input: a reason or a NaN, never a traceback."""

import numpy as np
import pytest

from dsc.core import events, snapshot
from dsc.jobs.analyze import collapse as analyze_collapse
from dsc.jobs.analyze.plumbing import FigureWriter


def test_a_planted_rise_and_a_fall_after_a_transient_are_found():
    t = np.arange(40)
    rise = 1 / (1 + np.exp(-(t - 17.0) / 2))
    fall = 10.0 ** np.where(t < 5, t / 5, 1 - 3 / (1 + np.exp(-(t - 22.0) / 2)))  # grows, then falls 1000x
    found = events.series_events("rows", t, {"rise": rise}) + events.series_events(
        "rows", t, {"fall": fall}, falling=True, log=True
    )
    assert [ev.label for ev in found] == ["rise", "fall"]
    assert found[0].epoch == pytest.approx(17, abs=0.2) and found[1].epoch == pytest.approx(22, abs=0.5)
    assert events.series_events("rows", t, {"flat": np.ones(40)}) == []


def test_phase_changes_and_named_epochs():
    changes = events.phase_changes([0, 1, 2, 3], {"fc1": ["a", "a", "b", "b"], "fc2": ["a", "b", "a", "a"]})
    assert [(ev.label, ev.epoch) for ev in changes] == [("fc1 → b", 2.0), ("fc2 → b", 1.0), ("fc2 → a", 2.0)]
    named = events.epoch_events("emergence", {"x": 3, "y": None, "z": float("nan")})
    assert [(ev.label, ev.epoch) for ev in named] == [("x", 3.0)]
    assert [row["epoch"] for row in events.table(changes)] == [1.0, 2.0, 2.0]


def _snaps(labels, acts_of, layers=("fc1", "fc2", "out")):
    by_epoch = {
        e: snapshot.Snapshot(
            e, list(layers), acts_of(e), {}, {"num_spikes": np.full(len(layers), 1.0)}, [], np.eye(len(layers))
        )
        for e in range(4)
    }
    classes = [f"c{c}" for c in range(int(labels.max()) + 1)]
    return snapshot.Snapshots(
        list(range(4)), labels, np.arange(labels.size), classes, list(layers), dict.fromkeys(layers, 0), by_epoch
    )


@pytest.mark.slow
def test_collapse_step_reports_missing_layers_and_nan_activations(tmp_path):
    labels = np.repeat([0, 1], 6)
    rng = np.random.default_rng(0)

    def acts(e):
        fc2 = rng.standard_normal((12, 4)) + 3 * e * np.eye(2, 4)[labels]
        return {
            "fc2": fc2,
            "out": rng.standard_normal((12, 2)),
            "fc1": np.full((12, 4), np.nan) if e == 2 else rng.standard_normal((12, 4)),
        }

    s = _snaps(labels, acts)
    w = {3: (rng.standard_normal((2, 4)), np.zeros(2))}
    res = analyze_collapse.neural_collapse(s, w, "conv9", None, FigureWriter(tmp_path))
    assert res.skipped_layers["conv9"].startswith("not snapshotted; the snapshots hold fc1, fc2, out")
    assert np.isnan(res.values["fc1"]["nc1"][2]) and np.isfinite(res.values["fc1"]["nc1"][3])
    assert np.isnan(res.values["fc2"]["nc3"][:3]).all() and np.isfinite(res.values["fc2"]["nc3"][3])
    assert np.isnan(res.values["fc1"]["nc3"]).all()  # fc1 does not feed the classifier
    assert res.values["fc2"]["nc1"][3] < res.values["fc2"]["nc1"][1]
    logged = res.epoch_metrics()
    assert "nc/fc1/nc1" not in logged[2] and "nc/fc2/nc3" in logged[3] and "nc/fc2/nc3" not in logged[0]


def test_collapse_step_with_one_class_in_the_probe_is_nan(tmp_path):
    labels = np.zeros(8, dtype=int)
    s = _snaps(labels, lambda e: {"fc1": np.ones((8, 3)), "fc2": np.ones((8, 3)), "out": np.ones((8, 1))})
    res = analyze_collapse.neural_collapse(s, {}, "fc2", None, FigureWriter(tmp_path))
    assert all(np.isnan(v).all() for by_key in res.values.values() for v in by_key.values())
    assert res.epoch_metrics() == {e: {} for e in range(4)} and "NaN" in res.section.note


def test_halfway_epoch_interpolates_and_needs_a_move():
    t = np.arange(10)
    assert events.halfway_epoch(t, np.r_[np.zeros(5), np.ones(5)], falling=False) == pytest.approx(4.5)
    assert events.halfway_epoch(t, np.r_[np.ones(5), np.zeros(5)], falling=True) == pytest.approx(4.5)
    assert np.isnan(events.halfway_epoch(t, np.r_[np.ones(5), np.zeros(5)], falling=False))
    assert np.isnan(events.halfway_epoch(t[:4], np.arange(4.0), falling=False))
