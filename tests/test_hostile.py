"""Every entry point against hostile input: one ``error:`` line, a non-zero exit, nothing lost.

The table below is the one ``docs/guide/faults.md`` shows. Each case runs the command against a
store that holds a finished training run, runs of other kinds and broken ones, and checks that:
- the exit code is the expected one and stderr has exactly one ``error:`` line, saying what is
  wrong, and no traceback;
- every run that existed keeps its status, every metric point and every artifact;
- a run the command itself opened is marked FAILED.
"""

import contextlib
import errno
import os
import socket
import sqlite3
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest
import torch
from click.testing import CliRunner
from conftest import fresh_store
from mlflow.tracking import MlflowClient
from PIL import Image

from dsc import tracking
from dsc.cli import main
from dsc.core import snapshot, snapshot_files
from dsc.tracking.heartbeat import Holder
from dsc.tracking.snapshot import load as load_snapshots

TINY = ["--identities", "2", "--image-size", "32", "--hidden", "32", "--no-progress"]


@dataclass(frozen=True)
class Case:
    id: str
    tried: str  # what a hostile user does (the faults page's table)
    args: tuple[str, ...]  # {name} = a run id of the fixture store
    code: int  # exit code: 2 for a usage error found by the parser, 1 for the rest
    says: str  # a fragment of the one error line
    opens_run: bool = False  # the command creates a run, which must end FAILED
    uri: str = ""  # the tracking store the command is pointed at (default: the fixture's)


