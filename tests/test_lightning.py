"""The recorder as a Lightning callback, in a real ``Trainer.fit``."""

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_recorder import SmallCNN, digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dsc import tracking

pl = pytest.importorskip("lightning.pytorch", reason="Lightning is optional: uv sync --group lightning")
from dsc.integrations.lightning import RecorderCallback  # noqa: E402


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = SmallCNN()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def fit(logger, probe, epochs=2):
    (xt, yt), _ = digits()
    torch.manual_seed(0)
    callback = RecorderCallback(probe=probe, snapshot_every=1, checkpoint_every=1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=logger,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=1,
    )
    loader = DataLoader(TensorDataset(xt[:400], yt[:400]), batch_size=100)
    trainer.fit(Module(), loader, DataLoader(TensorDataset(*probe), batch_size=100))
    return callback


@pytest.mark.slow
def test_the_callback_records_into_the_mlflow_loggers_run(store):
    from lightning.pytorch.loggers import MLFlowLogger

    _, probe = digits(n_val=100)
    logger = MLFlowLogger(experiment_name="pl", tracking_uri=store)
    fit(logger, probe)
    run = MlflowClient().get_run(logger.run_id)
    assert run.data.tags[tracking.KIND_TAG] == "train"
    assert tracking.metric_history(logger.run_id, "acc/val")[0].tolist() == [0, 1, 2]  # epoch 0 before fitting
    assert "val_loss" in run.data.metrics and "lightning/val_loss" in run.data.metrics
    assert tracking.snapshot.load(logger.run_id).epochs == [0, 1, 2]
    assert run.info.status == "FINISHED"  # Lightning's logger ended it
    assert len(mlflow.search_runs(experiment_names=["pl"])) == 1  # no second run


@pytest.mark.slow
def test_without_an_mlflow_logger_the_callback_makes_its_own_run(store):
    _, probe = digits(n_val=100)
    callback = fit(False, probe, epochs=1)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    rid = runs.iloc[0]["run_id"]
    assert tracking.metric_history(rid, "acc/val")[0].tolist() == [0, 1]
    assert callback.recorder is None  # closed at the end of fit
    assert tracking.load_logged_model(rid) is not None
