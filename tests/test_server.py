"""End to end against `mlflow server` with served artifacts, backed by PostgreSQL (SQLite where none).

Every step runs as users run it: `python -m dsc ...` subprocesses with MLFLOW_TRACKING_URI set
to the server. Artifacts must land in the server's --artifacts-destination, nowhere else. The
pipeline runs on one backend: PostgreSQL, as a shared server would be, or SQLite on a machine
without it. SQLite-backed servers carry the Ray sweeps (tests/test_sweep_ray.py) and the
server restart (tests/test_reliability.py).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from served import EPOCHS, TINY, dsc_env, finish, run_id, start

from dsc.tracking.server import mlflow_server, postgres_cluster, postgres_missing

EXPERIMENT = "served"
MODEL = "served-tiny"
STEPS = list(range(EPOCHS + 1))


def _sqlite(tmp_path: Path):
    return nullcontext(f"sqlite:///{tmp_path / 'server.db'}")


def backend(tmp_path: Path):
    """A PostgreSQL cluster where this machine has one, else a SQLite file; yields its URI."""
    return _sqlite(tmp_path) if postgres_missing() else postgres_cluster()


@pytest.mark.slow
def test_pipeline_through_a_tracking_server(tmp_path, cache_dir):
    artifacts, client_dir = tmp_path / "served-artifacts", tmp_path / "client"
    client_dir.mkdir()
    with backend(tmp_path) as backend_uri, mlflow_server(backend_uri, artifacts, tmp_path / "server.log") as uri:
        client = MlflowClient(uri)
        # Created once up front: two runs racing to create it would collide.
        exp_id = client.create_experiment(EXPERIMENT)
        env = dsc_env(uri, cache_dir)
        common = [*TINY, "--experiment", EXPERIMENT, "--register-name", MODEL]
        # Run b has no snapshots: only a is snapshotted again and analysed
        trainings = [
            start("train", *common, "--seed", "0", env=env, cwd=client_dir),
            start("train", *common, "--seed", "1", "--snapshot-every", "0", env=env, cwd=client_dir),
        ]
        a, b = (run_id(finish(p)) for p in trainings)

        # snapshot (child run), analyze and compare only read the runs: run them side by side
        steps = [
            start("snapshot", "--run-id", a, "--child", "--no-progress", env=env, cwd=client_dir),
            start(
                "analyze",
                "--run-id",
                a,
                "--modes-max-images",
                "30",
                "--modes-points",
                "2",
                "--no-progress",
                env=env,
                cwd=client_dir,
            ),
            start("compare", "--run-id", a, "--run-id", b, "--jobs", "1", env=env, cwd=client_dir),
        ]
        child, _, comparison = (finish(p) for p in steps)
        child, comparison = run_id(child), run_id(comparison)

        _check_training_runs(client, exp_id, a, b)
        _check_snapshot_child(client, a, child)
        summary = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=a, artifact_path="analysis/summary.json", dst_path=str(tmp_path / "dl"), tracking_uri=uri
                )
            ).read_text()
        )
        assert summary["run_id"] == a and summary["epochs"] == STEPS
        _check_comparison(client, a, b, comparison)
        _check_registry(client, a, b)
        _check_artifacts_on_the_server(client, artifacts, [a, b, child, comparison])
    assert not list(client_dir.rglob("*.pt")) and not (client_dir / "mlruns").exists()


def _check_training_runs(client: MlflowClient, exp_id: str, *runs: str) -> None:
    for rid in runs:
        run = client.get_run(rid)
        assert run.info.status == "FINISHED" and run.info.experiment_id == exp_id
        for key in ("acc/val", "loss/train", "acc_class/face3"):
            assert [m.step for m in client.get_metric_history(rid, key)] == STEPS, key
        assert sorted(f.path for f in client.list_artifacts(rid, "checkpoints")) == [
            f"checkpoints/epoch_{e:04d}.pt" for e in STEPS
        ]
    assert {client.get_run(r).data.params["seed"] for r in runs} == {"0", "1"}
    snaps = {f.path for f in client.list_artifacts(runs[0], "snapshots")}
    assert {"snapshots/probe.npz", f"snapshots/epoch_{EPOCHS:04d}.npz"} <= snaps
    analysis = {f.path for f in client.list_artifacts(runs[0], "analysis")}
    assert {"analysis/summary.json", "analysis/report.html"} <= analysis


def _check_snapshot_child(client: MlflowClient, source: str, child: str) -> None:
    run = client.get_run(child)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == source and run.data.tags["dsc.kind"] == "snapshot"
    assert sorted(f.path for f in client.list_artifacts(child, "snapshots")) == [
        *(f"snapshots/epoch_{e:04d}.npz" for e in STEPS),
        "snapshots/probe.npz",
    ]


def _check_comparison(client: MlflowClient, a: str, b: str, comparison: str) -> None:
    run = client.get_run(comparison)
    assert run.info.status == "FINISHED" and run.data.tags["dsc.kind"] == "compare"
    assert run.data.metrics["lld/n_runs"] == 2
    assert {"lld/table.csv", "lld/runs.json", "lld/overlay.png"} <= {
        f.path for f in client.list_artifacts(comparison, "lld")
    }
    for rid in (a, b):  # written back onto the source runs
        metrics = client.get_run(rid).data.metrics
        assert "lld/r2_1" in metrics and 0.0 <= metrics["lld/r2_1"] <= 1.0 + 1e-9


def _check_registry(client: MlflowClient, a: str, b: str) -> None:
    versions = {v.run_id: v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert {a, b} <= set(versions)
    final = client.get_model_version_by_alias(MODEL, "final")
    best = client.get_model_version_by_alias(MODEL, "best")
    assert final.run_id in (a, b) and best.run_id in (a, b)
    for rid in (a, b):
        tags = client.get_run(rid).data.tags
        assert client.get_model_version(MODEL, tags["dsc.version_final"]).run_id == rid
        assert versions[rid].source.startswith(("models:/", "mlflow-artifacts:/"))


def _check_artifacts_on_the_server(client: MlflowClient, artifacts: Path, runs: list[str]) -> None:
    a, b, child, comparison = (_on_server(client, artifacts, rid) for rid in runs)
    for run_dir in (a, b):
        assert (run_dir / "checkpoints" / f"epoch_{EPOCHS:04d}.pt").is_file()
    assert (a / "snapshots" / "probe.npz").is_file()
    assert (a / "analysis" / "summary.json").is_file()
    assert (child / "snapshots" / f"epoch_{EPOCHS:04d}.npz").is_file()
    assert (comparison / "lld" / "table.csv").is_file()
    assert list(artifacts.rglob("MLmodel")), "the logged models are stored on the server too"


def _on_server(client: MlflowClient, artifacts: Path, rid: str) -> Path:
    """Where the server keeps a run's artifacts: mlflow-artifacts:/X is DESTINATION/X."""
    uri = client.get_run(rid).info.artifact_uri
    assert uri.startswith("mlflow-artifacts:/"), uri
    return artifacts / uri.removeprefix("mlflow-artifacts:/")
