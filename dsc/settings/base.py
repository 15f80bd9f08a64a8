"""How a setting is declared once: its default, type, range or choices and help.

A config is a frozen dataclass deriving from :class:`Settings` whose fields are made with
:func:`setting`. Construction checks every declared rule and raises one line naming the value
and what is allowed. The command line (``dsc.cli``, and so the command reference generated from
it, docs/reference/cli.md) and the sweep's key and value checks (``dsc.jobs.sweep``) are read
from the same declarations through :func:`options_of`. Imports nothing heavy (no torch, mlflow
or click).
"""

from __future__ import annotations

import functools
import math
import numbers
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from dsc.errors import ConfigError, DscError

OPTION_STYLE = "{label} {value!r}: {complaint}"  # "--lr 0.0: must be > 0"
FIELD_STYLE = "{name} {complaint}, got {value!r}"  # "dropout must be in [0, 1), got 1.0"
BOOL_STATES = {
    "1": True,
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "on": True,
    "0": False,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "off": False,
    "": False,
}  # click's BOOL states, "" (no value) included
SEED_MAX = 2**32 - 1  # NumPy's generators and scikit-learn's random_state take 0..2**32-1


def seed_range(seed: int) -> str | None:
    """A seed's complaint (a ``check``): outside 0..2**32-1, which every seeded library takes."""
    return None if 0 <= seed <= SEED_MAX else f"must be in 0..{SEED_MAX} (the seeds NumPy and scikit-learn take)"


@dataclass(frozen=True)
class Spec:
    """One setting's rules and help, kept in its dataclass field's metadata."""

    help: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # the range excludes min
    max_open: bool = False  # the range excludes max
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # a further rule on the value: the complaint, or None
    parse: Callable[[str], object] | None = None  # a tuple setting given as text (e.g. "0,1,2")
    cli: str | None = ""  # option name ("" = the field's with dashes; None = not an option)
    metavar: str | None = None

    @property
    def ranged(self) -> bool:
        return self.min is not None or self.max is not None


def setting(
    default: object,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    choices: Iterable[str] = (),
    check: Callable[[Any], str | None] | None = None,
    parse: Callable[[str], object] | None = None,
    cli: str | None = "",
    metavar: str | None = None,
):
    """A dataclass field carrying its default and every rule of the value (see :class:`Spec`)."""
    spec = Spec(help, min, max, min_open, max_open, tuple(choices), check, parse, cli, metavar)
    return field(default=default, metadata={"setting": spec})


def _interval(spec: Spec, kind: type) -> str:
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None:
        if kind is int and not (spec.min_open or spec.max_open):
            return f"in {lo}..{hi}"
        return f"in {'(' if spec.min_open else '['}{lo}, {hi}{')' if spec.max_open else ']'}"
    if lo is not None:
        return f"{'>' if spec.min_open else '>='} {lo}"
    return f"{'<' if spec.max_open else '<='} {hi}"


def _outside(spec: Spec, value) -> bool:
    """Whether a number lies outside the declared range (NaN lies inside: nothing is below it)."""
    below = spec.min is not None and (value <= spec.min if spec.min_open else value < spec.min)
    above = spec.max is not None and (value >= spec.max if spec.max_open else value > spec.max)
    return below or above


def complaint(spec: Spec, kind: type, value: object, say_type: bool = False) -> str | None:
    """What is wrong with ``value`` under ``spec`` ("must be ..."), or None when it is allowed."""
    noun = {int: "an integer", float: "a number"}.get(kind, "")
    if kind in (int, float):
        number = numbers.Integral if kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number):
            return f"must be {noun}"
        if kind is float and not math.isfinite(value):
            return "must be a finite number"
    if _outside(spec, value):
        return f"must be {noun + ' ' if say_type else ''}{_interval(spec, kind)}"
    if spec.choices and value not in spec.choices:
        return f"must be one of {', '.join(map(repr, spec.choices))}"
    return spec.check(value) if spec.check else None


