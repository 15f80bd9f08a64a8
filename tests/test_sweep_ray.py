"""The ray engine of `dsc sweep`: the store check, and sweeps on a real local multi-node Ray cluster.

The cluster tests start `ray.cluster_utils.Cluster` (a head and a worker node of one CPU each,
every node its own raylet on this machine) and a loopback `mlflow server`,
and drive `python -m dsc sweep --engine ray` as a user does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection

import forked
import mlflow
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from served import dsc_env, histories

from dsc import tracking
from dsc.cli import main
from dsc.errors import ConfigError
from dsc.jobs.sweep import SWEEP_TAG
from dsc.jobs.sweep.cluster import ATTEMPTS_TAG, NODE_TAG, store_for_cluster
from dsc.tracking.server import mlflow_server

TWO = ["10.0.0.1", "10.0.0.2"]
SAME = ["10.0.0.1", "10.0.0.1"]  # two nodes on one machine, as ray.cluster_utils makes them


# --------------------------------------------------------------------------- the store check (no Ray)


def test_a_file_store_is_made_absolute_and_kept_on_one_node(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_for_cluster("sqlite:///runs/m.db", ["10.0.0.1"]) == f"sqlite:///{tmp_path / 'runs/m.db'}"
    assert store_for_cluster("mlruns", ["10.0.0.1"]) == str(tmp_path / "mlruns")
    assert store_for_cluster("file:///srv/mlruns", ["10.0.0.1"]) == "file:///srv/mlruns"


@pytest.mark.parametrize("uri", ["sqlite:///m.db", "sqlite:////abs/m.db", "./mlruns", "file:///srv/mlruns"])
@pytest.mark.parametrize("ips", [TWO, SAME])
def test_a_file_store_on_several_nodes_is_refused_in_one_line(uri, ips):
    with pytest.raises(ConfigError) as exc:
        store_for_cluster(uri, ips)
    line = str(exc.value)
    assert "\n" not in line and "cannot all reach" in line and "2 nodes" in line
    assert "mlflow server" in line and "--shared-store" in line


def test_a_file_store_declared_shared_is_kept_but_not_through_ray_client():
    assert store_for_cluster("sqlite:////nfs/m.db", TWO, shared=True) == "sqlite:////nfs/m.db"
    with pytest.raises(ConfigError, match="a remote Ray cluster cannot all reach"):
        store_for_cluster("sqlite:////nfs/m.db", ["10.0.0.1"], remote=True)


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "http://localhost:5000", "postgresql://u:p@127.0.0.1/mlflow", "http://[::1]:5000"]
)
def test_a_loopback_server_serves_one_machine_only(uri):
    assert store_for_cluster(uri, SAME) == uri
    with pytest.raises(ConfigError, match="loopback address"):
        store_for_cluster(uri, TWO)
    with pytest.raises(ConfigError, match="loopback address"):
        store_for_cluster(uri, ["10.0.0.1"], remote=True)


@pytest.mark.parametrize("uri", ["http://mlflow.internal:5000", "https://10.0.0.9", "postgresql://db:5432/m"])
def test_a_server_every_node_reaches_is_kept(uri):
    assert store_for_cluster(uri, TWO, remote=True) == uri


# --------------------------------------------------------------------------- options and packaging


@pytest.mark.parametrize(
    "args, line",
    [
        (["--cpus-per-run", "2"], "error: --cpus-per-run applies to --engine ray only"),
        (["--ray-address", "auto"], "error: --ray-address applies to --engine ray only"),
        (
            ["--engine", "ray", "--set", "device=cuda"],
            "error: sweep member seed=0: --device cuda on --engine ray needs GPUs reserved with --gpus-per-run",
        ),
    ],
)
def test_engine_options_are_checked_before_anything_runs(store, args, line):
    res = CliRunner().invoke(main, ["sweep", *args, "--no-progress"])
    assert res.exit_code == 1 and res.stderr.strip().splitlines() == [line]
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.slow
def test_nothing_imports_ray_unless_the_engine_is_asked_for(store):
    """With Ray made unimportable: the CLI and both engines' modules load, and --engine ray says how to install it."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import dsc.cli, dsc.jobs.sweep, dsc.jobs.sweep.cluster\n"
        "from dsc.cli import main\n"
        "main(['sweep', '--engine', 'ray', '--no-progress'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: --engine ray needs Ray, an optional dependency: install it with `uv sync --group ray` "
        "(or `pip install 'ray[default]'`), or use --engine local"
    )
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


