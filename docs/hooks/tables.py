"""MkDocs hook: tables read from the code, so the site cannot drift from it.

- ``<!-- dsc-names -->``: the metric names and artifact paths dsc writes, with the modules that
  write them;
- ``<!-- dsc-layers -->``: what each layer may import, as ``tests/test_layout.py`` holds it.

A page holding one of these lines gets its table in its place. The table is read from
``dsc/`` itself, by walking every module's syntax tree: each string or f-string that names a
metric (``family/rest``, used as a key of the metrics a function returns or logs) or an artifact
path (a name with a file suffix, or a module constant ending in ``_DIR``), with the module that
defines it. An f-string's fields show as ``<field>``; the spectral families of
``dsc.core.snapshot.METRIC_PREFIX`` are expanded. Nothing is copied by hand, so the table follows
the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

MARKER = "<!-- dsc-names -->"
LAYERS_MARKER = "<!-- dsc-layers -->"
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dsc"
# A metric: a lower-case family, a slash, the rest (no spaces, no file suffix).
_METRIC = re.compile(r"^[a-z][a-z0-9_]*/[A-Za-z0-9_<>{}/.:-]+$")
_ARTIFACT = re.compile(r"^[a-z][a-z0-9_]*/[A-Za-z0-9_<>{}/.+-]*\.(npz|pt|png|csv|json|html|gif|txt)$")
_SUFFIX = re.compile(r"\.(npz|pt|png|csv|json|html|gif|txt|py|db)$")
# Strings of that shape that are not metric names.
_NOT_METRICS = ("http", "sqlite", "models:", "mlflow", "dsc/", "tests/", "docs/", "bench/", "deploy/")
_ALONE = {"transition_epoch"}  # metrics without a family, logged by analyze


def _pattern(node: ast.AST) -> str | None:
    """The text of a string or f-string, its fields as ``<name>``; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                inner = value.value if isinstance(value, ast.FormattedValue) else value
                if isinstance(inner, ast.Subscript) and isinstance(inner.slice, ast.Constant):
                    name = str(inner.slice.value)  # t['quantity'] -> <quantity>
                else:
                    name = ast.unparse(inner).split("[")[0].split(".")[-1].strip("'\"()")
                parts.append(f"<{name}>")
        return "".join(parts)
    return None


def _keys(tree: ast.AST):
    """Strings used as metric keys: dict keys, dict-comprehension keys, subscript targets,
    ``log_metric``'s name, and f-strings of a metric's shape wherever they stand."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield node
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "log_metric"
            and node.args
        ):
            yield node.args[0]
        if isinstance(node, ast.Dict):
            yield from (k for k in node.keys if k is not None)
        elif isinstance(node, ast.DictComp):
            yield node.key
        elif isinstance(node, ast.Assign):
            yield from (t.slice for t in node.targets if isinstance(t, ast.Subscript))


def _strings(tree: ast.AST):
    """The text of every string and f-string in ``tree``."""
    for node in ast.walk(tree):
        text = _pattern(node)
        if text is not None:
            yield text


def _prefixes(tree: ast.AST) -> list[str]:
    """The values of a module-level ``METRIC_PREFIX`` dict, if the module has one."""
    for node in tree.body:  # type: ignore[attr-defined]
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == "METRIC_PREFIX" for t in node.targets)
        ):
            return [v.value for v in node.value.values if isinstance(v, ast.Constant)]
    return []


def collect(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Metric patterns and artifact paths, each with the modules that write it."""
    metrics: dict[str, set[str]] = {}
    artifacts: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(), str(path))
        prefixes = _prefixes(tree)
        for node in _keys(tree):
            text = _pattern(node)
            if text is None or text.startswith(_NOT_METRICS) or _SUFFIX.search(text):
                continue
            if _METRIC.match(text.replace("<prefix>", "p")) or text in _ALONE:
                names = [text.replace("<prefix>", p) for p in prefixes] if "<prefix>" in text else [text]
                for name in names:
                    metrics.setdefault(name, set()).add(module)
        for text in _strings(tree):
            if _ARTIFACT.match(text) and not text.startswith(_NOT_METRICS):
                artifacts.setdefault(text, set()).add(module)
        for node in tree.body:  # type: ignore[attr-defined]
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id.endswith("_DIR") for t in node.targets)
            ):
                artifacts.setdefault(node.value.value + "/", set()).add(module)
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id.endswith("_FMT") for t in node.targets)
            ):
                artifacts.setdefault(node.value.value.replace("{:04d}", "EEEE"), set()).add(module)
        for node in ast.walk(tree):  # models: log_and_register(model, "model", ...)
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "log_and_register"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                artifacts.setdefault(f"{node.args[1].value}/", set()).add(module)
    return metrics, artifacts


def table(package: Path = PACKAGE) -> str:
    """The markdown table of every metric name and artifact path, sorted by kind and name."""
    metrics, artifacts = collect(package)
    rows = ["| kind | name | written by |", "|---|---|---|"]
    for kind, names in (("metric", metrics), ("artifact", artifacts)):
        for name in sorted(names):
            shown = name.replace("|", "\\|")
            where = ", ".join(f"`{m}`" for m in sorted(names[name]))
            rows.append(f"| {kind} | `{shown}` | {where} |")
    return "\n".join(rows)


def layers(test: Path = ROOT / "tests" / "test_layout.py") -> str:
    """The markdown table of the layout test's ``ALLOWED``: each layer and what it may import."""
    for node in ast.parse(test.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ALLOWED" for t in node.targets):
            allowed = ast.literal_eval(node.value)
            break
    else:
        raise ValueError(f"{test} has no ALLOWED table")
    rows = ["| layer | may import from dsc |", "|---|---|"]
    for name, deps in allowed.items():
        rows.append(f"| `{name}` | {', '.join(f'`{d}`' for d in sorted(deps)) or 'nothing'} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    """MkDocs event: put each table where a page asks for it."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, table())
    if LAYERS_MARKER in markdown:
        markdown = markdown.replace(LAYERS_MARKER, layers())
    return markdown
