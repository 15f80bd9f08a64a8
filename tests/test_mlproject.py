"""MLproject entry points agree with the command line they call."""
from pathlib import Path

import pytest
import yaml

from dsc.cli import main

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
