"""The package's layout holds: a light science core, no import cycles, short modules, layers.

Imports are read from the source (every ``import`` statement, also those inside functions, since
a function-level import is still a dependency); the core's lightness is checked in a fresh
interpreter, where what a module really loads shows in ``sys.modules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dsc"
MAX_LINES = 400
HEAVY = ("torch", "mlflow", "matplotlib", "click")
# What each layer may import from dsc (itself always). Arrows point down only.
ALLOWED = {
    "errors": set(),
    "settings": {"errors"},
    "core": {"errors"},
    "data": {"core", "errors", "settings"},
    "nn": {"core", "data", "errors", "settings"},
    "figures": {"core", "errors"},
    "tracking": {"core", "data", "errors", "settings"},
    "jobs": {"core", "data", "nn", "figures", "tracking", "errors", "settings"},
    "integrations": {"jobs", "errors"},  # adapters of the recorder to frameworks (Lightning)
    "cli": {"errors", "settings", "jobs"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The dsc modules that module ``name`` imports (a package's ``__init__`` counts as the package)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "dsc")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.split(".")[0] != "dsc":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in MODULES else base)
    out.discard(name)
    return {m for m in out if m in MODULES}


def layer(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_modules_are_read():
    # the walk finds the layout itself: a guard against a test that checks nothing
    assert {"dsc.core.lld", "dsc.nn.model", "dsc.tracking.store", "dsc.cli", "dsc.settings"} <= set(MODULES)
    assert "dsc.core.snapshot" in imports_of("dsc.tracking.snapshot")


@pytest.mark.slow
def test_core_loads_no_heavy_library():
    """Every core module imports in an interpreter where the heavy libraries cannot be imported.

    lmfit imports matplotlib if it can (for its optional plots) and works without it, so the
    libraries are blocked rather than looked for in ``sys.modules`` afterwards: a core module
    that needs one of them fails to import here.
    """
    core = sorted(m for m in MODULES if m.startswith("dsc.core."))
    code = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {HEAVY!r}: raise ImportError(f'blocked: {{name}}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        f"assert not set({HEAVY!r}) & {{k.split('.')[0] for k in sys.modules}}\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1]
    assert len(core) >= 7


def test_no_import_cycle():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_import_only_downwards():
    wrong = sorted(
        f"{m} imports {n}"
        for m in MODULES
        for n in imports_of(m)
        if layer(n) != layer(m) and layer(n) not in ALLOWED[layer(m)]
    )
    assert wrong == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_at_most_400_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines; split it along its seams"


def test_package_docstring_names_every_module():
    import dsc

    doc = dsc.__doc__ or ""
    missing = [m for m in MODULES if m != "dsc" and not m.endswith("__main__") and f"`{m[4:]}`" not in doc]
    assert missing == [], f"dsc/__init__.py's map lacks {missing}"
