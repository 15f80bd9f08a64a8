"""dsc sweep: grid expansion and checking (known answers), and sweeps run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from served import EPOCHS

from dsc.cli import main
from dsc.errors import ConfigError
from dsc.jobs.sweep import SWEEP_TAG, expand, parse_assignments, parse_seeds, plan
from dsc.settings import SweepConfig


def labels(members):
    return [m.label for m in members]


def test_expand_crosses_the_grid_with_the_seeds_seeds_fastest():
    members = expand([0, 1], {"lr": [0.001, 0.002], "batch_size": [16, 32, 64]})
    assert len(members) == 12 and [m.index for m in members] == list(range(12))
    assert labels(members)[:4] == [
        "lr=0.001 batch_size=16 seed=0",
        "lr=0.001 batch_size=16 seed=1",
        "lr=0.001 batch_size=32 seed=0",
        "lr=0.001 batch_size=32 seed=1",
    ]
    assert labels(members)[-1] == "lr=0.002 batch_size=64 seed=1"
    assert len({tuple(m.settings.items()) for m in members}) == 12


def test_expand_without_a_grid_is_one_run_per_seed():
    assert [m.settings for m in expand([3, 1], {})] == [{"seed": 3}, {"seed": 1}]


@pytest.mark.parametrize(
    "text, seeds", [("0,1,2", (0, 1, 2)), ("0-3", (0, 1, 2, 3)), (" 7 ", (7,)), ("1, 5-6", (1, 5, 6)), ("-2", (-2,))]
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, match",
    [("x", "comma list"), ("1,1", "seed 1 is listed twice"), ("0-2,2", "seed 2 is listed twice"), ("", "at least one")],
)
def test_parse_seeds_refuses(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_seeds(text)


def test_parse_assignments_normalises_keys_and_splits_items():
    got = parse_assignments(["lr=1e-4,3e-4 --batch-size=16", "image-size=32"], "--grid", many=True)
    assert got == {"lr": ["1e-4", "3e-4"], "batch_size": ["16"], "image_size": ["32"]}
    assert parse_assignments(["data=folder:/a,b"], "--set", many=False) == {"data": ["folder:/a,b"]}
    assert parse_assignments([""], "--set", many=False) == {}


def test_plan_converts_values_with_the_train_options_types():
    p = plan(
        SweepConfig(seeds=(0, 1), grid=("lr=1e-3,3e-3", "channels-last=no,yes"), fixed=("epochs=3 optimizer=sgd",)),
        {"image_size": 32},
    )
    assert p.fixed == {"image_size": 32, "epochs": 3, "optimizer": "sgd"}
    assert len(p.members) == 8 and p.members[0].settings == {"lr": 0.001, "channels_last": False, "seed": 0}
    assert p.argv(p.members[0]) == [
        "--image-size",
        "32",
        "--epochs",
        "3",
        "--optimizer",
        "sgd",
        "--lr",
        "0.001",
        "--no-channels-last",
        "--seed",
        "0",
        "--no-progress",
        "--no-register",
    ]
    assert p.argv(p.members[-1])[-6:] == ["0.003", "--channels-last", "--seed", "1", "--no-progress", "--no-register"]
    assert p.color_by == "lr" and p.grid_keys == ("lr", "channels_last")
    assert plan(SweepConfig(grid=("exemplars-per-class=25,50",))).members[1].settings == {
        "exemplars_per_class": 50,
        "seed": 0,
    }
    assert plan(SweepConfig()).color_by == "seed" and plan(SweepConfig()).grid_keys == ()
    assert plan(SweepConfig(color_by="batch_size")).color_by == "batch_size"


@pytest.mark.parametrize(
    "grid, fixed, data_kw, match",
    [
        (("lr=fast",), (), {}, r"--grid lr=fast: 'fast' is not a valid float"),
        (("lr=0",), (), {}, r"--grid lr=0: 0.0 is not in the range x>0"),
        (("optimizer=adam,rmsprop",), (), {}, r"'rmsprop' is not one of 'adam', 'sgd'"),
        (("lrr=1e-3",), (), {}, r"no such dsc train option; did you mean lr\?"),
        (("seed=1,2",), (), {}, r"not a sweep key; list seeds with --seeds"),
        ((), ("experiment=x",), {}, r"pass --experiment to dsc sweep"),
        ((), ("resume=abc",), {}, r"not a sweep key"),
        ((), ("epochs",), {}, r"use KEY=VALUE"),
        (("lr=1e-3,1e-3",), (), {}, r"distinct"),
        (("epochs=2,3",), ("epochs=4",), {}, r"--grid epochs: also a fixed setting"),
        ((), ("image-size=16",), {"image_size": 32}, r"--image-size is given too"),
        ((), ("epochs=1", "epochs=2"), {}, r"epochs is given twice"),
        (("kernel-size=3,4",), (), {}, r"sweep member kernel_size=4 seed=0: kernel_size must be a positive odd"),
        ((), ("data=imagenet",), {}, r"sweep member seed=0: --data 'imagenet'"),
    ],
)
def test_plan_refuses_bad_keys_and_values(grid, fixed, data_kw, match):
    with pytest.raises(ConfigError, match=match):
        plan(SweepConfig(grid=grid, fixed=fixed), data_kw)


def test_bad_sweep_is_one_error_line_and_no_run(store):
    res = CliRunner().invoke(main, ["sweep", "--seeds", "0,1", "--grid", "dropout=0.2,1.5"])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == ["error: --grid dropout=1.5: 1.5 is not in the range 0<=x<1."]
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def sweep_runs(sweep_id):
    return mlflow.search_runs(
        search_all_experiments=True, output_format="list", filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_id}'"
    )


@pytest.mark.slow
def test_sweep_trains_every_member_then_compares_exactly_them(store, tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "sweep",
            "--identities",
            "3",
            "--image-size",
            "16",
            "--seeds",
            "0,1",
            "--grid",
            "lr=1e-3,2e-3",
            "--set",
            f"hidden=32 epochs={EPOCHS}",
            "--parallel",
            "2",
            "--per-process",  # two processes of two members (one process each: the test below)
            "2",
            "--experiment",
            "sw",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    last = res.stdout.strip().splitlines()[-1]
    sweep_id, comparison = last.split()[1].rstrip(":"), last.split()[-2]
    assert last == f"sweep {sweep_id}: 4 runs; comparison run {comparison} finished"

    members = [r for r in sweep_runs(sweep_id) if r.data.tags["dsc.kind"] == "train"]
    assert sorted((r.data.params["lr"], r.data.params["seed"]) for r in members) == [
        ("0.001", "0"),
        ("0.001", "1"),
        ("0.002", "0"),
        ("0.002", "1"),
    ]
    client = MlflowClient()
    for run in members:
        p, tags = run.data.params, run.data.tags
        assert run.info.status == "FINISHED"
        assert (p["hidden"], p["epochs"], p["image_size"], p["identities"]) == ("32", str(EPOCHS), "16", "3")
        assert tags["dsc.sweep_member"] == f"lr={float(p['lr'])} seed={p['seed']}"
        assert run.info.run_name == f"sweep-{sweep_id} {tags['dsc.sweep_member']}"
        assert mlflow.get_experiment(run.info.experiment_id).name == "sw"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "acc/val")] == list(range(EPOCHS + 1))
        assert "lld/r2_1" in run.data.metrics  # written back by the comparison

    comp = client.get_run(comparison)
    assert comp.data.tags["dsc.kind"] == "compare" and comp.data.tags[SWEEP_TAG] == sweep_id
    assert comp.data.params["color_by"] == "lr" and comp.data.metrics["lld/n_runs"] == 4
    assert comp.data.params["group_by"] == "lr"  # the seeds are each lr's replicates
    groups = mlflow.artifacts.load_dict(f"runs:/{comparison}/groups/table.json")
    assert {(g["group"], g["n_runs"]) for g in groups} == {("lr=0.001", 2), ("lr=0.002", 2)}
    assert mlflow.get_experiment(comp.info.experiment_id).name == "sw"
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=comparison, artifact_path="lld/runs.json", dst_path=str(tmp_path)
    )
    with open(downloaded) as f:
        runs_json = json.load(f)
    assert sorted(runs_json["compared"]) == sorted(r.info.run_id for r in members)


@pytest.mark.slow
def test_a_failed_member_fails_the_sweep_and_the_others_are_kept(store):
    res = CliRunner().invoke(
        main,
        [
            "sweep",
            "--identities",
            "3",
            "--image-size",
            "16",
            "--grid",
            "lr=1e-3,1e8",
            "--set",
            "epochs=1 hidden=32 snapshot-every=0",
            "--no-progress",
        ],
    )
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    runs = {r.data.params["lr"]: r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert sorted(runs) == ["0.001", "100000000.0"]  # no comparison run
    bad, good = runs["100000000.0"], runs["0.001"]
    assert bad.info.status == "FAILED" and good.info.status == "FINISHED"
    assert f"1 of 2 runs failed: run {bad.info.run_id} (lr=100000000.0 seed=0): " in errors[0]
    assert "diverged" in errors[0] or "non-finite" in errors[0]
    assert f"kept: 1 finished run(s) (tag {SWEEP_TAG} = " in errors[0]


def test_the_sweep_reads_the_settings_not_the_command_line():
    """Keys and types come from dsc.settings: importing the sweep imports neither click nor dsc.cli."""
    code = "import sys, dsc.jobs.sweep; print(sorted(m for m in ('click', 'dsc.cli') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_members_sharing_a_process_match_members_in_processes_of_their_own(store):
    from served import histories

    common = [
        "sweep",
        "--identities",
        "2",
        "--image-size",
        "16",
        "--seeds",
        "0,1",
        "--parallel",
        "1",
        "--set",
        "epochs=2 hidden=32 snapshot-every=0 checkpoint-every=2",
        "--no-progress",
    ]
    for experiment, extra in (("shared", ["--per-process", "2"]), ("own", [])):
        res = CliRunner().invoke(main, [*common, "--experiment", experiment, *extra])
        assert res.exit_code == 0, res.output
    client = MlflowClient()

    def members(experiment):
        runs = mlflow.search_runs(
            experiment_names=[experiment], output_format="list", filter_string="tags.`dsc.kind` = 'train'"
        )
        return {r.data.params["seed"]: r.info.run_id for r in runs}

    shared, own = members("shared"), members("own")
    assert sorted(shared) == sorted(own) == ["0", "1"]
    for seed in shared:
        a, b = histories(shared[seed]), histories(own[seed])
        assert a == b and "train/steps" in a and "prob_class/face1" in a
        wa, wb = (
            torch.load(
                mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="checkpoints/epoch_0002.pt"),
                weights_only=True,
            )["model_state"]
            for rid in (shared[seed], own[seed])
        )
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert client.get_run(shared[seed]).data.params["register"] == "False"
    assert client.search_registered_models() == []  # members skip the registry unless --register


def test_per_process_is_for_the_local_engine():
    with pytest.raises(ConfigError, match="--per-process applies to --engine local only"):
        plan(SweepConfig(engine="ray", per_process=2))
