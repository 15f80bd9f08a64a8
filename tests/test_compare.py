"""dsc compare on synthetic runs in a temporary SQLite store (no training)."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import kill_at
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dsc.cli import main
from dsc.core.lld.batch import fit_curves
from dsc.errors import ConfigError, TrackingError
from dsc.jobs.compare import WRITTEN_BY_TAG, compare_job
from dsc.settings import CompareConfig

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 60
# Per run: learning rate and the planted (amplitude, centre, width) of each logistic.
PLANTED = {
    "0.01": [(0.40, 14.0, 1.5), (0.35, 38.0, 3.0)],
    "0.02": [(0.45, 18.0, 1.2), (0.30, 42.0, 3.5)],
    "0.05": [(0.35, 12.0, 2.0), (0.40, 35.0, 2.5)],
    "0.1": [(0.40, 20.0, 1.0), (0.35, 45.0, 4.0)],
}


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory):
    """An initialised, empty tracking database: MLflow's migrations take seconds per store."""
    folder = tmp_path_factory.mktemp("template-store")
    with contextlib.chdir(folder):  # the Default experiment's artifact root is made from the cwd
        MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def db(empty_db, store):
    """``store``, started from a copy of ``empty_db``."""
    shutil.copy(empty_db, store.removeprefix("sqlite:///"))
    return store


def curve(components, seed=0, noise=0.005, epochs=EPOCHS):
    """(epochs, 0.2 + sum of planted logistics + noise), shape (epochs,)."""
    t = np.arange(float(epochs))
    y = 0.2 + sum(a / (1 + np.exp(-(t - c) / w)) for a, c, w in components)
    return t, y + np.random.default_rng(seed).normal(0.0, noise, t.size)


def make_run(experiment, values, lr="0.01", status="FINISHED", kind="train", metric="acc/val", params=None):
    """A run with ``values`` logged as ``metric`` at step = epoch; returns its id."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run(tags={"dsc.kind": kind}) as run:
        mlflow.log_params({"lr": lr, **(params or {})})
        stamp = int(time.time() * 1000)
        MlflowClient().log_batch(
            run.info.run_id, metrics=[Metric(metric, float(v), stamp, step) for step, v in enumerate(values)]
        )
    if status != "FINISHED":
        MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


def planted_runs(experiment="sweep"):
    return {lr: make_run(experiment, curve(comps, seed=i)[1], lr) for i, (lr, comps) in enumerate(PLANTED.items())}


def artifact(run_id, name):
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/lld/{name}")


def table(run_id):
    """lld/table.json as a list of row dicts."""
    split = artifact(run_id, "table.json")
    return [dict(zip(split["columns"], row)) for row in split["data"]]


def compared(run_id):
    return artifact(run_id, "runs.json")["compared"]


def compare(**kw):
    return compare_job(CompareConfig(**{"jobs": 1, **kw}), warn=lambda line: None)


@pytest.mark.slow
def test_planted_two_components_recovered(db):
    ids = planted_runs()
    cid = compare(experiments=("sweep",), jobs=2)
    run = MlflowClient().get_run(cid)
    assert run.info.status == "FINISHED" and run.data.tags["dsc.kind"] == "compare"
    assert run.data.params["metric"] == "acc/val" and run.data.params["max_components"] == "3"
    assert run.data.metrics["lld/mean_r2_2"] > 0.99 and run.data.metrics["lld/n_runs"] == 4
    names = {a.path for a in MlflowClient().list_artifacts(cid, "lld")}
    assert names == {
        f"lld/{n}"
        for n in (
            "table.csv",
            "table.json",
            "runs.json",
            "classes.json",
            "overlay.png",
            "centers_widths.png",
            "variance_explained.png",
        )
    }
    rows = table(cid)
    assert len(rows) == 4 * 3 and sorted(compared(cid)) == sorted(ids.values())
    for lr, rid in ids.items():
        best = [r for r in rows if r["run_id"] == rid and r["chosen"]]
        assert len(best) == 1 and best[0]["n_components"] == 2 and best[0]["param.lr"] == lr
        for k, (_, centre, _) in enumerate(PLANTED[lr], start=1):
            assert abs(best[0][f"center_{k}"] - centre) < 1.0
        source = MlflowClient().get_run(rid).data
        assert source.metrics["lld/n_components"] == 2 and source.metrics["lld/r2_2"] > 0.99
        assert abs(source.metrics["lld/center_1"] - PLANTED[lr][0][1]) < 1.0
        assert "lld/center_3" not in source.metrics
    with open(mlflow.artifacts.download_artifacts(run_id=cid, artifact_path="lld/table.csv")) as fh:
        assert len(fh.readlines()) == 1 + 4 * 3


@pytest.mark.slow
def test_a_comparison_killed_halfway_is_not_taken_as_complete_and_a_rerun_is_consistent(db):
    """SIGKILL after the first run's write-back: the comparison stays RUNNING, and the one run
    written to names it; a second comparison leaves every run's lld/* its own, naming it."""
    ids = planted_runs()
    kill_at("compare-write-back", ["compare", "--experiment", "sweep", "--jobs", "1", "--max-components", "2"])
    client = MlflowClient()
    (killed,) = client.search_runs(
        [client.get_experiment_by_name("sweep").experiment_id], "tags.`dsc.kind` = 'compare'"
    )
    assert killed.info.status == "RUNNING"
    tags = [client.get_run(rid).data.tags.get(WRITTEN_BY_TAG) for rid in ids.values()]
    assert tags == [killed.info.run_id, None, None, None]  # written first: the earliest run
    assert "lld/n_components" in client.get_run(ids["0.01"]).data.metrics
    cid = compare(experiments=("sweep",), max_components=2)
    assert client.get_run(cid).info.status == "FINISHED"
    rows = table(cid)
    for rid in ids.values():
        run = client.get_run(rid)
        assert run.data.tags[WRITTEN_BY_TAG] == cid
        (best,) = [r for r in rows if r["run_id"] == rid and r["chosen"]]
        assert run.data.metrics["lld/n_components"] == best["n_components"] == 2
        for r in (r for r in rows if r["run_id"] == rid):
            assert run.data.metrics[f"lld/r2_{r['n_components']}"] == pytest.approx(r["r2"])
        for k in (1, 2):
            assert run.data.metrics[f"lld/center_{k}"] == pytest.approx(best[f"center_{k}"])
    points = client.get_metric_history(ids["0.01"], "lld/n_components")
    assert [m.value for m in points] == [2, 2]  # the killed comparison's point, then this one's (shown)


