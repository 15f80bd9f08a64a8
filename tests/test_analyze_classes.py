"""The class steps of analyze on fabricated snapshots: bad inputs give a reason, never a traceback."""

import numpy as np
import pytest

from dsc.core import snapshot, timeline
from dsc.errors import ConfigError
from dsc.jobs.analyze import classes as analyze_classes
from dsc.jobs.analyze import job as analyze
from dsc.jobs.analyze import steps as analyze_steps
from dsc.jobs.analyze.source import Source
from dsc.settings import AnalyzeConfig

CLASSES = ["a", "b", "c"]
E = 8


def snaps(labels, drop_fc1_at=None):
    rng = np.random.default_rng(0)
    by_epoch = {}
    for e in range(E):
        acts = {"fc1": rng.standard_normal((labels.size, 12)), "fc2": rng.standard_normal((labels.size, 12))}
        acts["fc2"][labels == 0, 0] += 8.0 * (e >= 3)
        if e == drop_fc1_at:
            del acts["fc1"]
        by_epoch[e] = snapshot.Snapshot(e, ["fc1", "fc2"], acts, {}, {}, [], np.eye(2))
    return snapshot.Snapshots(
        list(range(E)), labels, np.arange(labels.size), CLASSES, ["fc1", "fc2"], {"fc1": 0, "fc2": 0}, by_epoch
    )


def recall():
    t = np.arange(E)
    return {"a": (t, np.where(t >= 3, 0.95, 1 / 3)), "b": (t, np.full(E, 0.3))}


def run_step(s, tmp_path, curves=None):
    tl = timeline.pca_timeline(s.activations("fc2"), 4)
    cfg = AnalyzeConfig(n_components=4, probe_components=8, progress=False)
    return analyze_classes.class_emergence(
        recall() if curves is None else curves, s, tl, cfg, analyze_steps.FigureWriter(tmp_path)
    )


def test_a_layer_without_snapshots_is_skipped_with_its_reason(tmp_path):
    labels = np.repeat(np.arange(3), 10)
    res = run_step(snaps(labels, drop_fc1_at=5), tmp_path)
    assert res.skipped_layers == {"fc1": "no activations in the snapshots of epoch(s) [5]"}
    assert list(res.representation) == ["fc2"] and res.representation["fc2"].emergence["a"] == 3
    assert res.metrics["emergence/class_a"] == 3 and res.metrics["emergence_repr/fc2/class_a"] == 3
    assert "emergence/class_b" not in res.metrics and "never learned" in res.behaviour.notes["b"]
    assert res.behaviour.notes["c"] == "no validation recall curve"
    assert res.section.rows["layer fc1"].startswith("skipped: ")


def test_a_probe_missing_a_class_and_a_run_without_recall(tmp_path):
    labels = np.repeat([0, 1], 15)  # no probe image of class c
    res = run_step(snaps(labels), tmp_path, curves={})
    assert res.behaviour is None and not any(k.startswith("emergence/") for k in res.metrics)
    assert res.representation["fc2"].emergence["c"] is None
    assert np.isnan(res.representation["fc2"].scores[:, 2]).all()
    assert res.section.rows["c: probe"] == "fewer than 2 probe images" and "acc_class" in res.section.note
    step = analyze_classes.class_lld({}, CLASSES, labels, None, 3, analyze_steps.FigureWriter(tmp_path))
    assert "no acc_class/<name> metric" in step.summary()["skipped"] and step.metrics == {}


def test_a_run_with_one_class_is_a_one_line_error():
    one = snaps(np.zeros(10, dtype=int))
    one.classes = ["a"]

    class Info:
        run_id = "r1"

    src = Source(type("Run", (), {"info": Info})(), one, {}, {})
    with pytest.raises(ConfigError, match=r"has one class .a.: analyze compares classes"):
        analyze._validate(src, AnalyzeConfig())