CASES = [
    # train
    Case("train-lr-word", "`train --lr fast`", ("train", "--lr", "fast"), 2, "'fast' is not a valid float"),
    Case("train-lr-zero", "`train --lr 0`", ("train", "--lr", "0"), 2, "--lr"),
    Case("train-epochs-negative", "`train --epochs -1`", ("train", "--epochs", "-1"), 2, "--epochs"),
    Case("train-optimizer", "`train --optimizer rmsprop`", ("train", "--optimizer", "rmsprop"), 2, "rmsprop"),
    Case("train-val-fraction", "`train --val-fraction 1.5`", ("train", "--val-fraction", "1.5"), 2, "--val-fraction"),
    Case("train-unknown-option", "`train --epoch 3` (misspelt)", ("train", "--epoch", "3"), 2, "No such option"),
    Case(
        "train-even-kernel", "`train --kernel-size 4`", ("train", *TINY, "--kernel-size", "4"), 1, "positive odd", True
    ),
    Case("train-data-kind", "`train --data imagenet`", ("train", "--data", "imagenet"), 1, "use 'synthetic'", True),
    Case(
        "train-missing-folder",
        "`train --data folder:/no/such/dir`",
        ("train", "--data", "folder:/no/such/dir"),
        1,
        "does not exist",
        True,
    ),
    Case(
        "train-yale-subjects",
        "`train --data yale:DIR --subjects x,y`",
        ("train", "--data", "yale:{tmp}", "--subjects", "x,y"),
        1,
        "--subjects",
        True,
    ),
    Case(
        "train-absent-cuda",
        "`train --device cuda:0` on a machine without CUDA",
        ("train", *TINY, "--device", "cuda:0"),
        1,
        "CUDA is not available",
        True,
    ),
    Case(
        "train-register-name",
        '`train --register-name "a/b c"`',
        ("train", *TINY, "--register-name", "a/b c"),
        1,
        "Names cannot contain '/'",
        True,
    ),
    Case(
        "train-vgg11-small",
        "`train --arch vgg11 --image-size 16`",
        ("train", "--arch", "vgg11", "--image-size", "16", "--no-progress"),
        1,
        "needs --image-size >= 32",
        True,
    ),
    Case(
        "train-data-seed",
        "`train --data-seed 99999999999999999999`",
        ("train", *TINY, "--data-seed", "99999999999999999999"),
        1,
        "--data-seed",
        True,
    ),
    Case("train-seed-negative", "`train --seed -1`", ("train", *TINY, "--seed", "-1"), 1, "--seed -1", True),
    Case(
        "train-decompression-bomb",
        "`train --data folder:DIR` where DIR holds a decompression-bomb PNG",
        ("train", *TINY, "--data", "folder:{bomb}"),
        1,
        "decompression bomb",
        True,
    ),
    Case(
        "train-no-server",
        "`train` with `MLFLOW_TRACKING_URI=http://127.0.0.1:9` (no server there)",
        ("train", *TINY),
        1,
        "cannot reach the tracking server",
        uri="http://127.0.0.1:9",
    ),
    Case(
        "train-no-database",
        "`train` with `MLFLOW_TRACKING_URI` a PostgreSQL database nobody listens for",
        ("train", *TINY),
        1,
        "cannot reach the tracking database",
        uri="postgresql+psycopg2://u:secret-pw@127.0.0.1:9/x",
    ),
    Case(
        "train-deleted-experiment",
        "`train --experiment` a deleted experiment",
        ("train", *TINY, "--experiment", "gone"),
        1,
        "deleted experiment",
    ),
    Case(
        "train-takeover-alone", "`train --takeover` without --resume", ("train", "--takeover"), 1, "--takeover applies"
    ),
    Case(
        "resume-unknown",
        "`train --resume` an id that is no run",
        ("train", "--resume", "0123456789abcdef"),
        1,
        "no run with id",
    ),
    Case(
        "resume-finished", "`train --resume` a FINISHED run", ("train", "--resume", "{finished}"), 1, "already FINISHED"
    ),
    Case(
        "resume-other-kind",
        "`train --resume` a comparison run",
        ("train", "--resume", "{compare}"),
        1,
        "is a compare run",
    ),
    Case(
        "resume-no-checkpoint",
        "`train --resume` a run that died before its first checkpoint",
        ("train", "--resume", "{nockpt}"),
        1,
        "no complete checkpoint",
    ),
    Case(
        "resume-entry-without-run",
        "`mlflow run . -e resume` without --run-id (a fresh run)",
        ("train", "--resume", "{fresh}"),
        1,
        "pass its id with --run-id",
    ),
    Case(
        "resume-with-options",
        "`train --resume RUN --epochs 9`",
        ("train", "--resume", "{nockpt}", "--epochs", "9"),
        1,
        "drop --epochs",
    ),
    Case(
        "resume-held",
        "`train --resume` a run whose training process is alive (a fresh heartbeat)",
        ("train", "--resume", "{held}"),
        1,
        "is being trained by pid",
    ),
    # snapshot
    Case("snapshot-no-run-id", "`snapshot` without --run-id", ("snapshot",), 2, "--run-id"),
    Case(
        "snapshot-unknown",
        "`snapshot --run-id` an id that is no run",
        ("snapshot", "--run-id", "nope"),
        1,
        "no run with id",
    ),
    Case(
        "snapshot-other-kind",
        "`snapshot` of a comparison run",
        ("snapshot", "--run-id", "{compare}"),
        1,
        "no checkpoints",
    ),
    Case(
        "snapshot-overwrite",
        "`snapshot` of a run that has snapshots, without --overwrite",
        ("snapshot", "--run-id", "{finished}"),
        1,
        "already has snapshots/",
    ),
    Case(
        "snapshot-every-zero",
        "`snapshot --every 0`",
        ("snapshot", "--run-id", "{finished}", "--every", "0"),
        2,
        "--every",
    ),
    Case(
        "snapshot-corrupt-checkpoint",
        "`snapshot --child` of a run whose checkpoint is corrupt",
        ("snapshot", "--run-id", "{badckpt}", "--child", "--no-progress"),
        1,
        "unreadable",
        True,
    ),
    # analyze
    Case(
        "analyze-unknown",
        "`analyze --run-id` an id that is no run",
        ("analyze", "--run-id", "nope"),
        1,
        "no run with id",
    ),
    Case("analyze-other-kind", "`analyze` a comparison run", ("analyze", "--run-id", "{compare}"), 1, "'compare' run"),
    Case("analyze-unfinished", "`analyze` a FAILED run", ("analyze", "--run-id", "{nockpt}"), 1, "is FAILED"),
    Case(
        "analyze-empty-experiment",
        "`analyze --experiment` an experiment with no runs",
        ("analyze", "--experiment", "empty"),
        1,
        "no FINISHED training run",
    ),
    Case(
        "analyze-no-experiment",
        "`analyze --experiment` a name that does not exist",
        ("analyze", "--experiment", "nosuch"),
        1,
        "no such experiment",
    ),
    Case(
        "analyze-layer",
        "`analyze --layer conv9`",
        ("analyze", "--run-id", "{finished}", "--layer", "conv9"),
        1,
        "not in the snapshots",
    ),
    Case(
        "analyze-esd-word",
        "`analyze --esd-epochs first`",
        ("analyze", "--run-id", "{finished}", "--esd-epochs", "first"),
        1,
        "comma list",
    ),
    Case(
        "analyze-esd-absent",
        "`analyze --esd-epochs 99` (no such snapshot)",
        ("analyze", "--run-id", "{finished}", "--esd-epochs", "99"),
        1,
        "no snapshot at epoch",
    ),
    Case(
        "analyze-corrupt-snapshot",
        "`analyze` a run whose every snapshot epoch file is truncated (one corrupted epoch is skipped)",
        ("analyze", "--run-id", "{badsnap}"),
        1,
        "no snapshot epoch of run",
    ),
    Case("analyze-components", "`analyze --components 1`", ("analyze", "--components", "1"), 2, "--components"),
    # compare
    Case(
        "compare-empty-experiment",
        "`compare --experiment` an experiment with no runs",
        ("compare", "--experiment", "empty"),
        1,
        "no runs to compare",
    ),
    Case(
        "compare-no-experiment",
        "`compare --experiment` a name that does not exist",
        ("compare", "--experiment", "nosuch"),
        1,
        "no experiment named",
    ),
    Case(
        "compare-metric",
        "`compare --metric` a metric the run lacks",
        ("compare", "--run-id", "{finished}", "--metric", "acc/test"),
        1,
        "has no metric",
    ),
    Case(
        "compare-other-kind",
        "`compare --run-id` a comparison run",
        ("compare", "--run-id", "{compare}"),
        1,
        "not a training run",
    ),
    Case(
        "compare-unfinished", "`compare --run-id` a FAILED run", ("compare", "--run-id", "{nockpt}"), 1, "not FINISHED"
    ),
    Case(
        "compare-filter",
        '`compare --filter "params.lr =="`',
        ("compare", "--filter", "params.lr =="),
        1,
        "invalid --filter",
    ),
    Case(
        "compare-components",
        "`compare --max-components 9`",
        ("compare", "--max-components", "9"),
        2,
        "--max-components",
    ),
    # sweep: every value is checked before any run starts
    Case("sweep-grid-key", "`sweep --grid lrr=1e-4`", ("sweep", "--grid", "lrr=1e-4"), 1, "did you mean lr"),
    Case("sweep-grid-value", "`sweep --grid kernel-size=3,4`", ("sweep", "--grid", "kernel-size=3,4"), 1, "kernel"),
    Case("sweep-seeds", "`sweep --seeds 1,1`", ("sweep", "--seeds", "1,1"), 1, "listed twice"),
    Case("sweep-set-seed", "`sweep --set seed=3`", ("sweep", "--set", "seed=3"), 1, "--seeds"),
    Case("sweep-parallel", "`sweep --parallel 0`", ("sweep", "--parallel", "0"), 2, "--parallel"),
]


