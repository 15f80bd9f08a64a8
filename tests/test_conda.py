"""conda.yaml's pip section pins what uv.lock pins (it is exported from the lock)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def conda_pins() -> dict[str, set[str]]:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins: dict[str, set[str]] = {}
    for line in pip:
        requirement = line.split(";")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            pins.setdefault(canonical(name), set()).add(version.strip())
    return pins


def test_every_conda_pin_is_the_locked_version():
    locked: dict[str, set[str]] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(canonical(package["name"]), set()).add(package["version"])
    pins = conda_pins()
    assert len(pins) > 50
    wrong = {name: versions for name, versions in pins.items() if not versions <= locked.get(name, set())}
    assert wrong == {}, "re-export conda.yaml from uv.lock (see its header)"


def test_every_dependency_of_the_project_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {canonical(re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    assert names - set(conda_pins()) == set()