def test_selection_by_experiment_filter_and_run_ids(db):
    ids = planted_runs("sweep")
    other = make_run("other", curve(PLANTED["0.01"])[1], lr="0.01")
    assert set(compared(compare(experiments=("other",), max_components=1))) == {other}
    by_filter = compare(filter_string="params.lr = '0.01'", max_components=1)
    assert set(compared(by_filter)) == {ids["0.01"], other}
    both = compare(experiments=("sweep",), filter_string="params.lr = '0.01'", max_components=1)
    assert compared(both) == [ids["0.01"]]
    named = compare(run_ids=(ids["0.05"], other), max_components=1)
    assert compared(named) == [ids["0.05"], other]


def test_search_skips_failed_and_metricless_runs_with_a_warning(db):
    ids = planted_runs("sweep")
    failed = make_run("sweep", curve(PLANTED["0.01"])[1], status="FAILED")
    no_metric = make_run("sweep", curve(PLANTED["0.01"])[1], metric="acc/train")
    compare_run = make_run("sweep", curve(PLANTED["0.01"])[1], kind="compare")
    lines = []
    cid = compare_job(CompareConfig(experiments=("sweep",), max_components=1, jobs=1), warn=lines.append)
    assert sorted(compared(cid)) == sorted(ids.values())
    assert compare_run not in artifact(cid, "runs.json")["skipped"]
    assert len(lines) == 1 and f"{failed} (FAILED)" in lines[0]
    assert f"{no_metric} (no metric 'acc/val')" in lines[0]


@pytest.mark.parametrize(
    "status, kind, metric, words",
    [
        ("FAILED", "train", "acc/val", "is FAILED, not FINISHED"),
        ("FINISHED", "train", "loss/val", "has no metric 'acc/val' (it has: loss/val)"),
        ("FINISHED", "compare", "acc/val", "is a 'compare' run"),
    ],
)
def test_named_run_that_does_not_qualify_is_an_error(db, status, kind, metric, words):
    bad = make_run("sweep", curve(PLANTED["0.01"])[1], status=status, kind=kind, metric=metric)
    with pytest.raises(TrackingError, match=re.escape(f"run {bad} {words}")):
        compare(run_ids=(bad,))
    assert not mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string="tags.`dsc.kind` = 'compare' and status = 'FAILED'",
    )


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "error: no runs to compare: no FINISHED run with metric 'acc/val' in any experiment"),
        (["--experiment", "nope"], "error: no experiment named 'nope'"),
        (["--run-id", "0123abcd"], "error: no run with id '0123abcd'"),
        (["--filter", "params.lr === 1"], "error: invalid --filter 'params.lr === 1'"),
    ],
)
def test_cli_bad_selection_is_one_error_line(db, args, words):
    res = CliRunner().invoke(main, ["compare", *args])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith(words) and res.stderr.count("\n") == 1, res.stderr
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.slow
def test_cli_compares_and_bad_options_are_refused(db):
    planted_runs()
    res = CliRunner().invoke(
        main, ["compare", "--experiment", "sweep", "--max-components", "2", "--jobs", "1", "--color-by", "nothing"]
    )
    assert res.exit_code == 0, res.output
    assert "warning: no compared run has the param 'nothing'" in res.stderr
    assert res.stdout.startswith("comparison run ") and res.stdout.endswith(" finished\n")
    res = CliRunner().invoke(main, ["compare", "--max-components", "9"])
    assert res.exit_code == 2 and "9 is not in the range 1<=x<=6" in res.stderr


