"""Figures for explanations: heat maps over images, occlusion maps per window size, signals.

Every function takes arrays already normalised by :func:`.heatmap.normalize_heatmaps` plus the
:class:`.heatmap.HeatmapScale` it returned, and prints the scale's label on the figure, so no
figure leaves out how its colours were scaled. matplotlib comes through :func:`convlens.plots.pyplot`
(lazy, Agg). Images and signals are (C, H, W), as the methods return them; heat maps (H, W).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..plots import SMALL, pyplot, save, styled, to_display
from .heatmap import HeatmapScale

HEAT = "inferno"
DIVERGING = "RdBu_r"


def _show_image(ax, img: np.ndarray) -> None:
    a = to_display(img, "chw")
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")


def _show_heat(ax, heat: np.ndarray, signed: bool, image: np.ndarray | None = None, extent=None, alpha: float = 0.6):
    if image is not None:
        a = to_display(image, "chw")
        gray = a if a.ndim == 2 else a.mean(-1)
        ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(
        heat,
        cmap=DIVERGING if signed else HEAT,
        vmin=-1 if signed else 0,
        vmax=1,
        alpha=alpha if image is not None else 1.0,
        interpolation="nearest",
        extent=extent,
    )
    if extent is not None:
        h, w = image.shape[-2:] if image is not None else heat.shape
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    return im


def _cell_title(ax, text: str, inches: float) -> None:
    """A panel's title wrapped to its cell's width (DejaVu Sans at :data:`SMALL` points is about
    0.62 em a character), so a long image title never runs into the next column's header."""
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(text, max(8, int(inches * 72 / (0.62 * SMALL)) - 1))), fontsize=SMALL)


def _title(fig, text: str) -> None:
    """A two-line title just above the top row, whatever the figure's height (matplotlib's
    default leaves 12 % of the height free, a large gap on tall grids)."""
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(top=1 - 0.75 / height, hspace=0.35)
    fig.suptitle(text, fontsize=8, y=1 - 0.1 / height, va="top")


def _colorbar(fig, im, axes, scale: HeatmapScale, label: str = "") -> None:
    """A colour bar whose ends read in the raw units when one scale holds for the whole figure,
    labelled with what its colours mean (``label``, else the scale's own description)."""
    cb = fig.colorbar(im, ax=axes, fraction=0.05, pad=0.04)
    cb.set_label(label or _bar_label(scale), fontsize=SMALL)
    cb.ax.tick_params(labelsize=SMALL)
    signed = scale.sign == "signed"
    if scale.scale != "each" and scale.limits:
        lo, hi = scale.limits[0]
        ticks = [-1, 0, 1] if signed else [0, 0.5, 1]
        raw = [lo, (lo + hi) / 2, hi]
        cb.set_ticks(ticks)
        cb.set_ticklabels([f"{v:.3g}" for v in raw])
    else:
        cb.set_ticks([-1, 0, 1] if signed else [0, 1])
        cb.set_ticklabels(["-max", "0", "max"] if signed else ["0", "max"])


def _bar_label(scale: HeatmapScale) -> str:
    what = {"absolute": "|attribution|", "positive": "attribution", "negative": "-attribution"}
    text = what.get(scale.sign, "attribution" if scale.sign == "signed" else "value")
    return text + (" (per image)" if scale.scale == "per_image" else "")


def signal_as_image(signal: np.ndarray) -> np.ndarray:
    """A signed signal (C, H, W) normalised to [-1, 1], shown as 0.5 + 0.5 * signal (gray = 0)."""
    return np.clip(0.5 + 0.5 * signal, 0, 1)


@styled
def attribution_grid(
    images: np.ndarray,
    heat: np.ndarray,
    scale: HeatmapScale,
    titles: Sequence[str],
    path: str | Path,
    *,
    title: str,
    signal: np.ndarray | None = None,
) -> Path:
    """Per image: the image, the heat map, the heat map over the image (and the signal itself as
    an image when given, for deconvnet / guided backprop) side by side; the images in a grid of
    :func:`per_row` images a row, so many images make a figure about as wide as tall."""
    plt = pyplot()
    n = len(images)
    cols = 3 + (signal is not None)
    g = per_row(n, cols)
    rows = -(-n // g)
    fig, axes = plt.subplots(rows, g * cols, figsize=(1.5 * cols * g, 1.9 * rows + 0.75), squeeze=False)
    signed = scale.sign == "signed"
    im = None
    for ax in axes.flat[n * cols :]:  # the rest of the last row
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, g)
        row = axes[r, c * cols : (c + 1) * cols]
        _show_image(row[0], images[i])
        _cell_title(row[0], titles[i], 1.3)
        k = 1
        if signal is not None:
            _show_image(row[k], signal_as_image(signal[i]))
            if r == 0:
                _cell_title(row[k], "signal (gray = 0)", 1.3)
            k += 1
        im = _show_heat(row[k], heat[i], signed)
        _show_heat(row[k + 1], heat[i], signed, images[i])
        if r == 0:
            _cell_title(row[k], "heat map", 1.3)
            _cell_title(row[k + 1], "over the image", 1.3)
    _title(fig, f"{title}\n{scale.label}")  # before the colour bar, which then takes room from the grid
    if im is not None:
        _colorbar(fig, im, axes.ravel().tolist(), scale)
    return save(fig, path)