class Settings:
    """Base of the config dataclasses: every declared rule is checked on construction.

    Class attributes choose how a refusal reads: ``_style`` (:data:`OPTION_STYLE`, naming the
    command-line option, or :data:`FIELD_STYLE`, naming the field), ``_say_type`` (whether a
    range names the type too: "an integer in 1..6") and ``_error`` (the exception raised).
    """

    _style: ClassVar[str] = OPTION_STYLE
    _say_type: ClassVar[bool] = False
    _error: ClassVar[type[DscError]] = ConfigError
    _title: ClassVar[str] = ""  # a heading for the config's options where they are listed by config
    if TYPE_CHECKING:  # every config is a dataclass (what dataclasses.fields asks of its argument)
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __post_init__(self) -> None:
        for opt in options_of(type(self), only_cli=False).values():
            value = getattr(self, opt.field)
            if opt.spec.parse and isinstance(value, str):
                value = opt.spec.parse(value)
                object.__setattr__(self, opt.field, value)  # frozen: normalised once, here
            why = complaint(opt.spec, opt.kind, value, self._say_type)
            if why:
                raise self._error(self._style.format(label=opt.flag, name=opt.field, value=value, complaint=why))

    def to_dict(self) -> dict:
        """Every field by name: what a checkpoint stores and a run logs."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Option:
    """A declared setting as the command line sees it."""

    owner: type  # the config class
    field: str  # the dataclass field
    kind: type  # int, float, str, bool or tuple
    default: object
    spec: Spec
    name: str  # the option without dashes, e.g. "snapshot-every"

    @property
    def param(self) -> str:
        """The command's parameter (and the run param it is logged as), e.g. ``snapshot_every``."""
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return f"--{self.name}"


def options_of(*classes: type, only_cli: bool = True, by_field: bool = False) -> dict[str, Option]:
    """The declared settings of config classes by parameter name, in declaration order.

    ``only_cli`` leaves out settings that are no option (``cli=None``); ``by_field`` names
    every option after its field (``dsc snapshot --every`` rather than ``--snapshot-every``).
    """
    out: dict[str, Option] = {}
    for cls in classes:
        for opt in _declared(cls, by_field):
            if only_cli and opt.spec.cli is None:
                continue
            if opt.param in out:
                raise TypeError(f"{cls.__name__}.{opt.field}: option {opt.flag} is declared twice")
            out[opt.param] = opt
    return out


@functools.cache
def _declared(cls: type, by_field: bool) -> tuple[Option, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is not None:
            kind = typing.get_origin(hints[f.name]) or hints[f.name]
            name = f.name.replace("_", "-") if by_field or not spec.cli else spec.cli
            out.append(Option(cls, f.name, kind, f.default, spec, name))
    return tuple(out)


def build(classes: Iterable[type], values: Mapping[str, object], by_field: bool = False) -> list:
    """Configs of ``classes`` from option values by parameter name (absent ones keep defaults)."""
    built = []
    for cls in classes:
        opts = options_of(cls, by_field=by_field).values()
        built.append(cls(**{o.field: values[o.param] for o in opts if o.param in values}))
    return built


def describe_range(spec: Spec) -> str:
    """The range as the command line writes it: ``x>0``, ``0<=x<1``, ``16<=x<=1024``."""
    if spec.min is None:
        return f"x{'<' if spec.max_open else '<='}{spec.max}"
    if spec.max is None:
        return f"x{'>' if spec.min_open else '>='}{spec.min}"
    return f"{spec.min}{'<' if spec.min_open else '<='}x{'<' if spec.max_open else '<='}{spec.max}"


def parse_text(opt: Option, text: str) -> object:
    """A setting's value from command-line text, refused in the command line's own words.

    The words are those of click's ``IntRange``, ``FloatRange``, ``Choice`` and ``BOOL``
    (``tests/test_settings.py`` holds them equal), so a value refused by ``--set`` reads as it
    would on ``dsc train``. Raises :class:`ConfigError` with that message.
    """
    spec = opt.spec
    if opt.kind is bool:
        if text.strip().lower() not in BOOL_STATES:
            raise ConfigError(f"{text!r} is not a valid boolean. Recognized values: {', '.join(sorted(BOOL_STATES))}")
        return BOOL_STATES[text.strip().lower()]
    if opt.kind in (int, float):
        name = {int: "integer", float: "float"}[opt.kind] + (" range" if spec.ranged else "")
        try:
            value = opt.kind(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not a valid {name}.") from None
        if _outside(spec, value):
            raise ConfigError(f"{value} is not in the range {describe_range(spec)}.")
        return value
    if spec.choices and text not in spec.choices:
        listed = ", ".join(map(repr, spec.choices))
        raise ConfigError(
            f"{text!r} is not one of {listed}." if len(spec.choices) > 1 else f"{text!r} is not {listed}."
        )
    return text