def decompression_bomb(path: Path) -> None:
    """A valid 1x1 PNG whose header claims 30000 x 30000 pixels (Pillow refuses it on opening)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30000, 30000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def tracking_uri(uri: str):
    """Point MLflow (this process, and the environment) at ``uri`` inside; back after."""
    if not uri:
        yield
        return
    saved = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = saved
        mlflow.set_tracking_uri(saved)


def _train(name: str, epochs: int) -> str:
    # Its model is never looked up: not registering it saves the two model exports.
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", str(epochs), "--run-name", name, "--no-register"])
    assert res.exit_code == 0, res.output
    return mlflow.search_runs(["0"], f"attributes.run_name = '{name}'", output_format="list")[0].info.run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory, cache_dir, empty_store):
    """A store with a finished run, a comparison run, and runs that are broken in known ways."""
    tmp = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        fresh_store(tmp, mp, cache_dir, empty_store)
        client = MlflowClient()
        runs = {"finished": _train("finished", 2), "badsnap": _train("badsnap", 1), "tmp": str(tmp)}
        local = Path(mlflow.artifacts.download_artifacts(run_id=runs["badsnap"], artifact_path="snapshots"))
        src = Path(client.get_run(runs["badsnap"]).info.artifact_uri.removeprefix("file://")) / "snapshots"
        for name in ("epoch_0000.npz", "epoch_0001.npz"):
            whole = (local / name).read_bytes()
            (src / name).write_bytes(whole[: len(whole) // 3])  # as a full disk leaves it
        compare = client.create_run("0", tags={"dsc.kind": "compare"}, run_name="compare")
        client.log_metric(compare.info.run_id, "acc/val", 0.5, step=0)
        client.set_terminated(compare.info.run_id, "FINISHED")
        runs["compare"] = compare.info.run_id
        runs["nockpt"] = client.create_run("0", tags={"dsc.kind": "train"}, run_name="nockpt").info.run_id
        client.set_terminated(runs["nockpt"], "FAILED")
        bad = client.create_run("0", tags={"dsc.kind": "train"}, run_name="badckpt").info.run_id
        (tmp / tracking.CHECKPOINT_FMT.format(0)).write_bytes(b"\x80\x02 not a checkpoint")
        client.log_artifact(bad, str(tmp / tracking.CHECKPOINT_FMT.format(0)), tracking.CHECKPOINT_DIR)
        tracking.mark_complete(bad, tracking.CHECKPOINT_DIR, 0)
        client.set_terminated(bad, "FAILED")
        runs["badckpt"] = bad
        runs["fresh"] = client.create_run("0", tags={"mlflow.project.entryPoint": "resume"}).info.run_id
        # a run held by a live process (this one), whose heartbeat stays fresh for an hour
        holder = Holder(socket.gethostname(), os.getpid(), time.time(), 3600.0, "t")
        runs["held"] = client.create_run(
            "0", tags={"dsc.kind": "train", tracking.HEARTBEAT_TAG: holder.to_tag()}, run_name="held"
        ).info.run_id
        for cls in ("a", "b"):
            (tmp / "bomb" / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp / "bomb" / cls / "ok.png")
        decompression_bomb(tmp / "bomb" / "b" / "bomb.png")
        runs["bomb"] = str(tmp / "bomb")
        client.create_experiment("empty")
        client.delete_experiment(client.create_experiment("gone"))
        yield runs


def store_state(root: str) -> dict[str, tuple]:
    """Per run of the store in ``root``: status, the number of points of every metric, and every
    artifact path, read from the database and the artifact folders themselves (MLflow's API takes
    a query per metric)."""
    with contextlib.closing(sqlite3.connect(Path(root) / "mlflow.db")) as db:
        runs = db.execute("SELECT run_uuid, status, artifact_uri FROM runs").fetchall()
        counts = db.execute("SELECT run_uuid, key, COUNT(*) FROM metrics GROUP BY run_uuid, key").fetchall()
    points: dict[str, dict[str, int]] = {}
    for rid, key, n in counts:
        points.setdefault(rid, {})[key] = n
    state = {}
    for rid, status, uri in runs:
        folder = Path(uri.removeprefix("file://"))
        files = {str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()} if folder.is_dir() else set()
        state[rid] = (status, points.get(rid, {}), files)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(world, case, monkeypatch):
    if case.id == "train-absent-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = store_state(world["tmp"])
    retries = []  # MLflow's HTTP retry setting at each store request the command makes
    real_search = MlflowClient.search_experiments

    def search(self, *args, **kwargs):
        retries.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        return real_search(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_experiments", search)
    with tracking_uri(case.uri):
        res = CliRunner().invoke(main, [a.format(**world) for a in case.args])
    if case.uri and case.uri.startswith("http"):  # the start-up probe asks with few retries, not MLflow's minutes
        assert retries and retries[0] == tracking.store.PROBE_HTTP["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    if case.uri and (password := urlsplit(case.uri).password):  # masked in what the user reads
        assert password not in res.output
    assert res.exit_code == case.code, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert case.says in errors[0]
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    after = store_state(world["tmp"])
    for rid, (status, points, files) in before.items():
        assert after[rid][0] == status, f"run {rid} changed status"
        assert all(after[rid][1].get(k, 0) >= n for k, n in points.items()), f"run {rid} lost metrics"
        assert files <= after[rid][2], f"run {rid} lost artifacts"
    new = {rid: after[rid][0] for rid in set(after) - set(before)}
    assert list(new.values()) == (["FAILED"] if case.opens_run else [])


def test_faults_page_lists_every_case():
    page = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "faults.md").read_text()
    missing = [c.tried for c in CASES if c.tried not in page]
    assert not missing, f"the faults page's hostile-input table lacks: {missing}"


@pytest.mark.slow
def test_disk_full_while_writing_a_snapshot_then_resume(store, monkeypatch):
    """ENOSPC at epoch 2's snapshot: one line, a FAILED run with epochs 0-1 intact; resume finishes it."""
    real = snapshot_files._atomic_savez

    def full_disk(path, arrays):
        if path.name == snapshot.EPOCH_FMT.format(2):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, arrays)

    monkeypatch.setattr(snapshot_files, "_atomic_savez", full_disk)
    res = CliRunner().invoke(main, ["train", *TINY, "--epochs", "3", "--no-register"])
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "--resume" in errors[0]
    run = mlflow.search_runs(["0"], output_format="list")[0]
    rid = run.info.run_id
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["error"]
    steps = [m.step for m in MlflowClient().get_metric_history(rid, "acc/val")]
    assert steps == [0, 1]
    assert sorted(tracking.list_checkpoints(rid)) == [0, 1]
    assert load_snapshots(rid).epochs == [0, 1]

    monkeypatch.setattr(snapshot_files, "_atomic_savez", real)  # space freed
    res = CliRunner().invoke(main, ["train", "--resume", rid, "--no-progress"])
    assert res.exit_code == 0, res.output
    run = MlflowClient().get_run(rid)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert "No space left" in run.data.tags["dsc.previous_error"]
    assert [m.step for m in MlflowClient().get_metric_history(rid, "acc/val")] == [0, 1, 2, 3]
    assert load_snapshots(rid).epochs == [0, 1, 2, 3]
