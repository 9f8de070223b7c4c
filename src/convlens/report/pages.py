"""The filter browser of a large network: one static page per 64 filters of a layer.

A network of thousands of filters (ResNet-18's stage outputs alone have 1,024; every conv of a VGG-16
4,224) would make one page of every filter's panels and numbers too heavy to open. Above
:data:`PAGED_ABOVE` filters the report's own page keeps one line per layer, a search box (layer
name and filter number) and the per-layer summaries; each layer's filters are on pages of
:data:`PAGE_SIZE`, written beside the report (``report.html`` -> ``report-layers/``), each with the
filters' numbers, their panels (images linked and loaded when scrolled to) and their rows of the
per-filter tables. Pages are plain files linked from the index, so they open from ``file://``,
where a page cannot ``fetch()`` anything. A per-filter figure not drawn yet (see
:mod:`convlens.analyses.perfilter`) is named on its page with the command that draws its layer.
"""

from __future__ import annotations

import contextlib
import functools
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text
from . import browser
from .html import Section, Table, embedding, image_src, linked_images, render_page

PAGED_ABOVE = 512  # filters in the browser; at most this many stay on the report's own page
PAGE_SIZE = 64  # filters per layer page
KEEP_ROWS = 100  # a per-filter table this short (the most selective filters) stays on the page

_FB_LINK = re.compile(r"^#fb=(?P<layer>.+)/(?P<filter>\d+)$")


def pages_folder(out: Path) -> Path:
    """Where the layer pages of the page ``out`` go: ``report.html`` -> ``report-layers/``."""
    return Path(out).with_name(f"{Path(out).stem}-layers")


def slug(i: int, name: str) -> str:
    """A file-name-safe, unique stem for the ``i``-th layer: its order, then its name."""
    return f"{i:03d}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]


def ranges(filters: list[int]) -> list[list[int]]:
    """Sorted filter numbers as inclusive ``[first, last]`` runs: 512 filters are one pair."""
    out: list[list[int]] = []
    for f in filters:
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return out


@dataclass
class LayerPages:
    """One layer's filters and the pages they are on."""

    name: str
    stem: str
    filters: list[int]

    def __post_init__(self) -> None:
        self.position = {f: i for i, f in enumerate(self.filters)}

    def chunks(self) -> list[list[int]]:
        return [self.filters[i : i + PAGE_SIZE] for i in range(0, len(self.filters), PAGE_SIZE)]

    def page(self, n: int) -> str:
        """The file name of page ``n`` (0-based)."""
        return f"{self.stem}-p{n + 1}.html"

    def page_of(self, f: int) -> int:
        return self.position[f] // PAGE_SIZE


@dataclass
class Paged:
    """The browser of a large network: its layers, pages and the per-filter table rows they take."""

    out: Path
    layers: list[LayerPages]
    found: dict[tuple[str, int, str], Any]
    kinds: list[str]
    values: dict[str, dict[str, dict[str, str]]]
    run_path: str
    moved: dict[tuple[str, int], list[tuple[str, Table, list[Any]]]] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return pages_folder(self.out)

    @functools.cached_property
    def by_name(self) -> dict[str, LayerPages]:
        return {lp.name: lp for lp in self.layers}

    def filters(self) -> int:
        return sum(len(lp.filters) for lp in self.layers)

    def index(self, prefix: str) -> dict[str, Any]:
        """What the search box reads: each layer's name, page file prefix and filter numbers."""
        return {
            "size": PAGE_SIZE,
            "layers": [
                {"name": lp.name, "base": f"{prefix}{lp.stem}-p", "ranges": ranges(lp.filters)} for lp in self.layers
            ],
        }

    def undrawn(self) -> int:
        return sum(1 for *_, drawn in self.found.values() if not drawn)


def plan(
    out: Path,
    found: dict[tuple[str, int, str], Any],
    analyses: list[Any],
    layer_order: list[str] | None,
    classes: list[str],
    run_path: str,
) -> Paged | None:
    """The paged browser when the run's figures cover more than :data:`PAGED_ABOVE` filters, else None."""
    names = browser.layer_names(found, layer_order)
    per: dict[str, set[int]] = {}
    for layer, f, _ in found:
        per.setdefault(layer, set()).add(f)
    if sum(len(v) for v in per.values()) <= PAGED_ABOVE:
        return None
    layers = [LayerPages(name, slug(i, name), sorted(per[name])) for i, name in enumerate(names)]
    return Paged(Path(out), layers, found, browser.kinds_of(found), browser.numbers(analyses, classes), run_path)


def move_filter_tables(sections: list[Section], paged: Paged) -> None:
    """Per-filter tables (first columns ``layer``, ``filter``) of more than :data:`KEEP_ROWS` rows
    leave the report's own page: each row goes to the page of its filter (a row of a filter no
    page has stays); the section says where they went."""
    for sec in sections:
        kept = []
        for t in sec.tables:
            if [c.lower() for c in t.columns[:2]] != ["layer", "filter"] or len(t.rows) <= KEEP_ROWS:
                kept.append(t)
                continue
            rest = [row for row in t.rows if not _move_row(paged, sec.title, t, row)]
            sec.notes.append(
                f"{t.caption or 'per-filter table'}: {len(t.rows) - len(rest):,} rows, one per filter, are on the "
                "layer pages (filter browser), beside each filter's figures"
            )
            if rest:
                kept.append(Table(t.columns, [], f"{t.caption} (filters without a page)", collapsed=True))
                kept[-1].rows = rest
        sec.tables = kept


