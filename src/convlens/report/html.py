"""Page assembly: one HTML file from plain data.

All text goes through Jinja2 with autoescaping, so a class name or a config string such as
``<script>`` shows as text; the only unescaped pieces are the page's own CSS and JavaScript (read
from ``templates/``) and JSON data blocks, whose ``<``, ``>`` and ``&`` are written as ``\\u003c``
etc. so no string can close the block. Images are linked by their path relative to the page, and
load when they are looked at (``loading="lazy"``, folded sections, the filter browser's pick), so
a network of thousands of filters opens as fast as a small one; that is inside
:func:`linked_images`, which the report uses by default. Outside it they are ``data:`` URIs, one
self-contained file to share. A Content Security Policy
forbids every network fetch (images come from the page's own folder or the file itself) and lets
only the page's own script run (by its hash).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import urllib.parse
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from markupsafe import Markup

MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


# The folder of the page being written, whose images are linked relative to it; None: embedded.
_PAGE: ContextVar[Path | None] = ContextVar("page_folder", default=None)


@contextlib.contextmanager
def linked_images(page: Path) -> Iterator[None]:
    """Inside, :func:`image_src` links images relative to the page file ``page``."""
    token = _PAGE.set(Path(page).resolve().parent)
    try:
        yield
    finally:
        _PAGE.reset(token)


def embedding() -> bool:
    """Whether the page being written embeds its images (the default outside :func:`linked_images`)."""
    return _PAGE.get() is None


def image_src(path: Path) -> str:
    """What an ``<img src>`` of the page being written says for the image file ``path``: its path
    relative to the page (a file on another drive, or outside :func:`linked_images`: embedded)."""
    folder = _PAGE.get()
    if folder is not None:
        try:
            rel = os.path.relpath(Path(path).resolve(), folder)
        except ValueError:  # another drive (Windows): no relative path
            return data_uri(path)
        return urllib.parse.quote(Path(rel).as_posix())
    return data_uri(path)


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
    src: str  # image_src: a path relative to the page, or a data: URI
    caption: str = ""
    path: str = ""  # where it came from, relative to the run folder
    group: str = ""  # figures of one group (a layer) fold together
    width: int | None = None  # the image's size in pixels, so the page is laid out before it loads
    height: int | None = None


def figure(path: Path, caption: str = "", rel: str = "", group: str = "") -> Figure:
    """The figure of the image file ``path`` as the page being written shows it (see
    :func:`image_src`), with its pixel size when it is a PNG."""
    size = png_size(path)
    return Figure(image_src(path), caption, rel, group, *(size or (None, None)))


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's header (its IHDR chunk), without decoding it; None for another file."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


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
    """Numbers as people read them: integers with thousands separators, floats with 4 significant
    digits (from 1,000 on: whole, with separators, never ``1.295e+04``)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if abs(v) >= 1e15 or v in (float("inf"), float("-inf")):
            return f"{v:.3e}"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v) if len(v) <= 16 else ", ".join(fmt(x) for x in v[:16]) + ", ..."
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


# keys whose numbers are shares of something (accuracies, shares of the errors): shown in percent
SHARE = re.compile(r"(^|_)(acc|accuracy|share|fraction)(_|$)")


def fmt_value(key: str, v: Any) -> str:
    """A number named ``key`` (a diagnosis' evidence): a share as a percentage, else :func:`fmt`."""
    if isinstance(v, float) and 0 <= v <= 1 and SHARE.search(str(key)):
        return pct(v)
    if isinstance(v, list):
        return ", ".join(fmt_value(key, x) for x in v[:16]) + (", ..." if len(v) > 16 else "")
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt_value(k, x)}" for k, x in v.items())
    return fmt(v)


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
    folded: bool = False  # starts closed: its figures load when it is opened

    def groups(self) -> list[tuple[str, list[Figure]]]:
        """The figures by their group (a layer), in the order they come: each group folds on its
        own, so a network of many layers shows one line per layer until one is opened."""
        out: dict[str, list[Figure]] = {}
        for f in self.figures:
            out.setdefault(f.group, []).append(f)
        return list(out.items())


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


def render_page(template: str = "report.html.j2", **context: Any) -> str:
    """The report page (or a layer page of its filter browser, ``layer.html.j2``); ``context``
    feeds the template."""
    js = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    # a linked page reads images from its own folder (file: when opened from disk, 'self' served)
    images = "data:" if embedding() else "data: 'self' file:"
    csp = (
        f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        _env()
        .get_template(template)
        .render(
            css=Markup(_asset("report.css")),
            js=Markup(js),
            csp=csp,
            script_json=script_json,
            pct=pct,
            fmt=fmt,
            fmt_value=fmt_value,
            embedded=embedding(),
            **context,
        )
    )
