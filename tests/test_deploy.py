"""deploy/: the Kubernetes example is what MLflow's Kubernetes backend accepts, and matches dsc."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects._project_spec import load_project
from served import ROOT

DEPLOY = ROOT / "deploy"


@pytest.fixture
def kube_config(monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's commands run from the repository root
    return _parse_kubernetes_config(json.loads((DEPLOY / "kubernetes_config.json").read_text()))


def test_backend_config_and_job_template_are_what_mlflow_reads(kube_config):
    assert kube_config["repository-uri"]
    job = kube_config["kube-job-template"]
    assert job["kind"] == "Job" and job["metadata"]["namespace"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    uri = urlparse(env["MLFLOW_TRACKING_URI"])  # the shared server, over HTTP
    assert uri.scheme in ("http", "https") and uri.hostname and uri.port


def test_docker_project_runs_the_train_entry_point_as_the_main_project():
    from mlflow.projects.docker import validate_docker_env

    project = load_project(str(DEPLOY))
    validate_docker_env(project)  # what `mlflow run --backend kubernetes` checks first
    main_train = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["train"]
    train = yaml.safe_load((DEPLOY / "MLproject").read_text())["entry_points"]["train"]
    for name, spec in train["parameters"].items():
        assert spec == main_train["parameters"][name], name
        flag = f"--{name.replace('_', '-')} {{{name}}}"
        assert flag in " ".join(train["command"].split()) and flag in " ".join(main_train["command"].split())


def test_dockerfile_copies_what_exists():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    copied = [w for ln in lines if ln.startswith("COPY ") for w in ln.split()[1:-1]]
    assert copied and all((ROOT / path).exists() for path in copied), copied


def test_rayjob_runs_a_checked_ray_sweep_on_the_deploy_image(kube_config):
    """deploy/rayjob.yaml: a KubeRay RayJob whose driver is a `dsc sweep --engine ray` that plans, on the image."""
    import shlex
    import tomllib

    from dsc.cli import main
    from dsc.jobs.sweep import plan
    from dsc.settings import SweepConfig, build

    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and job["spec"]["shutdownAfterJobFinishes"]
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:4] == ["python", "-m", "dsc", "sweep"]
    ctx = main.commands["sweep"].make_context("sweep", words[4:])
    (config,) = build([SweepConfig], ctx.params)
    assert config.engine == "ray" and config.ray_address == "auto"
    assert len(plan(config).members) == 6  # seeds 0-2 x two learning rates, every value checked

    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    template_env = {
        e["name"]: e.get("value")
        for e in kube_config["kube-job-template"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLFLOW_TRACKING_URI"] == template_env["MLFLOW_TRACKING_URI"]  # the server as pods reach it

    cluster = job["spec"]["rayClusterSpec"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert cluster["rayVersion"] == next(p["version"] for p in lock["package"] if p["name"] == "ray")
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    pods = [head["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    base = load_project(str(DEPLOY)).docker_env["image"]  # the image deploy/Dockerfile builds
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {base}
    assert "--group ray" in (DEPLOY / "Dockerfile").read_text()


def _containers(doc: dict) -> list[dict]:
    """Every container spec in a Kubernetes object (a Job, a Deployment, a RayJob's pods)."""
    found = []
    if isinstance(doc, dict):
        found += doc.get("containers", []) if isinstance(doc.get("containers"), list) else []
        for value in doc.values():
            found += _containers(value) if isinstance(value, (dict, list)) else []
    elif isinstance(doc, list):
        for value in doc:
            found += _containers(value)
    return found


def test_the_server_runs_mlflows_auth_app_with_its_secrets_from_a_secret():
    import configparser

    docs = list(yaml.safe_load_all((DEPLOY / "server.yaml").read_text()))
    (server,) = [c for d in docs if d["kind"] == "Deployment" for c in _containers(d)]
    cmd = server["command"]
    assert cmd[:2] == ["mlflow", "server"] and cmd[cmd.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in server["env"]}
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_BACKEND_STORE_URI"):
        assert "value" not in env[var] and env[var]["valueFrom"]["secretKeyRef"]["name"], var  # never a default
    mounted = {m["mountPath"] for m in server["volumeMounts"]}
    assert str(Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"]).parent) in mounted
    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "basic_auth.ini")
    assert "admin_password" not in ini["mlflow"] and ini["mlflow"]["default_permission"] == "READ"
    assert "--group auth" in (DEPLOY / "Dockerfile").read_text()  # the image has Flask-WTF for the app


@pytest.mark.parametrize("name", ["kubernetes_job_template.yaml", "rayjob.yaml"])
def test_training_pods_take_their_credentials_from_a_secret(name):
    doc = yaml.safe_load((DEPLOY / name).read_text())
    containers = _containers(doc)
    assert containers
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "dsc-credentials", (name, var)
    assert "PASSWORD" not in doc["spec"].get("entrypoint", "") + doc["spec"].get("runtimeEnvYAML", "")
