"""One self-contained HTML page: a run's header (params, final metrics) and figures inline.

Every figure is embedded as base64 (PNG, or GIF for the animation), so the page opens from the
MLflow UI's artifact view or from disk with nothing beside it. Text is escaped with
`html.escape`; the page is built from small string templates, no template engine.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .cols { display: flex; gap: 2em; flex-wrap: wrap; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .note { color: #a33; }
"""


@dataclass(frozen=True)
class Image:
    """One figure: file name, caption, the encoded bytes and their MIME type."""

    name: str
    caption: str
    data: bytes
    mime: str = "image/png"


@dataclass(frozen=True)
class Section:
    """A titled part of the report: a paragraph, key-value rows, then figures."""

    title: str
    text: str = ""
    rows: Mapping[str, object] = field(default_factory=dict)
    images: Sequence[Image] = ()
    note: str = ""  # shown in red: why a step was skipped


def _table(rows: Mapping[str, object], header: Sequence[str] = ()) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _image(img: Image) -> str:
    src = f"data:{img.mime};base64,{base64.b64encode(img.data).decode('ascii')}"
    return (
        f'<figure id="{html.escape(img.name)}"><img src="{src}" alt="{html.escape(img.name)}">'
        f"<figcaption>{html.escape(img.name)}: {html.escape(img.caption)}</figcaption></figure>"
    )


def _section(sec: Section) -> str:
    parts = [f"<h2>{html.escape(sec.title)}</h2>"]
    if sec.text:
        parts.append(f"<p>{html.escape(sec.text)}</p>")
    if sec.note:
        parts.append(f'<p class="note">{html.escape(sec.note)}</p>')
    parts.append(_table(sec.rows))
    parts.extend(_image(img) for img in sec.images)
    return "\n".join(parts)


def render(
    title: str,
    run: Mapping[str, object],
    params: Mapping[str, object],
    metrics: Mapping[str, object],
    sections: Sequence[Section],
) -> str:
    """The whole page as one string.

    Parameters
    ----------
    title : page heading
    run : run facts shown first (id, name, experiment, status, ...)
    params, metrics : the run's params and final metric values, shown side by side
    sections : in page order
    """
    header = (
        f'<div class="cols"><div><h3>Run</h3>{_table(run)}</div>'
        f"<div><h3>Final metrics</h3>{_table(metrics, ('metric', 'value'))}</div>"
        f"<div><h3>Params</h3>{_table(params, ('param', 'value'))}</div></div>"
    )
    body = "\n".join(_section(s) for s in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{header}\n{body}\n</body></html>\n"
    )
