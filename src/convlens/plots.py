"""Figures shared by training, analyses, explanations and reports.

matplotlib is imported lazily (inside :func:`pyplot`) with the non-interactive Agg backend, so
training never pays for it. Every function takes plain numbers/arrays (as read back from the run
folder's JSON) and writes a PNG; nothing here computes results.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@functools.cache
def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "font.size": 9, "axes.titlesize": 9,
                         "axes.spines.top": False, "axes.spines.right": False})  # fmt: skip
    return plt


def save(fig: Any, path: str | Path) -> Path:
    """Save and close a figure; parent folders are created."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def to_display(img: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W, C) float/uint8 image -> (H, W) or (H, W, 3) float in [0, 1] for imshow."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.clip(a, 0, 1)


def image_grid(images: Sequence[np.ndarray], path: str | Path, *, titles: Sequence[str] | None = None,
               cols: int = 8, scale: float = 1.2, suptitle: str | None = None, cmap: str = "gray",
               title_colors: Sequence[str] | None = None) -> Path:  # fmt: skip
    """A grid of images with optional titles. Pixels are shown unsmoothed (nearest neighbour),
    so 3x3 or 7x7 kernels stay legible."""
    plt = pyplot()
    n = max(1, len(images))
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * scale, rows * scale + (0.3 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            a = to_display(images[i])
            ax.imshow(a, cmap=cmap if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7, color=title_colors[i] if title_colors else "black")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save(fig, path)


def confusion(matrix: Sequence[Sequence[float]], classes: Sequence[str], path: str | Path, *,
              title: str = "Confusion matrix", diverging: bool = False, normalize: bool = False) -> Path:  # fmt: skip
    """Rows are true classes, columns predicted ones; ``diverging`` for before/after differences."""
    plt = pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    shown = m / np.maximum(m.sum(1, keepdims=True), 1) if normalize else m
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.5 * k + 2.2, 0.5 * k + 1.6))
    if diverging:
        lim = max(1e-9, np.abs(shown).max())
        im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        im = ax.imshow(shown, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        thresh = np.abs(shown).max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                txt = f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=6,
                        color="white" if abs(shown[i, j]) > thresh else "black")  # fmt: skip
    return save(fig, path)


def curves(metrics: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss, accuracy (train and validation) and learning rate against epochs."""
    plt = pyplot()
    ep = [r["epoch"] for r in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))

    def line(ax, key: str, label: str, pct: bool = False) -> None:
        pts = [(e, r[key]) for e, r in zip(ep, metrics) if r.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, [100 * v for v in y] if pct else y, marker="o" if len(pts) < 30 else None, ms=3, label=label)

    line(axes[0], "train_loss", "train")
    line(axes[0], "val_loss", "validation")
    axes[0].set_title("loss")
    line(axes[1], "train_acc", "train", True)
    line(axes[1], "val_acc", "validation", True)
    axes[1].set_title("accuracy (%)")
    line(axes[2], "lr", "lr")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    if title:
        fig.suptitle(title)
    return save(fig, path)


def bars(values: Sequence[float], labels: Sequence[str], path: str | Path, *, title: str = "",
         ylabel: str = "", errors: Sequence[float] | None = None, highlight: int | None = None,
         ylim: tuple[float, float] | None = None) -> Path:  # fmt: skip
    """One bar per label (e.g. per class), optional error bars and one highlighted bar."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * len(labels) + 1.2), 2.4))
    colors = ["#4c72b0"] * len(values)
    if highlight is not None:
        colors[highlight] = "#dd8452"
    ax.bar(range(len(values)), values, yerr=errors, color=colors, capsize=2)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save(fig, path)
