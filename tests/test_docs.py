"""The documentation: the site builds strictly and offline, and what it says matches the code.

The site is built once (``mkdocs build --strict`` into a temporary folder, with every proxy
pointed at a closed port so that a plugin that downloads fails the build); the generated command
reference is read back from its HTML. The rest reads the sources: the README's length and the
figures it quotes, the API table's signatures against the code, docstrings present and free of
measurements, which go stale where they are not measured (they belong on the benchmark page).
"""

from __future__ import annotations

import ast
import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dsc.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "dsc"
README = ROOT / "README.md"
BENCHMARKS = DOCS / "benchmarks.md"
MAX_README_LINES = 200

# A measured figure: a duration, a rate or a speed-up ratio ("2.19 s", "546 images/s", "9.48x").
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:\s?(?:ms|us|µs|s|min)\b|\s?(?:images|runs|epochs)/s\b|x\b)")
# Words that date a figure: it compares with another time or another version of the code.
DATED = re.compile(
    r"\b(before|earlier|previous(?:ly)?|formerly|used to|at first|the day|that morning|"
    r"yesterday|an hour|same day|this day|that day|last week)\b",
    re.I,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"  # nothing listens there: any download fails at once
    env = {
        **os.environ,
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
        "NO_MKDOCS_2_WARNING": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


@pytest.mark.slow
def test_site_builds_strictly_offline_with_every_page(site):
    nav_pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert len(nav_pages) >= 18  # every page of the nav, not a truncated reading of it
    for page in nav_pages:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.exists(), f"{page} was not built"
    text = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text


def _commands(group: click.Group, prefix: str = "dsc"):
    for name, cmd in group.commands.items():
        if cmd.hidden:  # internal commands (a sweep's batch of members) have no reference section
            continue
        yield f"{prefix} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix} {name}")


@pytest.mark.parametrize(("path", "command"), list(_commands(main)), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_is_in_the_generated_reference(site, path, command):
    page = html.unescape((site / "reference" / "cli" / "index.html").read_text())
    anchor = f'id="{path.replace(" ", "-")}"'
    assert anchor in page, f"{path} has no section in the command reference"
    start = page.index(anchor)
    following = [page.find(f'id="dsc-{other}"', start + 1) for other in main.commands]
    section = page[start : min([i for i in following if i > 0], default=len(page))]
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts + param.secondary_opts:
                assert opt in section, f"{path}: {opt} is missing from the command reference"


def test_readme_is_short_and_quotes_only_the_benchmark_pages_figures():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README has {len(lines)} lines (at most {MAX_README_LINES})"
    bench = BENCHMARKS.read_text()
    for line in lines:
        for figure in MEASURED.findall(line):
            assert figure in bench, f"README quotes {figure!r}, which the benchmark page does not hold"


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    assert "uv run mlflow run . --env-manager local" in text and "\nuv run pytest " in text
    assert "uv run mkdocs serve" in text


def _pages() -> list[Path]:
    """The README and the site's pages but the two that hold dated figures by design: the
    benchmark page dates each row in its own column, and the changelog is history."""
    return [README, *(p for p in sorted(DOCS.rglob("*.md")) if p not in (BENCHMARKS, DOCS / "changelog.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_holds_a_dated_measurement(page):
    dated = [
        f"{page.name}:{i}: {line.strip()}"
        for i, line in enumerate(page.read_text().splitlines(), 1)
        if MEASURED.search(line) and DATED.search(line)
    ]
    assert not dated, "dated measurements (they belong on the benchmark page):\n" + "\n".join(dated)


def test_every_benchmark_row_carries_command_date_commit_and_machine():
    rows = [r for r in BENCHMARKS.read_text().splitlines() if r.startswith("| `")]
    assert len(rows) >= 8
    machines = set(re.findall(r"^\*\*Machine (\w+)\*\*", BENCHMARKS.read_text(), re.M))
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        command, _what, result, date, commit, machine = cells
        assert command.startswith("`") and ("uv run" in command), row
        assert MEASURED.search(result) or re.search(r"\d", result), row
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), row
        assert re.fullmatch(r"`[0-9a-f]{7,40}`", commit), row
        assert machine in machines, f"{row}: machine {machine!r} is not described on the page"


def _api_rows() -> list[tuple[str, list[str], str]]:
    """(module, names, what) for each row of the API page's table."""
    out = []
    for line in (DOCS / "reference" / "api.md").read_text().splitlines():
        m = re.match(r"\| `from ([\w.]+) import ([\w, ]+)` \| (.*) \|$", line)
        if m:
            out.append((m[1], [n.strip() for n in m[2].split(",")], m[3]))
    return out


def _documented_signatures(what: str) -> dict[str, str]:
    """``name(params)`` written in a table cell, by name."""
    return {m[1]: m[2] for m in re.finditer(r"`(\w+)\(([^`]*?)\)(?: -> [^`]*)?`", what)}


def _parameters(text: str) -> list[tuple[str, str | None]]:
    params = []
    for part in filter(None, (p.strip() for p in re.split(r",(?![^(]*\))", text))):
        name, _, default = part.partition("=")
        params.append((name.strip(), default.strip() or None))
    return params


@pytest.mark.parametrize(
    ("module", "names", "what"), _api_rows(), ids=lambda v: v if isinstance(v, str) and "." in v else ""
)
def test_api_table_matches_the_code(module, names, what):
    mod = importlib.import_module(module)
    documented = _documented_signatures(what)
    for name in names:
        obj = getattr(mod, name)  # a name the table promises must import
        if name not in documented:
            continue
        signature = inspect.signature(obj)
        actual = [
            (p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in signature.parameters.values()
        ]
        written = [(n, None if d is None else repr(ast.literal_eval(d))) for n, d in _parameters(documented[name])]
        assert written == actual, f"{module}.{name}: the table says {written}, the code has {actual}"


def test_api_table_lists_every_import_the_page_renders():
    rendered = set(re.findall(r"^::: ([\w.]+)$", (DOCS / "reference" / "api.md").read_text(), re.M))
    listed = {f"{module}.{name}" for module, names, _ in _api_rows() for name in names}
    assert rendered <= listed | {f"dsc.settings.{n}" for n in ("DataConfig", "ModelConfig", "TrainConfig")}
    assert listed <= rendered, f"in the table but not rendered: {sorted(listed - rendered)}"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def _docstrings(tree: ast.Module):
    """(first line number, text) of every docstring in a module."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc


def test_every_public_function_and_class_has_a_docstring():
    missing = {
        f"{name}:{node.name}"
        for name, tree in _modules()
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and not node.name.startswith("_")
        and not ast.get_docstring(node)
    }
    assert not missing, f"public definitions without a docstring: {sorted(missing)}"


def test_no_docstring_quotes_a_measurement():
    quoted = [
        f"{name}:{lineno + i}: {line.strip()}"
        for name, tree in _modules()
        for lineno, doc in _docstrings(tree)
        for i, line in enumerate(doc.splitlines())
        if MEASURED.search(line)
    ]
    assert not quoted, "docstrings that quote measurements (cite the benchmark page instead):\n" + "\n".join(quoted)


def test_metric_table_is_read_from_the_code():
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        tables = importlib.import_module("tables")
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    metrics, artifacts = tables.collect()
    # names the ARCHITECTURE's layout promises, each found where the code writes it
    for name, module in [
        ("acc/<split>", "dsc.core.scores"),
        ("prob_class/<name>", "dsc.core.scores"),
        ("alpha/<layer>", "dsc.core.snapshot_files"),
        ("cka/<a>-<layers>", "dsc.core.snapshot_files"),
        ("nc/<layer>/<k>", "dsc.jobs.analyze.collapse"),
        ("lld/n_components", "dsc.jobs.compare"),
        ("transition_epoch", "dsc.jobs.analyze.steps"),
    ]:
        assert module in metrics.get(name, set()), (name, sorted(metrics))
    assert {"checkpoints/", "images/", "analysis/", "model/", "model-best/"} <= set(artifacts)
    assert not any(" " in m for m in metrics), "a message was taken for a metric name"


def test_sweep_page_names_every_reserved_key():
    from dsc.jobs.sweep.members import RESERVED

    page = (DOCS / "guide" / "sweeps.md").read_text()
    for key in RESERVED:
        assert f"`{key.replace('_', '-')}`" in page, f"the sweeps page does not say why {key!r} cannot be swept"
