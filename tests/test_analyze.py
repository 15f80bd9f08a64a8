"""The analyze command: planted structure found, artifacts complete, bad runs refused in one line."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.cli import main
from dsc.core import snapshot
from dsc.core.jsonsafe import jsonable
from dsc.data.dataset import load_imageset, prepare
from dsc.jobs.analyze import images as analyze_images
from dsc.jobs.analyze import steps as analyze_steps
from dsc.jobs.analyze.source import RunImages, load_model, read_source
from dsc.jobs.break_ranks import log_break_ranks
from dsc.nn.model import build_model, named_layers
from dsc.settings import AnalyzeConfig, DataConfig, ModelConfig

LAST = 24  # epochs 0..24
SEPARATES = {0: 8, 1: 14}  # face1 leaves the others at epoch 8; face2 (and so face3) at 14
UNITS = {0: 3, 1: 7}  # the fc2 unit that carries each separation
ONSET = 10  # acc/val is flat at chance up to here, then rises linearly to epoch 16


def invoke(*args):
    return CliRunner().invoke(main, ["analyze", "--no-progress", *args], catch_exceptions=False)


def one_error(res) -> str:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def planted_fc2(labels, epoch, rng):
    acts = rng.standard_normal((len(labels), 16))
    for c, start in SEPARATES.items():
        if epoch >= start:
            acts[labels == c, UNITS[c]] += 10.0
    return acts.astype(np.float16)


def planted_recall(c, t, rng):
    """Validation recall of class c: at chance (1/3) until it separates in fc2, then 0.97."""
    start = SEPARATES.get(c, max(SEPARATES.values()))  # the third class is left alone with the second
    return np.where(t >= start, 0.97, 1 / 3) + rng.normal(0, 0.01, t.size)


def fit_briefly(model, data, steps=150):
    """A few Adam steps on the training split, enough for the tiny network to tell the classes apart."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = data.train_idx[torch.randint(len(data.train_idx), (64,), generator=gen).numpy()]
        x, y = data.batch(idx, torch.device("cpu"))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def make_run(tmp_path):
    """A FINISHED run laid out as `dsc train` leaves it, with a planted emergence and transition.

    The data are 3 synthetic identities at 16 x 16; the probe set is the 5% validation split.
    """
    data_cfg = DataConfig(image_size=16, identities=3, val_fraction=0.05)
    ims = load_imageset(data_cfg)
    data = prepare(ims, data_cfg)
    probe, labels = data.val_idx, ims.labels[data.val_idx]
    model_cfg = ModelConfig(num_classes=3, depth=2, pool_size=4, hidden=16)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    w0 = {n: m.weight.detach().numpy().copy() for n, m in named_layers(model).items()}
    fit_briefly(model, data)  # the final weights separate the classes: the modes step has errors to fit
    rng = np.random.default_rng(1)
    t = np.arange(LAST + 1)
    acc = 1 / 3 + np.clip((t - ONSET) / 6, 0, 1) * (0.95 - 1 / 3) + rng.normal(0, 0.004, t.size)
    snap_dir, ckpt_dir = tmp_path / "snaps", tmp_path / "ckpt"
    snap_dir.mkdir()
    ckpt_dir.mkdir()
    grids = {n: 0 for n in w0}
    snapshot.write_probe(snap_dir, labels, probe, ims.classes, list(w0), grids)
    with mlflow.start_run(tags={"dsc.kind": "train"}) as run:
        mlflow.log_params({"data_digest": ims.digest(), "epochs": LAST})
        curves = {
            "acc/val": acc,
            "acc/train": acc,
            "loss/val": 1.1 - acc,
            "loss/train": 1.1 - acc,
            **{f"acc_class/{name}": planted_recall(c, t, rng) for c, name in enumerate(ims.classes)},
        }
        MlflowClient().log_batch(
            run.info.run_id, [Metric(k, float(v[e]), 0, int(e)) for e in t for k, v in curves.items()]
        )
        for e in t:
            acts = {
                "conv1": rng.random((len(probe), 3, 2, 2)).astype(np.float16),
                "conv2": rng.random((len(probe), 3, 2, 2)).astype(np.float16),
                "fc1": rng.random((len(probe), 16)).astype(np.float16),
                "fc2": planted_fc2(labels, e, rng),
                "out": rng.random((len(probe), 3)).astype(np.float16),
            }
            weights = {n: w * (1 + 0.05 * e) for n, w in w0.items()}
            snapshot.write(snapshot.compute(int(e), acts, weights), snap_dir)
        mlflow.log_artifacts(str(snap_dir), "snapshots")
        torch.save(
            {
                "epoch": LAST,
                "model_state": model.state_dict(),
                "optimizer_state": {},
                "metrics": {},
                "model_config": model_cfg.to_dict(),
                "train_config": {},
                "data_config": data_cfg.to_dict(),
                "classes": list(ims.classes),
                "norm_mean": data.mean,
                "norm_std": data.std,
            },
            ckpt_dir / f"epoch_{LAST:04d}.pt",
        )
        mlflow.log_artifacts(str(ckpt_dir), "checkpoints")
    return run.info.run_id


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, cache_dir):
    """One SQLite store for this module's run-level tests (creating a store costs seconds)."""
    tmp = tmp_path_factory.mktemp("analyze")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DSC_CACHE_DIR", str(cache_dir))
        for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            mp.delenv(var, raising=False)
        yield tmp, uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def shared(shared_store):
    """The shared store, made current again (another module's store fixture may have moved it)."""
    mlflow.set_tracking_uri(shared_store[1])
    return shared_store[0]


