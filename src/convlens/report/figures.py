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
FIGURE_VERSION = 1


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


def mosaic(
    images: list[np.ndarray], cols: int, pad: int = 2, min_side: int = 32, band: float = 0.0
) -> tuple[np.ndarray, int, int]:
    """Images tiled into one RGB array (nearest-neighbour upscaled to at least ``min_side``), with
    a white band of ``band`` tile heights under each row for titles; returns the array, the tile
    side and the row pitch. One ``imshow`` of a mosaic draws several times faster than one subplot
    per image."""
    tiles = []
    for img in images:  # dataset images, (C, H, W)
        a = plots.to_display(img, "chw")
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, 2)
        k = max(1, -(-min_side // a.shape[0]))
        tiles.append(np.kron(a, np.ones((k, k, 1))))
    side = max(t.shape[0] for t in tiles)
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    pitch = side + pad + int(round(band * side))
    out = np.ones((rows * pitch + pad, cols * (side + pad) + pad, 3))
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = pad + r * pitch, pad + c * (side + pad)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out, side, pitch


@plots.styled
def draw_gallery(
    images, picked: list[dict[str, Any]], classes: list[str], path: Path, title: str, mistakes: bool, cols: int = 8
) -> None:
    def cname(i: int) -> str:
        return _short(classes[i]) if 0 <= i < len(classes) else str(i)

    plt = plots.pyplot()
    grid, side, pitch = mosaic([np.asarray(images[r["position"]]) for r in picked], cols, band=0.5)
    cols = min(cols, len(picked))
    rows = -(-len(picked) // cols)
    fig, ax = plt.subplots(figsize=(1.2 * cols, 1.2 * rows * pitch / side + 0.35))
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    for i, r in enumerate(picked):
        if mistakes:
            text = f"{cname(r['label'])} \u2192 {cname(r['pred'])}\n{100 * r['confidence']:.0f}%"
        elif r["correct"]:
            text = f"{cname(r['pred'])} {100 * r['confidence']:.0f}%"
        else:
            text = f"{cname(r['pred'])} {100 * r['confidence']:.0f}%\n(true: {cname(r['label'])})"
        row, col = divmod(i, cols)
        ax.text(
            2 + col * (side + 2) + side / 2,
            2 + row * pitch + side * 1.03,
            text,
            ha="center",
            va="top",
            fontsize=plots.SMALL,
            color="#1a7f37" if r["correct"] else "#c62828",
        )
    ax.set_title(title, fontsize=9)
    plots.save(fig, path)
