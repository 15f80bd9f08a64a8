"""MLproject entry points agree with the command line they call."""

from pathlib import Path

import pytest
import yaml

from dsc.cli import SWEEP_CONFIGS, main
from dsc.settings import (
    TRAIN_CONFIGS,
    AnalyzeConfig,
    CompareConfig,
    SnapshotConfig,
    options_of,
)

SPEC = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())


@pytest.mark.parametrize("entry", sorted(SPEC["entry_points"]))
def test_entry_point_defaults_match_the_cli(entry):
    ep = SPEC["entry_points"][entry]
    command = ep["command"].split()
    sub = main.commands[command[3]]  # python -m dsc <command>
    options = {opt.lstrip("-").replace("-", "_"): p for p in sub.params for opt in p.opts}
    for name, spec in ep.get("parameters", {}).items():
        assert f"{{{name}}}" in ep["command"], f"{entry}: parameter {name} is not used"
        assert name in options, f"{entry}: no option --{name.replace('_', '-')}"
        default = options[name].default
        if type(default).__name__ == "Sentinel":  # click's "no default" marker
            default = None
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(spec["default"]) == pytest.approx(float(default)), name
        elif default is not None and not isinstance(default, (tuple, list)):
            assert str(spec["default"]) == str(default), name


# Entry point -> the configs whose settings its parameters are, and its parameters that are not
# settings (a job's own arguments).
ENTRY_SETTINGS = {
    "main": (TRAIN_CONFIGS, False, set()),
    "train": (TRAIN_CONFIGS, False, set()),
    "resume": ((), False, set()),
    "register": ((), False, {"run_id", "epoch", "name", "alias"}),
    "snapshot": ((SnapshotConfig,), True, {"run_id", "prefix"}),
    "compare": ((CompareConfig,), False, set()),
    "analyze": ((AnalyzeConfig,), False, {"run_id", "experiment"}),
    "sweep": (SWEEP_CONFIGS, False, set()),
}
MLPROJECT_TYPES = {int: "int", float: "float", str: "string", tuple: "string"}


def test_every_entry_point_is_checked_against_the_settings():
    assert set(ENTRY_SETTINGS) == set(SPEC["entry_points"])


@pytest.mark.parametrize("entry", sorted(ENTRY_SETTINGS))
def test_entry_point_parameters_are_the_declared_settings(entry):
    """Names, types and defaults of MLproject's parameters follow dsc.settings."""
    classes, by_field, own = ENTRY_SETTINGS[entry]
    settings = options_of(*classes, by_field=by_field)
    for name, spec in SPEC["entry_points"][entry].get("parameters", {}).items():
        if name in own:
            continue
        assert name in settings, f"{entry}: parameter {name} is no setting of {[c.__name__ for c in classes]}"
        opt = settings[name]
        assert spec["type"] == MLPROJECT_TYPES[opt.kind], f"{entry}: {name} is declared {opt.kind.__name__}"
        if opt.kind in (int, float):
            assert float(spec["default"]) == pytest.approx(opt.default), f"{entry}: {name}"
        elif opt.kind is tuple:
            text = str(spec["default"])
            assert (opt.spec.parse(text) if opt.spec.parse else tuple(filter(None, [text]))) == opt.default, name
        else:
            assert str(spec["default"]) == opt.default, f"{entry}: {name}"