@pytest.fixture(scope="module")
def planted(shared_store):
    """The planted run, analysed once; returns (run id, local copy of its analysis/)."""
    tmp, uri = shared_store
    mlflow.set_tracking_uri(uri)
    run_id = make_run(tmp)
    res = invoke("--run-id", run_id, "--esd-epochs", "0,12,24")
    assert res.exit_code == 0, res.output + res.stderr
    (tmp / "dl").mkdir()
    mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="analysis", dst_path=str(tmp / "dl"))
    return run_id, tmp / "dl" / "analysis"


@pytest.mark.slow
def test_planted_emergence_and_transition_are_logged(shared, planted):
    run_id, _ = planted
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert abs(m["emergence/class_face1"] - SEPARATES[0]) <= 1
    assert abs(m["emergence/class_face2"] - SEPARATES[1]) <= 1
    assert abs(m["emergence/class_face3"] - SEPARATES[1]) <= 1
    assert abs(m["transition_epoch"] - ONSET) <= 1
    assert [h.step for h in client.get_metric_history(run_id, "transition_epoch")] == [0]


@pytest.mark.slow
def test_break_ranks_are_the_summarys_breakpoints_and_recomputed_alike(shared, planted):
    """modes/<layer>/break_rank equals each fitted breakpoint of the summary; the job for runs
    without snapshots recomputes the same numbers from the final checkpoint."""
    run_id, out = planted
    summary = json.loads((out / "summary.json").read_text())["modes"]
    fits = {**{n: r["fit_error"] for n, r in summary["layers"].items()}, "all": summary["all"]["fit_error"]}
    expected = {f"modes/{n}/break_rank": f["breakpoint"] for n, f in fits.items() if f["success"]}
    assert expected, {n: f["message"] for n, f in fits.items()}
    assert all(
        1 <= k <= summary["layers"].get(m.split("/")[1], {"n_modes": 1e9})["n_modes"] for m, k in expected.items()
    )
    logged = {k: v for k, v in MlflowClient().get_run(run_id).data.metrics.items() if k.endswith("/break_rank")}
    assert logged == pytest.approx(expected, rel=1e-9)
    assert log_break_ranks([run_id])[run_id] == logged  # already there: left as it is
    assert log_break_ranks([run_id], skip_done=False)[run_id] == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_summary_and_report_are_complete(shared, planted):
    _, out = planted
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "pca",
        "emergence",
        "change_point",
        "inputs",
        "similarity",
        "spectra",
        "modes",
        "lld",
        "timings",
        "figures",
        "params",
        "final_metrics",
    ):
        assert key in summary, key
    lead = summary["inputs"]["leading_features"]
    assert lead["face1"]["unit"] == UNITS[0] and lead["face2"]["unit"] == UNITS[1]
    assert set(summary["lld"]["r2"]) == {"1", "2", "3"}
    assert summary["spectra"]["esd_epochs"] == [0, 12, 24]
    assert summary["similarity"]["by_distance_last"]["distance"] == [1, 2, 3, 4]
    assert summary["modes"]["layers"]["fc2"]["k"][-1] == 16
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == summary["figures"] and "pca.gif" in figures and len(figures) >= 20
    html = (out / "report.html").read_text()
    assert html.count("<img ") == len(figures)


@pytest.mark.slow
def test_order_collapse_and_the_timeline_first(shared, planted):
    run_id, out = planted
    client = MlflowClient()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["order"]["mode_strengths"]) == 2  # three classes: at most C - 1 modes
    assert set(summary["order"]["spearman"]) == {"spearman_saxe", "spearman_separability", "spearman_mode_time"}
    assert [h.step for h in client.get_metric_history(run_id, "nc/fc2/nc1")] == list(range(LAST + 1))
    assert [h.step for h in client.get_metric_history(run_id, "nc/fc2/nc4")] == [LAST]  # the one checkpoint
    assert not client.get_metric_history(run_id, "nc/fc1/nc3")  # fc1 does not feed the classifier
    assert summary["collapse"]["c_minus_1"] == 2
    rows = {ev["row"] for ev in summary["events"]["events"]}
    assert {"change point", "emergence (behaviour)"} <= rows
    html = (out / "report.html").read_text()
    assert html.index("<h2>Event timeline</h2>") < html.index("<h2>Learning curves</h2>")


