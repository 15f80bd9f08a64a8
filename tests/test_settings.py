"""Settings declared once: the checks on construction and the command line agree."""

from __future__ import annotations

import click
import pytest

from dsc.cli import main
from dsc.errors import ConfigError, DataError
from dsc.settings import (
    TRAIN_CONFIGS,
    AnalyzeConfig,
    CompareConfig,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TrainConfig,
    build,
    options_of,
    parse_text,
)

TRAIN_OPTIONS = options_of(*TRAIN_CONFIGS)


def click_params(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}


@pytest.mark.parametrize(
    "command, classes",
    [
        ("train", TRAIN_CONFIGS),
        ("sweep", (DataConfig, SweepConfig)),
        ("compare", (CompareConfig,)),
        ("analyze", (AnalyzeConfig,)),
    ],
)
def test_every_declared_setting_is_an_option_with_its_default_and_help(command, classes):
    params = click_params(command)
    for name, opt in options_of(*classes).items():
        assert name in params, name
        default = params[name].default
        if opt.kind is tuple and opt.spec.parse:
            default = opt.spec.parse(default)
        assert default == opt.default and params[name].help == opt.spec.help, name


def bounds(opt):
    """Values on and just beyond each declared bound of a numeric setting."""
    step = 1 if opt.kind is int else 1e-9
    out = []
    for bound, sign in ((opt.spec.min, -1), (opt.spec.max, 1)):
        if bound is not None:
            out += [opt.kind(bound), opt.kind(bound + sign * step)]
    return out


@pytest.mark.parametrize("param", [p for p, o in TRAIN_OPTIONS.items() if o.spec.ranged])
def test_click_and_construction_draw_the_range_at_the_same_place(param):
    opt, click_opt = TRAIN_OPTIONS[param], click_params("train")[param]
    for value in bounds(opt):
        try:
            click_opt.type.convert(value, click_opt, None)
            by_click = True
        except click.BadParameter:
            by_click = False
        try:
            build([opt.owner], {param: value})
            built = True
        except (ConfigError, DataError):
            built = False
        assert by_click == built, (param, value)


TEXTS = [
    "3",
    "0",
    "-1",
    "1e-3",
    "0.5",
    "1.5",
    "fast",
    "",
    "yes",
    "no",
    "maybe",
    "adam",
    "rmsprop",
    "auto",
    "vgg11",
    "65537",
    "1024",
    "15",
]


@pytest.mark.parametrize("param", list(TRAIN_OPTIONS))
def test_sweep_values_are_refused_in_the_command_lines_own_words(param):
    """parse_text (click-free, used by the sweep) converts and refuses exactly as click does."""
    opt, click_opt = TRAIN_OPTIONS[param], click_params("train")[param]
    kind = click.BOOL if click_opt.is_bool_flag else click_opt.type
    for text in TEXTS:
        try:
            expected = kind.convert(text, click_opt, None)
        except click.BadParameter as exc:
            with pytest.raises(ConfigError) as got:
                parse_text(opt, text)
            assert str(got.value) == exc.message, (param, text)
        else:
            assert parse_text(opt, text) == expected, (param, text)


@pytest.mark.parametrize(
    "cls, kw, error, line",
    [
        (TrainConfig, {"lr": 0.0}, ConfigError, "--lr 0.0: must be > 0"),
        (TrainConfig, {"lr": float("inf")}, ConfigError, "--lr inf: must be a finite number"),
        (TrainConfig, {"epochs": 1.5}, ConfigError, "--epochs 1.5: must be an integer"),
        (
            TrainConfig,
            {"conv_kernel": "numba"},
            ConfigError,
            "--conv-kernel 'numba': must be one of 'auto', 'dsc', 'torch'",
        ),
        (ModelConfig, {"kernel_size": 4}, ConfigError, "kernel_size must be a positive odd int, got 4"),
        (ModelConfig, {"depth": 33}, ConfigError, "depth must be in 1..32, got 33"),
        (DataConfig, {"image_size": 8}, DataError, "--image-size 8: must be in 16..1024"),
        (
            DataConfig,
            {"data": "imagenet"},
            DataError,
            "--data 'imagenet': use 'synthetic', 'yale:PATH' or 'folder:PATH'",
        ),
        (CompareConfig, {"jobs": True}, ConfigError, "jobs must be an integer, got True"),
        (SweepConfig, {"parallel": 0}, ConfigError, "--parallel 0: must be an integer >= 1"),
        (SweepConfig, {"seeds": "1,1"}, ConfigError, "--seeds '1,1': seed 1 is listed twice"),
        (
            AnalyzeConfig,
            {"esd_epochs": "first"},
            ConfigError,
            "--esd-epochs 'first': use a comma list of epochs, e.g. 0,25,60",
        ),
    ],
)
def test_a_refused_value_is_one_line_with_the_value_and_the_rule(cls, kw, error, line):
    with pytest.raises(error) as got:
        cls(**kw)
    assert str(got.value) == line


def test_text_settings_are_parsed_on_construction():
    assert SweepConfig(seeds="0-2").seeds == (0, 1, 2)
    assert AnalyzeConfig(esd_epochs="0, 25,60").esd_epochs == (0, 25, 60)
    assert AnalyzeConfig(esd_epochs="") == AnalyzeConfig()


def test_build_takes_option_names_and_keeps_other_defaults():
    data, snap = build([DataConfig, TRAIN_CONFIGS[3]], {"image_size": 32, "snapshot_every": 0, "lr": 1.0})
    assert data == DataConfig(image_size=32) and snap.every == 0
    (snap,) = build([TRAIN_CONFIGS[3]], {"every": 2}, by_field=True)
    assert snap.every == 2