def test_nan_values_too_few_points_and_flat_curves(db):
    _, y = curve(PLANTED["0.01"])
    y[[5, 20, 33]] = np.nan
    with_nan = make_run("sweep", y)
    short = make_run("sweep", y[10:17], lr="0.02")  # 7 points: N = 1 fits, N = 2, 3 cannot
    flat = make_run("sweep", np.full(EPOCHS, 0.2), lr="0.03")
    lines = []
    cid = compare_job(CompareConfig(run_ids=(with_nan, short, flat), jobs=1), warn=lines.append)
    assert lines == []  # a constant curve has no learning process: an answer, not a failed fit
    flat_metrics = MlflowClient().get_run(flat).data.metrics
    assert flat_metrics["lld/n_components"] == 0 and flat_metrics["lld/constant"] == pytest.approx(0.2)
    rows = {(r["run_id"], r["n_components"]): r for r in table(cid)}
    assert rows[with_nan, 2]["chosen"] and rows[with_nan, 2]["n_points"] == EPOCHS - 3
    assert rows[with_nan, 2]["r2"] > 0.99
    assert rows[short, 1]["success"] and rows[short, 1]["chosen"]
    assert not rows[short, 2]["success"] and "too few finite points" in rows[short, 2]["message"]
    assert rows[short, 3]["r2"] is None  # NaN in the JSON table
    source = MlflowClient().get_run(short).data.metrics
    assert source["lld/n_components"] == 1 and "lld/r2_2" not in source


def test_a_curve_without_a_learning_process_is_reported_as_such(db):
    at_chance = np.random.default_rng(0).binomial(576, 0.2, EPOCHS) / 576
    flat, rising = make_run("sweep", at_chance), make_run("sweep", curve(PLANTED["0.01"])[1], lr="0.02")
    lines = []
    cid = compare_job(CompareConfig(run_ids=(flat, rising), jobs=1), warn=lines.append)
    assert lines == []  # no process is an answer, not a failed fit
    rows = [r for r in table(cid) if r["run_id"] == flat]
    assert len(rows) == 3 and not any(r["chosen"] for r in rows)
    assert all(r["no_process"] and r["chosen_n"] == 0 for r in rows)
    assert "no learning process" in rows[0]["selection"]
    assert not any(r["no_process"] for r in table(cid) if r["run_id"] == rising)
    source = MlflowClient().get_run(flat).data.metrics
    assert source["lld/n_components"] == 0 and source["lld/constant"] == pytest.approx(at_chance.mean())
    assert "lld/center_1" not in source
    summary = MlflowClient().get_run(cid).data.metrics
    assert summary["lld/n_no_process"] == 1 and summary["lld/n_fitted"] == 2
    assert summary["lld/mean_n_components"] == 1.0  # (0 + 2) / 2


def test_parallel_and_serial_tables_are_identical(db):
    ids = planted_runs()
    serial = table(compare(run_ids=tuple(ids.values()), jobs=1))
    parallel = table(compare(run_ids=tuple(ids.values()), jobs=2))
    assert parallel == serial


def test_fit_curves_keeps_input_order():
    curves = [curve(comps, seed=i) for i, comps in enumerate(PLANTED.values())]
    fits = fit_curves(curves, max_components=2, jobs=2)
    for fit, comps in zip(fits, PLANTED.values()):
        assert abs(fit["fits"][1]["components"][0]["center"] - comps[0][1]) < 1.0


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"max_components": 0}, "max_components must be an integer in 1..6, got 0"),
        ({"jobs": -1}, "jobs must be an integer >= 0"),
        ({"metric": " "}, "metric must be a metric name"),
    ],
)
def test_config_checks(kw, words):
    with pytest.raises(ConfigError, match=words):
        CompareConfig(**kw)


