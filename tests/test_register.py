"""What a training run offers besides metrics: any epoch in the registry, system metrics, per-epoch pictures."""

import re
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner
from conftest import fresh_store, made_current
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.cli import main

TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]
EPOCHS = 2


@pytest.fixture(scope="module")
def _trained(tmp_path_factory, cache_dir, empty_store):
    with pytest.MonkeyPatch.context() as mp:
        store = fresh_store(tmp_path_factory.mktemp("register"), mp, cache_dir, empty_store)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # a tiny run lasts seconds
        res = CliRunner().invoke(
            main,
            ["train", *TINY, "--epochs", str(EPOCHS), "--register-name", "reg", "--snapshot-images"],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        yield store, mlflow.search_runs(output_format="list")[0]


@pytest.fixture
def trained(_trained, monkeypatch):
    """A store with one finished tiny training run, made current; (store URI, that run)."""
    return made_current(*_trained, monkeypatch)


def register(*args):
    return CliRunner().invoke(main, ["register", *args])


def test_the_registered_model_pins_the_installed_versions(trained):
    """requirements.txt of the final model: the training environment's releases, local build tags dropped."""
    from importlib.metadata import version

    path = mlflow.artifacts.download_artifacts("models:/reg@final/requirements.txt")
    pins = dict(line.split("==") for line in Path(path).read_text().split())
    for dist in ("torch", "torchvision", "mlflow", "numpy"):
        assert pins[dist] == version(dist).split("+")[0], dist


@pytest.mark.slow
def test_registered_epoch_predicts_like_its_checkpoint(trained):
    _, run = trained
    res = register("--run-id", run.info.run_id, "--epoch", "1", "--alias", "transition")
    assert res.exit_code == 0, res.output
    version = MlflowClient().get_model_version_by_alias("reg", "transition")
    assert version.tags == {"dsc.run_id": run.info.run_id, "dsc.epoch": "1"}
    loaded = mlflow.pytorch.load_model("models:/reg@transition")
    ckpt = tracking.load_checkpoint(run.info.run_id, "checkpoints/epoch_0001.pt")
    from dsc.nn.model import DenseVGG

    model = DenseVGG(num_classes=2, hidden=32)
    model.load_state_dict(ckpt["model_state"])
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
        assert not torch.allclose(loaded(x), mlflow.pytorch.load_model("models:/reg@final")(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--epoch", "9"], r"has no checkpoint of epoch 9 \(it has epochs 0-2\); choose one with --epoch"),
        (["--epoch", "1", "--name", "bad/name"], r"registered-model name 'bad/name'"),
    ],
)
def test_bad_register_request_is_one_line(trained, args, message):
    _, run = trained
    res = register("--run-id", run.info.run_id, *args)
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), res.stderr


@pytest.mark.slow
def test_a_non_training_run_is_refused(trained):
    other = MlflowClient().create_run("0", tags={tracking.KIND_TAG: "compare"}).info.run_id
    res = register("--run-id", other, "--epoch", "0")
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        f"error: run {other} is a compare run; only runs of `dsc train` have checkpoints to register"
    )


@pytest.mark.slow
def test_training_run_has_system_metrics(trained):
    _, run = trained
    names = set(MlflowClient().get_run(run.info.run_id).data.metrics)
    for key in (
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/disk_usage_megabytes",
    ):
        assert key in names, sorted(n for n in names if n.startswith("system/"))


@pytest.mark.slow
def test_snapshot_images_logs_each_snapshots_pictures_during_training(trained):
    _, run = trained
    images = [f.path for f in MlflowClient().list_artifacts(run.info.run_id, "images")]
    for key in ("pca_fc2", "esd", "cka"):
        steps = sorted(
            int(p.split("+step+")[1].split("+")[0])
            for p in images
            if p.startswith(f"images/{key}+step+") and p.endswith(".png") and "compressed" not in p
        )
        assert steps == list(range(EPOCHS + 1)), (key, images[:6])
