"""dsc compare's per-class fits and predictors of N, on planted metric histories (no training)."""

import json
import time

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dsc.jobs.compare import compare_job
from dsc.settings import CompareConfig

EPOCHS = 50
WIDTH = 1.5
# identities -> the centres of each class's rise: 1, 2 and 3 separated groups of classes.
GROUPS = {"2": 1, "3": 2, "4": 3}
PLANTED = {
    "2": [14.0, 14.5],
    "3": [10.0, 10.5, 30.0],
    "4": [8.0, 8.5, 22.0, 38.0],
}


def rise(centre, chance, seed):
    t = np.arange(float(EPOCHS + 1))
    y = chance + (1 - chance) / (1 + np.exp(-(t - centre) / WIDTH))
    return y + np.random.default_rng(seed).normal(0.0, 0.003, t.size)


def planted_run(identities, centres, seed):
    """acc/val is the mean of the classes' curves, as the validation accuracy is."""
    chance = 1 / len(centres)
    curves = {f"face{k + 1}": rise(c, chance, seed * 10 + k) for k, c in enumerate(centres)}
    mlflow.set_experiment("classes")
    with mlflow.start_run(tags={"dsc.kind": "train"}) as run:
        mlflow.log_params({"identities": identities, "seed": seed})
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(f"prob_class/{name}", float(v), stamp, e) for name, y in curves.items() for e, v in enumerate(y)
        ]
        metrics += [Metric("acc/val", float(v), stamp, e) for e, v in enumerate(np.mean(list(curves.values()), axis=0))]
        MlflowClient().log_batch(run.info.run_id, metrics=metrics)
    return run.info.run_id


@pytest.mark.slow
def test_compare_fits_each_class_and_predicts_the_planted_number_of_groups(store):
    ids = {(n, s): planted_run(n, centres, s) for n, centres in PLANTED.items() for s in (0, 1)}
    cid = compare_job(CompareConfig(experiments=("classes",), group_by=("identities",), jobs=1), warn=lambda line: None)
    client = MlflowClient()
    for (n, _), rid in ids.items():
        m = client.get_run(rid).data.metrics
        assert m["lld/class_clusters"] == GROUPS[n] and m["lld/n_from_classes"] == GROUPS[n]
        assert m["lld/n_components"] == GROUPS[n]  # the observed N, with which both agree
        assert m["lld_class/face1/center_1"] == pytest.approx(PLANTED[n][0], abs=0.3)
        assert m["lld_class/face1/n_components"] == 1
    comparison = client.get_run(cid).data.metrics
    for p in ("n_from_classes", "class_clusters"):
        assert comparison[f"lld/agree/{p}/share_equal"] == 1.0 and comparison[f"lld/agree/{p}/rho"] == 1.0
    summary = mlflow.artifacts.load_dict(f"runs:/{cid}/lld/classes.json")
    assert summary["class_curve"] == "prob" and summary["cluster_factor"] == 2.0
    by_group = mlflow.artifacts.load_dict(f"runs:/{cid}/groups/agreement.json")
    assert by_group["identities=4"]["class_clusters"]["share_equal"] == 1.0
    first = json.loads(mlflow.artifacts.load_text(f"runs:/{cid}/groups/first_class.json"))
    assert first["identities=4"] == {"face1": 2}  # face1 rises first in every planted run
    table = mlflow.artifacts.load_dict(f"runs:/{cid}/groups/table.json")
    rows = [dict(zip(table["columns"], row)) for row in table["data"]] if "columns" in table else table
    means = {(r["group"], r["quantity"]): r["mean"] for r in rows}
    assert means[("identities=3", "class_clusters")] == 2.0