@pytest.mark.slow
def test_every_snapshot_gets_its_pictures_once(shared, planted):
    run_id, out = planted
    names = [f.path for f in MlflowClient().list_artifacts(run_id, tracking.IMAGE_DIR) if f.path.endswith(".png")]
    assert tracking.image_steps(run_id) == {key: set(range(LAST + 1)) for key in ("pca_fc2", "esd", "cka")}
    assert len(names) == 3 * (LAST + 1)  # one file per key and epoch, whichever analysis ran first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epoch_images"]["drawn_epochs"] == list(range(LAST + 1))


@pytest.mark.slow
def test_bad_options_on_a_good_run_are_one_line(shared, planted):
    run_id, _ = planted
    line = one_error(invoke("--run-id", run_id, "--layer", "fc9"))
    assert "--layer 'fc9'" in line and "conv1" in line
    assert "no snapshot at epoch" in one_error(invoke("--run-id", run_id, "--esd-epochs", "99"))
    assert "comma list" in one_error(invoke("--esd-epochs", "first"))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    "change, reason",
    [({"data": "folder:/nonexistent/faces"}, "does not exist"), ({"identities": 2}, "differs from the one trained on")],
)
@pytest.mark.slow
def test_a_dataset_that_cannot_be_rebuilt_skips_only_its_steps(shared, planted, tmp_path, change, reason):
    src = read_source(MlflowClient().get_run(planted[0]))
    src.checkpoint["data_config"].update(change)
    images, draw = RunImages(src), analyze_steps.FigureWriter(tmp_path)
    with ThreadPoolExecutor(1) as pool:
        sweep = pool.submit(
            analyze_images.sweep_modes,
            load_model(src.checkpoint),
            images,
            src.checkpoint,
            AnalyzeConfig(progress=False),
            threading.Event(),
        )
    for step in (
        analyze_images.inputs(images, src.snaps, {}, "fc2", 6, draw),
        analyze_images.modes(sweep, len(src.snaps.classes), draw),
    ):
        assert reason in step.summary()["skipped"] and step.section.note.startswith("skipped: ")
        assert not step.section.images
    assert not list(tmp_path.iterdir())


def test_bad_runs_are_refused_in_one_line_and_left_as_they_were(shared):
    client = MlflowClient()
    client.create_experiment("empty")
    assert "no FINISHED training run in experiment 'empty'" in one_error(invoke("--experiment", "empty"))
    assert "no such experiment" in one_error(invoke("--experiment", "missing"))
    assert "no run with id 'nope'" in one_error(invoke("--run-id", "nope"))
    bare_exp = client.create_experiment("bare")  # the client: no fluent state left for other tests

    def new_run(kind, status="FINISHED", experiment="0"):
        run = client.create_run(experiment, tags={"dsc.kind": kind})
        client.log_metric(run.info.run_id, "acc/val", 0.5, step=0)
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    bare = new_run("train", experiment=bare_exp)
    assert "no snapshots/" in one_error(invoke("--run-id", bare))
    assert "no snapshots/" in one_error(invoke("--experiment", "bare"))  # found as the latest training run
    assert client.get_run(bare).info.status == "FINISHED"
    assert "analysis" not in {f.path for f in client.list_artifacts(bare)}
    failed = new_run("train", "FAILED")
    line = one_error(invoke("--run-id", failed))
    assert "FAILED" in line and "FINISHED" in line
    assert client.get_run(failed).info.status == "FAILED"
    assert "'compare' run" in one_error(invoke("--run-id", new_run("compare")))


def test_jsonable_maps_nan_to_null():
    out = jsonable({"a": np.array([1.0, np.nan]), 2: np.float32(np.inf), "s": (np.int64(3), np.bool_(True))})
    assert json.dumps(out, allow_nan=False) == '{"a": [1.0, null], "2": null, "s": [3, true]}'


@pytest.mark.slow
def test_train_then_analyze_end_to_end(store):
    tiny = [
        "--identities",
        "2",
        "--image-size",
        "32",
        "--hidden",
        "32",
        "--epochs",
        "2",
        "--no-progress",
        "--no-register",
    ]
    res = CliRunner().invoke(main, ["train", *tiny], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = invoke("--modes-max-images", "64")
    assert res.exit_code == 0, res.output + res.stderr
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "analysis")}
    assert {"analysis/summary.json", "analysis/report.html", "analysis/figures"} <= names
    assert run.info.status == "FINISHED"
