"""Page assembly: one self-contained HTML file from plain data.

All text goes through Jinja2 with autoescaping, so a class name or a config string such as
``<script>`` shows as text; the only unescaped pieces are the page's own CSS and JavaScript (read
from ``templates/``) and JSON data blocks, whose ``<``, ``>`` and ``&`` are written as ``\\u003c``
etc. so no string can close the block. Images are embedded as ``data:`` URIs. A Content Security
Policy forbids every network fetch and lets only the page's own script run (by its hash).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


def data_uri(path: Path) -> str:
    path = Path(path)
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def script_json(obj: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


@dataclass
class Figure:
    src: str  # a data: URI
    caption: str = ""
    path: str = ""  # where it came from, relative to the run folder


@dataclass
class Table:
    """Cells are plain values, or dicts ``{"text": ..., "cls": css class, "href": link}``."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    collapsed: bool = False  # long tables start folded

    def __post_init__(self) -> None:
        self.rows = [[_cell(c) for c in row] for row in self.rows]


NUMERIC = re.compile(r"^[+-]?[\d,]*\.?\d+(e[+-]?\d+)?%?$")


def _cell(c: Any) -> dict[str, Any]:
    if isinstance(c, dict):
        return {"text": fmt(c.get("text", "")), "cls": c.get("cls", ""), "href": c.get("href", "")}
    text = fmt(c)
    number = (isinstance(c, (int, float)) and not isinstance(c, bool)) or (isinstance(c, str) and NUMERIC.match(c))
    return {"text": text, "cls": "num" if number else "", "href": ""}


def fmt(v: Any) -> str:
    """Numbers as people read them: integers with separators, floats with 4 significant digits."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "NaN"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v) if len(v) <= 16 else ", ".join(fmt(x) for x in v[:16]) + ", ..."
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def pct(v: Any) -> str:
    return "" if v is None else f"{100 * float(v):.2f}%"


@dataclass
class Section:
    """One titled part of the page: text, tables, figures, free notes."""

    id: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pre: str = ""  # preformatted text (config files)
    params: list[tuple[str, str]] = field(default_factory=list)
    cls: str = ""  # "analysis": figures shown pixel-exact (kernels and small images)
    alerts: list[str] = field(default_factory=list)  # shown prominently: the section shows stale results


@functools.cache
def _asset(name: str) -> str:
    return resources.files("convlens.report").joinpath("templates", name).read_text(encoding="utf-8")


@functools.cache
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: _asset(name)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(**context: Any) -> str:
    """The report page; ``context`` feeds ``templates/report.html.j2``."""
    js = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    csp = (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            css=Markup(_asset("report.css")),
            js=Markup(js),
            csp=csp,
            script_json=script_json,
            pct=pct,
            fmt=fmt,
            **context,
        )
    )