def _move_row(paged: Paged, title: str, t: Table, row: list[dict[str, Any]]) -> bool:
    """Put ``row`` of table ``t`` on its filter's page; False when no page holds that filter."""
    m = _FB_LINK.match(str(row[1].get("href", "")))
    lp = paged.by_name.get(str(row[0]["text"]))
    if not m or lp is None or int(m["filter"]) not in lp.position:
        return False
    f = int(m["filter"])
    bucket = paged.moved.setdefault((lp.name, lp.page_of(f)), [])
    if not bucket or bucket[-1][1] is not t:
        bucket.append((title, t, []))
    bucket[-1][2].append([row[1] | {"href": f"#f{f}"}, *row[2:]])
    return True


def _panels(paged: Paged, layer: str, f: int, draw_hint: str) -> list[dict[str, Any]]:
    out = []
    for kind in paged.kinds:
        got = paged.found.get((layer, f, kind))
        if got is None:
            continue
        path, caption, drawn = got
        out.append(
            {
                "label": browser.label(kind),
                "src": image_src(path) if drawn else "",
                "caption": caption or f"{layer} filter {f}: {browser.label(kind)}",
                "hint": "" if drawn else draw_hint,
            }
        )
    return out


def _page_context(paged: Paged, lp: LayerPages, n: int, chunk: list[int], base: dict[str, Any]) -> dict[str, Any]:
    labels = browser.number_labels(paged.values)
    hint = f"not drawn yet: convlens report {paged.run_path} --filter-figures {lp.name}"
    vals = paged.values.get(lp.name, {})
    cards = [
        {
            "filter": f,
            "numbers": [(n_["label"], vals.get(str(f), {}).get(n_["key"], "\u2013")) for n_ in labels],
            "panels": _panels(paged, lp.name, f, hint),
        }
        for f in chunk
    ]
    tables = [
        (title, Table(["filter", *t.columns[2:]], [], t.caption), rows)
        for title, t, rows in paged.moved.get((lp.name, n), [])
    ]
    for _, t, rows in tables:
        t.rows = rows
    count = len(lp.chunks())
    return {
        **base,
        "kind": "layer",
        "title": f"{lp.name}: filters {chunk[0]}\u2013{chunk[-1]}",
        "layer": lp.name,
        "page": n,
        "pages": [{"href": lp.page(i), "label": f"{c[0]}\u2013{c[-1]}"} for i, c in enumerate(lp.chunks())],
        "prev": lp.page(n - 1) if n > 0 else "",
        "next": lp.page(n + 1) if n + 1 < count else "",
        "cards": cards,
        "tables": [(title, t) for title, t, _ in tables],
        "layer_links": [{"name": other.name, "href": other.page(0), "here": other is lp} for other in paged.layers],
        "index": paged.index(""),
        "back": f"../{urllib.parse.quote(paged.out.name)}#filter-browser",
    }


def write_pages(paged: Paged, base: dict[str, Any]) -> list[Path]:
    """Write every layer page (``base``: the run's title, facts and version); the pages of an
    earlier report of this name that no layer has now are removed. Returns the files written."""
    folder = paged.folder
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    embed = embedding()  # a self-contained report's pages embed their images too
    for lp in paged.layers:
        for n, chunk in enumerate(lp.chunks()):
            path = folder / lp.page(n)
            with contextlib.nullcontext() if embed else linked_images(path):
                html = render_page(template="layer.html.j2", **_page_context(paged, lp, n, chunk, base))
            atomic_write_text(path, html)
            written.append(path)
    keep = {p.name for p in written}
    for old in folder.glob("*.html"):
        if old.name not in keep:
            old.unlink()
    return written


def summary(paged: Paged) -> dict[str, Any]:
    """What the report's own page shows of the paged browser: the layers, their pages, the index."""
    prefix = f"{urllib.parse.quote(paged.folder.name)}/"
    drawn: dict[str, list[int]] = {}
    for (layer, _, _), (*_, ok) in paged.found.items():
        drawn.setdefault(layer, [0, 0])[0 if ok else 1] += 1
    return {
        "paged": True,
        "size": PAGE_SIZE,
        "filters": paged.filters(),
        "undrawn": paged.undrawn(),
        "run_path": paged.run_path,
        "layers": [
            {
                "name": lp.name,
                "count": len(lp.filters),
                "drawn": drawn.get(lp.name, [0, 0])[0],
                "undrawn": drawn.get(lp.name, [0, 0])[1],
                "pages": [
                    {"href": prefix + lp.page(i), "label": f"{c[0]}\u2013{c[-1]}"} for i, c in enumerate(lp.chunks())
                ],
            }
            for lp in paged.layers
        ],
        "index": paged.index(prefix),
    }
