"""A loopback `mlflow server --app-name basic-auth` with an admin and two users, alice and bob.

Default permission READ: each user may read everything and write only what they created or
were granted. Every refusal is one line at start-up, before a job prepares any data.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pytest

pytest.importorskip("flask_wtf", reason="MLflow's auth app needs the auth group: uv sync --group auth")

from click.testing import CliRunner
from mlflow.entities import Metric, Param
from mlflow.server.auth.client import AuthServiceClient
from mlflow.tracking import MlflowClient

from dsc import tracking
from dsc.cli import main
from dsc.errors import TrackingError
from dsc.jobs.compare import WRITTEN_BY_TAG
from dsc.tracking.server import auth_settings, mlflow_server

pytestmark = pytest.mark.slow  # each test needs the module's server or trained run

ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-12"}
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def cheapen_password_checks(db: Path, passwords: dict[str, str]) -> None:
    """Hash the users' passwords anew with one PBKDF2 round, in the auth app's user table.

    The app checks the password of every request against the hash it made, scrypt tuned to cost
    tens of milliseconds (werkzeug's default); the trainings here send hundreds of requests, and
    those checks were most of the server's CPU. Which user may do what, and that a wrong password
    is refused, do not depend on what a check costs.
    """
    from werkzeug.security import generate_password_hash

    with contextlib.closing(sqlite3.connect(db)) as con, con:
        for name, password in passwords.items():
            hashed = generate_password_hash(password, method="pbkdf2:sha256:1")
            cur = con.execute("UPDATE users SET password_hash = ? WHERE username = ?", (hashed, name))
            assert cur.rowcount == 1, f"no user {name!r} in {db}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server, its users, and alice's experiment (with one run) and registered model."""
    root = tmp_path_factory.mktemp("auth-server")
    users = root / "auth"  # auth_settings keeps the users and grants there, in basic_auth.db
    with (
        mlflow_server(
            f"sqlite:///{root / 'mlflow.db'}",
            root / "artifacts",
            root / "server.log",
            auth=auth_settings(users, ADMIN_PASSWORD),
        ) as uri,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        mp.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        admin = AuthServiceClient(uri)
        for name, password in PASSWORDS.items():
            admin.create_user(name, password)
        cheapen_password_checks(users / "basic_auth.db", {"admin": ADMIN_PASSWORD, **PASSWORDS})
        mp.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        mp.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS["alice"])
        client = MlflowClient(uri)
        experiment = client.create_experiment("alice-exp")
        alice_run = client.create_run(experiment).info.run_id
        client.create_registered_model("alice-model")
        yield {"uri": uri, "experiment": experiment, "alice_run": alice_run, "log": root / "server.log"}


@pytest.fixture
def as_user(server, monkeypatch, tmp_path, cache_dir):
    """Point MLflow at the server and log in as a user: ``as_user("bob")``, ``as_user(None)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    monkeypatch.setenv("DSC_CACHE_DIR", str(cache_dir))
    for var in (*CREDENTIAL_VARS, "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(server["uri"])
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)

    def login(name: str | None, password: str | None = None) -> str:
        if name:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS.get(name, ADMIN_PASSWORD))
        return server["uri"]

    return login


@pytest.mark.parametrize(
    "user, password, why",
    [
        (None, None, "no credentials were given"),
        ("bob", "not-bobs-password", "the server refused the password of user 'bob'"),
    ],
)
def test_a_missing_or_wrong_password_is_one_line_at_start_up(as_user, user, password, why):
    uri = as_user(user, password)
    res = CliRunner().invoke(main, ["train", "--epochs", "1", "--no-progress"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines == [
        f"error: authentication failed at the tracking server {uri} ({why}); set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
        "to an account of that server"
    ], res.output
    assert "Traceback" not in res.output


def test_a_token_the_basic_auth_app_does_not_take_is_refused(as_user, monkeypatch):
    as_user(None)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "some-token")
    with pytest.raises(TrackingError, match=r"authentication failed .*\(the server refused the token\)"):
        tracking.ensure_store()


def test_the_server_names_the_user_and_whether_they_are_admin(as_user):
    as_user("admin")
    assert tracking.auth.current_user() == tracking.auth.User("admin", True)
    as_user("bob")
    assert tracking.auth.current_user() == tracking.auth.User("bob", False)


def test_bob_may_not_train_into_alices_experiment(as_user, server):
    as_user("bob")
    before = MlflowClient().search_runs([server["experiment"]])
    res = CliRunner().invoke(main, ["train", "--experiment", "alice-exp", "--epochs", "1", "--no-progress"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"error: user 'bob' may not write runs to experiment 'alice-exp' (id {server['experiment']}) on "
        f"{server['uri']}: it holds READ and needs EDIT; ask its owner or an admin to grant you EDIT "
        "(POST /api/3.0/mlflow/users/permissions/grant, or the UI's permissions page), or choose another "
        "experiment with --experiment NAME"
    ], res.output
    assert len(MlflowClient().search_runs([server["experiment"]])) == len(before)  # nothing was started


def test_the_default_experiment_needs_a_grant_too(as_user):
    as_user("bob")
    with pytest.raises(TrackingError, match=r"experiment 'Default' \(id 0\) .* holds READ and needs EDIT"):
        tracking.preflight()


def test_alice_and_the_admin_pass_and_a_new_experiment_passes(as_user):
    as_user("alice")
    tracking.preflight("alice-exp")
    tracking.preflight("an-experiment-nobody-made-yet")  # its creator will manage it
    as_user("admin")
    tracking.preflight("alice-exp")


def test_bob_may_not_resume_or_snapshot_alices_run(as_user, server):
    as_user("bob")
    with pytest.raises(TrackingError, match="may not write runs to experiment 'alice-exp'"):
        tracking.preflight(run_id=server["alice_run"])


def test_bob_may_not_register_into_alices_model(as_user):
    as_user("bob")
    with pytest.raises(
        TrackingError,
        match=r"user 'bob' may not register versions of model 'alice-model' .* "
        r"holds READ and needs EDIT.* --register-name NAME",
    ):
        tracking.check_model_name("alice-model")
    tracking.check_model_name("bobs-own-model")  # does not exist yet: bob may create it
    as_user("alice")
    tracking.check_model_name("alice-model")


def test_a_grant_lets_bob_write(as_user, server):
    as_user("alice")
    MlflowClient().create_registered_model("alice-shared-model")
    with pytest.raises(TrackingError):
        as_user("bob")
        tracking.check_model_name("alice-shared-model")
    as_user("alice")  # alice manages her model: she may grant
    AuthServiceClient(server["uri"]).grant_user_permission("bob", "registered_model", "alice-shared-model", "EDIT")
    as_user("bob")
    tracking.check_model_name("alice-shared-model")


def test_editable_splits_runs_by_what_the_user_may_write(as_user, server):
    as_user("bob")
    mine = MlflowClient().create_run(MlflowClient().create_experiment("bob-exp")).info.run_id
    assert tracking.editable([server["alice_run"], mine]) == ([mine], [server["alice_run"]])
    as_user("admin")
    assert tracking.editable([server["alice_run"], mine]) == ([server["alice_run"], mine], [])


def _curve_run(client: MlflowClient, experiment: str) -> str:
    """A FINISHED training run with a rising acc/val and two classes' prob_class curves, 20 epochs."""
    run_id = client.create_run(experiment, tags={tracking.KIND_TAG: "train"}).info.run_id
    t = np.arange(20)
    curves = {
        "acc/val": 0.5 + 0.45 / (1 + np.exp(-(t - 8) / 1.5)),
        "prob_class/a": 0.5 + 0.45 / (1 + np.exp(-(t - 6) / 1.2)),
        "prob_class/b": 0.5 + 0.45 / (1 + np.exp(-(t - 11) / 1.2)),
    }
    metrics = [Metric(key, float(v), 0, int(s)) for key, y in curves.items() for s, v in zip(t, y)]
    client.log_batch(run_id, metrics=metrics, params=[Param("lr", "0.01")])
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.mark.slow
def test_bob_compares_alices_runs_and_writes_back_only_to_his_own(as_user, server, monkeypatch):
    """Bob holds READ on alice's experiment: his comparison of her runs and his own finishes, with
    every run's results in it, and writes lld/* back to his run alone, naming hers in a warning."""
    as_user("alice")
    alices = [_curve_run(MlflowClient(), server["experiment"]) for _ in range(2)]
    as_user("bob")
    bobs = _curve_run(MlflowClient(), MlflowClient().create_experiment("bob-compares"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "bob-compares")  # where bob's comparison run goes
    ids = [*alices, bobs]
    res = CliRunner().invoke(
        main, ["compare", *(a for rid in ids for a in ("--run-id", rid)), "--jobs", "1", "--max-components", "2"]
    )
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "not writing lld/* back" in line]
    assert warnings == [
        f"warning: not writing lld/* back to 2 run(s) whose experiment you may not edit: {alices[0]}, "
        f"{alices[1]}; the comparison run records their results"
    ], res.stderr
    client = MlflowClient()
    for rid in alices:  # nothing new on alice's runs
        assert sorted(client.get_run(rid).data.metrics) == ["acc/val", "prob_class/a", "prob_class/b"]
        assert WRITTEN_BY_TAG not in client.get_run(rid).data.tags
    assert {"lld/n_components", "lld/r2_1", "lld_class/a/n_components", "lld/n_from_classes"} <= set(
        client.get_run(bobs).data.metrics
    )
    (comparison,) = client.search_runs(
        [client.get_experiment_by_name("bob-compares").experiment_id], f"tags.`{tracking.KIND_TAG}` = 'compare'"
    )
    assert comparison.info.status == "FINISHED"
    assert client.get_run(bobs).data.tags[WRITTEN_BY_TAG] == comparison.info.run_id
    assert comparison.data.metrics["lld/n_runs"] == 3
    classes = mlflow.artifacts.load_dict(f"{comparison.info.artifact_uri}/lld/classes.json")
    assert [r["run_id"] for r in classes["runs"]] == ids  # alice's runs' results are recorded there
    assert all(set(r["classes"]) == {"a", "b"} for r in classes["runs"])