# --------------------------------------------------------------------------- a real cluster

EPOCHS = 5
SETTINGS = ["--identities", "3", "--image-size", "16", "--set", f"hidden=32 epochs={EPOCHS}"]


def final_weights(run_id: str) -> dict[str, torch.Tensor]:
    ckpt = tracking.load_checkpoint(run_id, tracking.list_checkpoints(run_id)[EPOCHS])
    return ckpt["model_state"]


@pytest.fixture
def cluster(cache_dir):
    """A head and a worker node, one CPU each, whose workers share the data cache (each node
    costs a raylet and its agents; the head trains too, and only the worker node is killed)."""
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="Ray is not installed: uv sync --group ray")
    nodes = {"num_cpus": 1, "env_vars": {"DSC_CACHE_DIR": str(cache_dir), "RAY_DEDUP_LOGS": "0"}}
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={**nodes, "include_dashboard": False})
    try:
        c.add_node(**nodes)
        c.wait_for_nodes()
        yield c, nodes
    finally:
        c.shutdown()


@pytest.fixture
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-server")
    with mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", tmp / "server.log") as uri:
        yield uri


def refuses_a_local_sqlite_store(c, store: str, cache_dir) -> None:
    """A local SQLite store on a cluster of several nodes is refused in one line before any run exists."""
    res = forked.run(
        [
            sys.executable,
            "-m",
            "dsc",
            "sweep",
            "--engine",
            "ray",
            "--ray-address",
            c.address,
            *SETTINGS,
            "--no-progress",
        ],
        env=dsc_env(store, cache_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "is a file on this machine, which the 2 nodes of the Ray cluster" in errors[0]
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def _wait_for_checkpoint(
    client: MlflowClient, sweep_id_of, proc: subprocess.Popen, epoch: int, nodes: Collection[str], timeout: float = 400
):
    """A member run of the sweep, on one of ``nodes``, that has completed checkpoint ``epoch`` and is still training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        for run in sweep_id_of():
            done = int(run.data.tags.get("dsc.complete.checkpoints", -1))
            holder = tracking.holder_of(run)
            if epoch <= done < EPOCHS and holder is not None and run.data.tags.get(NODE_TAG) in nodes:
                return run, holder
        time.sleep(0.1)
    raise TimeoutError(f"no member wrote checkpoint {epoch} in {timeout} s")


def survives_a_killed_node(c, node_args: dict, server: str, cache_dir) -> None:
    """Two members on two one-CPU nodes; the worker node is SIGKILLed under its training member.

    Every member ends as exactly one FINISHED run with its whole history and registered model;
    the interrupted one was retried into its own run and equals an uninterrupted training.
    """
    env = dsc_env(server, cache_dir)
    mlflow.set_tracking_uri(server)
    client = MlflowClient()
    proc = forked.Popen(
        [
            sys.executable,
            "-m",
            "dsc",
            "sweep",
            "--engine",
            "ray",
            "--ray-address",
            c.address,
            *SETTINGS[:-1],
            f"{SETTINGS[-1]} lr=1e-3",
            "--seeds",
            "0,1",
            "--experiment",
            "ray",
            "--register",
            "--no-progress",
        ],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def members():
            exp = client.get_experiment_by_name("ray")
            return [] if exp is None else client.search_runs([exp.experiment_id], "tags.`dsc.kind` = 'train'")

        workers = {n.node_id: n for n in c.worker_nodes}  # the head holds the cluster: it stays
        victim, holder = _wait_for_checkpoint(client, members, proc, epoch=2, nodes=workers.keys())
        node = workers[victim.data.tags[NODE_TAG]]
        c.remove_node(node, allow_graceful=False)  # SIGKILL of the node's raylet and its services
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGKILL)  # and of the training itself, should it outlive them
        c.add_node(**node_args)  # a replacement joins, as an autoscaler's would
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    last = [ln for ln in out.splitlines() if ln.startswith("sweep ")][-1].split()
    sweep_id, comparison = last[1].rstrip(":"), last[-2]

    runs = client.search_runs(
        [client.get_experiment_by_name("ray").experiment_id],
        f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`dsc.kind` = 'train'",
    )
    assert sorted(r.data.tags["dsc.sweep_member"] for r in runs) == ["seed=0", "seed=1"]  # one run each
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["dsc.sweep_engine"] == "ray"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "acc/val")] == list(range(EPOCHS + 1))
        version = client.get_model_version(run.data.tags["dsc.registered_model"], run.data.tags["dsc.version_final"])
        assert version.run_id == run.info.run_id
    attempts = {r.info.run_id: r.data.tags[ATTEMPTS_TAG] for r in runs}
    assert attempts[victim.info.run_id] == "2" and "dsc.resumed_from" in client.get_run(victim.info.run_id).data.tags
    assert f"run {victim.info.run_id} ({victim.data.tags['dsc.sweep_member']}) finished (attempt 2, resumed" in err
    comp = client.get_run(comparison)
    assert comp.data.tags[SWEEP_TAG] == sweep_id and comp.data.metrics["lld/n_runs"] == 2

    # The same member trained without interruption, one thread as Ray gave each member.
    seed = victim.data.tags["dsc.sweep_member"].split("=")[1]
    ref = forked.run(
        [
            sys.executable,
            "-m",
            "dsc",
            "train",
            "--identities",
            "3",
            "--image-size",
            "16",
            "--hidden",
            "32",
            "--epochs",
            str(EPOCHS),
            "--lr",
            "1e-3",
            "--seed",
            seed,
            "--run-name",
            "reference",
            "--no-register",  # its model is not compared
            "--no-progress",
        ],
        env={**env, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    (reference,) = client.search_runs(["0"], "attributes.run_name = 'reference'")
    skip = ("system/", "lld/", "lld_class/")  # the machine's samples, and what the comparison wrote back
    want, got = histories(reference.info.run_id, skip), histories(victim.info.run_id, skip)
    assert sorted(got) == sorted(want) and len(want) > 50
    for key in want:  # every value at every step, each step once
        assert got[key] == want[key], key
    a, b = final_weights(reference.info.run_id), final_weights(victim.info.run_id)
    assert all(torch.equal(a[k], b[k]) for k in a)


def does_not_retry_a_member_failing_by_itself(c, server: str, cache_dir) -> None:
    res = forked.run(
        [
            sys.executable,
            "-m",
            "dsc",
            "sweep",
            "--engine",
            "ray",
            "--ray-address",
            c.address,
            "--identities",
            "3",
            "--image-size",
            "16",
            "--grid",
            "lr=1e8",
            "--set",
            "epochs=1 hidden=32 snapshot-every=0",
            "--experiment",
            "diverge",
            "--no-progress",
        ],
        env=dsc_env(server, cache_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "1 of 1 runs failed" in errors[0] and "diverged" in errors[0]
    mlflow.set_tracking_uri(server)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("diverge").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags[ATTEMPTS_TAG] == "1"


@pytest.mark.slow
def test_the_ray_engine_on_a_local_two_node_cluster(cluster, server, store, cache_dir):
    """One cluster for the three checks (each start costs a raylet per node): the store refused,
    a failing member not retried, then a node killed under a training member."""
    c, node_args = cluster
    refuses_a_local_sqlite_store(c, store, cache_dir)
    does_not_retry_a_member_failing_by_itself(c, server, cache_dir)
    survives_a_killed_node(c, node_args, server, cache_dir)
