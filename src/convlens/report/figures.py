"""The report's own figures (curves, per-class accuracy, confusion, example galleries).

They are drawn once into ``RUN/report/`` and reused: ``RUN/report/figures.json`` records, per
figure, the size and modification time of the files it was drawn from, and a figure is redrawn
only when one of them changed. Analysis figures are never redrawn: the page embeds the PNGs the
analyses wrote.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import plots
from ..run.examples import pick_examples, pick_mistakes  # noqa: F401  (the report's picks)
from ..utils import read_json, write_json

# Bump when a drawing function changes, so cached figures are redrawn once.
FIGURE_VERSION = 2


class FigureCache:
    def __init__(self, folder: Path, root: Path):
        self.folder = Path(folder)
        self.root = Path(root)
        self.manifest_path = self.folder / "figures.json"
        try:
            self.manifest: dict[str, Any] = read_json(self.manifest_path) if self.manifest_path.is_file() else {}
        except ValueError:
            self.manifest = {}
        self.changed = False
        self.drawn: list[str] = []

    def _signature(self, sources: list[Path], extra: Any) -> list[Any]:
        sig: list[Any] = [FIGURE_VERSION, extra]
        for p in sources:
            st = p.stat()
            sig.append(
                [str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p), st.st_size, st.st_mtime_ns]
            )
        return sig

    def get(self, name: str, sources: list[Path], draw: Callable[[Path], Any], extra: Any = None) -> Path:
        """The figure ``name`` (a file name under the folder), drawn by ``draw(path)`` if stale."""
        path = self.folder / name
        sig = self._signature(sources, extra)
        if path.is_file() and self.manifest.get(name) == sig:
            return path
        draw(path)
        self.manifest[name] = sig
        self.changed = True
        self.drawn.append(name)
        return path

    def save(self) -> None:
        if self.changed:
            write_json(self.manifest_path, self.manifest)


# ----------------------------------------------------------------------------------------------
# predictions.csv and the galleries


def read_predictions(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                {
                    "position": int(r["position"]),
                    "label": int(r["label"]),
                    "pred": int(r["pred"]),
                    "confidence": float(r["confidence"]),
                    "correct": r["correct"] == "1",
                }
            )
    return rows


def _short(name: str, limit: int = 14) -> str:
    # matplotlib treats $...$ as math; a class name is plain text
    name = name.replace("$", r"\$")
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def draw_gallery(
    images, picked: list[dict[str, Any]], classes: list[str], path: Path, title: str, mistakes: bool, cols: int = 8
) -> Path:
    """The picked test images as one mosaic (:func:`plots.mosaic`), each titled with its predicted
    class and probability (a mistake: true class \u2192 prediction), green when right, red when
    wrong; every title fits its tile (wrapped, never over a neighbour's)."""

    def cname(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else str(i)

    titles = [
        (f"{cname(r['label'])} \u2192 " if mistakes or not r["correct"] else "")
        + f"{cname(r['pred'])} {100 * r['confidence']:.0f}%"
        for r in picked
    ]
    return plots.mosaic(
        [np.asarray(images[r["position"]]) for r in picked],
        path,
        layout="chw",
        cols=cols,
        titles=titles,
        title_colors=["#1a7f37" if r["correct"] else "#c62828" for r in picked],
        suptitle=title,
        tile_inches=1.1,
    )