def per_row(n: int, cols: int, cell: tuple[float, float] = (1.5, 1.6)) -> int:
    """How many images (each with ``cols`` panels of ``cell`` inches) a grid row holds so that
    ``n`` images make a figure about as wide as tall (one a row for a single image)."""
    return max(1, min(n, round(math.sqrt(n * cell[1] / (cell[0] * cols)))))


@styled
def occlusion_figure(
    image: np.ndarray,
    maps: dict[int, np.ndarray],
    rows: Sequence[tuple[str, int]],
    stride: int,
    padding: int,
    path: str | Path,
    *,
    title: str,
    scale: HeatmapScale,
    label: str | None = None,
    colorbar: str = "",
) -> Path:
    """The image, then per window size K one map per row (true class, predicted class), each cell
    drawn over the centre of its window so the map lines up with the image; brighter is a larger
    value (the drop in probability, as the explain command draws it). ``label`` replaces the
    scale's own description on the figure, ``colorbar`` labels the colour bar."""
    plt = pyplot()
    ks = sorted(maps)
    fig, axes = plt.subplots(
        len(rows), 1 + len(ks), figsize=(1.6 * (1 + len(ks)), 1.7 * len(rows) + 0.75), squeeze=False
    )
    im = None
    for r, (name, cls) in enumerate(rows):
        _show_image(axes[r, 0], image)
        _cell_title(axes[r, 0], name, 1.4)
        for c, k in enumerate(ks, start=1):
            m = maps[k][cls]
            h, w = m.shape
            # cell (i, j) is the window with top-left (i*stride - padding): centre at + (k-1)/2
            off = (k - 1) / 2 - padding
            extent = (off - stride / 2, off + (w - 0.5) * stride, off + (h - 0.5) * stride, off - stride / 2)
            im = _show_heat(axes[r, c], m, False, image, extent=extent, alpha=0.65)
            axes[r, c].set_title(f"K={k}: {h}x{w}", fontsize=SMALL)
    _title(fig, f"{title}\n{label or scale.label}")  # before the colour bar, which then takes room from the grid
    if im is not None:
        _colorbar(fig, im, axes[:, -1].tolist(), scale, colorbar)
    return save(fig, path)


@styled
def filter_projection(
    images: np.ndarray,
    signal: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    titles: Sequence[str],
    path: str | Path,
    *,
    title: str,
    scale: HeatmapScale,
) -> Path:
    """Per image: the image with the strongest unit's receptive field boxed, its projection to
    pixel space, and the projection cropped to that receptive field (as Zeiler & Fergus show)."""
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.7 * n + 0.75), squeeze=False)
    for i in range(n):
        top, bottom, left, right = boxes[i]
        _show_image(axes[i, 0], images[i])
        axes[i, 0].add_patch(
            plt.Rectangle(
                (left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="#00ff66", linewidth=1.2
            )
        )
        _cell_title(axes[i, 0], titles[i], 1.3)
        shown = signal_as_image(signal[i])
        _show_image(axes[i, 1], shown)
        _show_image(axes[i, 2], shown[:, top:bottom, left:right])
        if i == 0:
            axes[i, 1].set_title("projection", fontsize=SMALL)
            axes[i, 2].set_title("receptive field", fontsize=SMALL)
    _title(fig, f"{title}\n{scale.label}")
    return save(fig, path)


@styled
def single_image(img: np.ndarray, path: str | Path, title: str = "") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6, 1.75 if title else 1.6))
    _show_image(ax, img)
    if title:
        ax.set_title(title, fontsize=SMALL)
    return save(fig, path)


@styled
def objective_curves(curves: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str) -> Path:
    """Objective per step for each image (steps, N); many images are drawn thin, with the median."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    steps = np.arange(1, len(curves) + 1)
    thin = curves.shape[1] > 8
    for j in range(curves.shape[1]):
        ax.plot(
            steps, curves[:, j], lw=0.6 if thin else 1.2, alpha=0.35 if thin else 1.0, label=None if thin else labels[j]
        )
    if thin:
        ax.plot(steps, np.median(curves, 1), color="black", lw=1.6, label="median")
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL, ncol=2)
    return save(fig, path)
