"""`dsc --help` and every `dsc COMMAND --help` answer without importing torch, mlflow or matplotlib."""

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from dsc.cli import main

HEAVY = ("torch", "mlflow", "matplotlib")
PROBE = """
import json, sys
from click.testing import CliRunner
from dsc.cli import main
res = CliRunner().invoke(main, json.loads(sys.argv[1]))
print(json.dumps({"code": res.exit_code, "out": res.output,
                  "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


@pytest.mark.parametrize(
    "args", [["--help"], *([name, "--help"] for name in sorted(main.commands))], ids=lambda args: " ".join(args)
)
def test_help_imports_nothing_heavy(args):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["code"] == 0 and "Usage:" in got["out"], got["out"]
    assert got["heavy"] == [], f"dsc {' '.join(args)} imported {got['heavy']}"


# Each would cost a training process seconds of imports for nothing it uses (a sweep member
# pays them once a process); registering the model loads no Lightning (mlflow.pytorch would).
UNNEEDED_BY_TRAINING = ("torchvision", "lmfit", "matplotlib", "sklearn.decomposition", "ray")
UNNEEDED_BY_REGISTERING = ("pytorch_lightning", "lightning", "torchmetrics")


@pytest.mark.slow
def test_training_loads_no_library_it_does_not_use(store):
    args = ["train", "--identities", "2", "--image-size", "32", "--hidden", "32", "--epochs", "1"]
    args += ["--snapshot-every", "0", "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(UNNEEDED_BY_TRAINING + UNNEEDED_BY_REGISTERING)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["code"] == 0, got["out"]
    assert len(MlflowClient().search_model_versions()) == 1  # the model was registered
    assert got["heavy"] == [], f"dsc train imported {got['heavy']}"