def group_artifact(run_id, name):
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/groups/{name}")


def grouped_runs():
    """identities 2, 3, 5 x seeds 0-2 (one run for 5): the later processes planted later."""
    ids = {}
    for k, centre in (("2", 10.0), ("3", 16.0), ("5", 24.0)):
        for seed in range(1 if k == "5" else 3):
            comps = [(0.6, centre + seed, 1.5)]
            ids[k, seed] = make_run(
                "sweep", curve(comps, seed=seed)[1], params={"identities": k, "seed": str(seed), "optimizer": "adam"}
            )
    return ids


def test_group_by_summarises_seeds_and_tests_the_trend(db):
    ids = grouped_runs()
    lines = []
    cid = compare_job(
        CompareConfig(experiments=("sweep",), max_components=2, jobs=1, group_by=("identities",)), warn=lines.append
    )
    rows = {r["run_id"]: r for r in table(cid) if r["chosen"]}
    groups = {(r["group"], r["quantity"]): r for r in group_artifact(cid, "table.json")}
    for k in ("2", "3"):
        centres = np.array([rows[ids[k, s]]["center_1"] for s in range(3)])
        row = groups[f"identities={k}", "center_1"]
        half = 4.302653 * centres.std(ddof=1) / np.sqrt(3)  # t(0.975, 2) = 4.302653
        assert row["n"] == 3 and row["mean"] == pytest.approx(centres.mean())
        assert row["sd"] == pytest.approx(centres.std(ddof=1))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((centres.mean() - half, centres.mean() + half))
        assert row["interval"] == "t-based 95%"
        assert groups[f"identities={k}", "n_components"]["mean"] == 1.0
    single = groups["identities=5", "center_1"]
    assert single["n"] == 1 and single["ci_low"] is None and single["interval"] == "one run: no interval"
    assert any("identities=5 has one run" in line for line in lines)
    metrics = MlflowClient().get_run(cid).data.metrics
    assert metrics["trend/center_1/rho"] > 0.9 and metrics["trend/center_1/p"] < 0.05
    assert "trend/n_components/rho" not in metrics  # N is 1 everywhere: nothing to test
    names = {a.path for a in MlflowClient().list_artifacts(cid, "groups")}
    assert names == {
        f"groups/{n}"
        for n in (
            "table.csv",
            "table.json",
            "trend.csv",
            "trend.json",
            "agreement.json",
            "first_class.json",
            "curves.png",
            "n_components.png",
            "center_latent.png",
        )
    }
    assert MlflowClient().get_run(cid).data.params["group_by"] == "identities"


def test_group_by_a_text_param_logs_the_table_without_a_trend(db):
    grouped_runs()
    lines = []
    cid = compare_job(
        CompareConfig(experiments=("sweep",), max_components=1, jobs=1, group_by=("optimizer",)), warn=lines.append
    )
    trends = group_artifact(cid, "trend.json")
    assert all(t["rho"] is None and "not numeric ('adam')" in t["note"] for t in trends)
    assert any("not numeric ('adam'): no trend test; the group table" in line for line in lines)
    assert group_artifact(cid, "table.json")[0]["n_runs"] == 7
    assert not [m for m in MlflowClient().get_run(cid).data.metrics if m.startswith("trend/")]


def test_group_by_a_param_no_run_has_is_an_error(db):
    grouped_runs()
    with pytest.raises(TrackingError, match="--group-by 'dropout': no compared run has this param"):
        compare(experiments=("sweep",), group_by=("dropout",))


@pytest.mark.parametrize(
    "given, normalised",
    [(("identities", " seed "), ("identities", "seed")), (("identities,seed", ""), ("identities", "seed"))],
)
def test_group_by_is_normalised(given, normalised):
    assert CompareConfig(group_by=given).group_by == normalised


@pytest.mark.slow
def test_mlflow_run_entry_point(db, tmp_path):
    """`mlflow run . -e compare`: the empty default filter (passed as '') selects every run."""
    ids = planted_runs()
    env = {**os.environ, "MLFLOW_TRACKING_URI": db}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        "compare",
        "-P",
        "experiment=sweep",
        "-P",
        "max_components=2",
        "--env-manager",
        "local",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string="tags.`dsc.kind` = 'compare'"
    )
    assert run.info.status == "FINISHED" and run.data.params["experiment"] == "sweep"
    assert sorted(compared(run.info.run_id)) == sorted(ids.values())  # filter '' matched all
