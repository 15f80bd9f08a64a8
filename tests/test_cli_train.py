"""End-to-end: the train command against a temporary SQLite store."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from dsc.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]


def run_cli(*args):
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def only_run():
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    return runs[0]


def metric_steps(run_id, key):
    return [m.step for m in MlflowClient().get_metric_history(run_id, key)]


@pytest.mark.slow
def test_train_leaves_a_complete_registered_run(store):
    res = run_cli(*TINY, "--epochs", "2", "--optimizer", "adam", "--lr", "1e-3", "--register-name", "tiny")
    assert res.exit_code == 0, res.output
    run = only_run()
    assert run.info.status == "FINISHED"
    for key in ["loss/train", "loss/val", "acc/train", "acc/val", "acc_class/face1", "acc_class/face2"]:
        assert metric_steps(run.info.run_id, key) == [0, 1, 2], key
    client = MlflowClient()
    ckpts = sorted(f.path for f in client.list_artifacts(run.info.run_id, "checkpoints"))
    assert ckpts == [f"checkpoints/epoch_{e:04d}.pt" for e in range(3)]
    ckpt = torch.load(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=ckpts[-1]), weights_only=True
    )
    assert ckpt["epoch"] == 2 and "optimizer_state" in ckpt and ckpt["classes"] == ["face1", "face2"]
    inputs = run.inputs.dataset_inputs
    tags = [{t.key: t.value for t in i.tags} for i in inputs]
    assert sorted(t["mlflow.data.context"] for t in tags) == ["training", "validation"]
    assert sorted(t["split_size"] for t in tags) == ["230", "922"]
    assert all(i.dataset.digest and i.dataset.name == "synthetic" for i in inputs)
    assert run.data.params["n_train"] == "922" and run.data.params["n_val"] == "230"
    tags = run.data.tags
    assert tags["dsc.data_digest"] == run.data.params["data_digest"]
    assert len(tags["dsc.init_weights"]) == 16 and tags["dsc.torch"] == torch.__version__
    torch.manual_seed(0)
    from dsc.jobs.train import weights_digest
    from dsc.nn.model import DenseVGG

    assert tags["dsc.init_weights"] == weights_digest(DenseVGG(num_classes=2, hidden=32))
    final = client.get_model_version_by_alias("tiny", "final")
    best = client.get_model_version_by_alias("tiny", "best")
    assert final.run_id == best.run_id == run.info.run_id


@pytest.mark.slow
def test_registered_model_predicts_like_the_checkpoint(store):
    assert run_cli(*TINY, "--epochs", "1", "--register-name", "tiny").exit_code == 0
    run = only_run()
    loaded = mlflow.pytorch.load_model("models:/tiny@final")
    from dsc.nn.model import DenseVGG

    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/epoch_0001.pt")
    ckpt = torch.load(path, weights_only=True)
    model = DenseVGG(num_classes=2, hidden=32)
    model.load_state_dict(ckpt["model_state"])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def failed_run(store, *args):
    res = run_cli(*args)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["error"]
    return lines[0], run


def test_missing_path_fails_the_run(store, tmp_path):
    line, _ = failed_run(store, "--data", f"yale:{tmp_path / 'nope'}")
    assert "does not exist" in line


def test_empty_directory_fails_the_run(store, tmp_path):
    (tmp_path / "empty").mkdir()
    line, _ = failed_run(store, "--data", f"folder:{tmp_path / 'empty'}")
    assert "expected" in line


def test_one_class_fails_the_run(store, tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "f" / "a" / "0.png")
    line, _ = failed_run(store, "--data", f"folder:{tmp_path / 'f'}")
    assert "at least 2" in line


def test_corrupt_image_fails_the_run(store, tmp_path):
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), i * 50, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    (tmp_path / "f" / "b" / "3.png").write_bytes(b"not an image")
    line, _ = failed_run(store, "--data", f"folder:{tmp_path / 'f'}")
    assert "cannot read image" in line and "3.png" in line


def test_malformed_data_spec_fails_the_run(store):
    line, _ = failed_run(store, "--data", "imagenet")
    assert "use 'synthetic'" in line


def test_refused_setting_fails_the_run_and_logs_no_params(store):
    line, run = failed_run(store, "--kernel-size", "4")
    assert line == "error: kernel_size must be a positive odd int, got 4"
    assert run.data.params == {} and "kernel_size must be" in run.data.tags["error"]


def test_malformed_option_value_is_a_usage_error(store):
    res = CliRunner().invoke(main, ["train", "--lr", "fast"])
    assert res.exit_code == 2 and "'fast' is not a valid float" in res.stderr


@pytest.mark.slow
def test_diverging_loss_fails_the_run_and_keeps_epoch_zero(store):
    line, run = failed_run(store, *TINY, "--epochs", "3", "--lr", "1e8")
    assert "diverged" in line or "non-finite" in line
    assert metric_steps(run.info.run_id, "acc/val") == [0]
    assert [f.path for f in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")] == [
        "checkpoints/epoch_0000.pt"
    ]


@pytest.mark.slow
def test_mlflow_run_entry_point(store, tmp_path):
    """The brief's acceptance check: `mlflow run . -e train -P epochs=2` on a temporary store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        "train",
        "-P",
        "epochs=2",
        "-P",
        "identities=2",
        "-P",
        "image_size=32",
        "-P",
        "hidden=32",
        "-P",
        "register_name=mlp",
        "--env-manager",
        "local",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run()
    assert metric_steps(run.info.run_id, "acc/val") == [0, 1, 2]
    assert run.data.params["epochs"] == "2"
    assert MlflowClient().get_model_version_by_alias("mlp", "final").run_id == run.info.run_id


@pytest.mark.slow
def test_main_entry_point_trains_then_analyzes(store, tmp_path):
    """`mlflow run .` (the main entry) leaves one run with training metrics and analysis/."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-P",
        "epochs=2",
        "-P",
        "identities=2",
        "-P",
        "image_size=32",
        "-P",
        "hidden=32",
        "--env-manager",
        "local",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run()
    assert run.info.status == "FINISHED" and run.data.params["hidden"] == "32"
    assert metric_steps(run.info.run_id, "acc/val") == [0, 1, 2]
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "analysis")}
    assert {"analysis/summary.json", "analysis/report.html"} <= names
    assert str(tmp_path) in run.info.artifact_uri  # the test's own store, nothing in the repo
