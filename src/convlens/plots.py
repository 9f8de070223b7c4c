"""Figures shared by training, analyses, explanations and reports.

matplotlib is imported lazily, so training never pays for it, and no global state of it is
touched: figures are ``matplotlib.figure.Figure`` objects that belong to no backend (a notebook's
backend stays as it is, and pyplot is never imported), and the house style (:data:`STYLE`) holds
only inside :func:`styled` drawing functions, through ``matplotlib.rc_context``. Every function
takes plain numbers/arrays (as read back from the run folder's JSON) and writes a PNG; nothing
here computes results.

The figures of the analyses (mosaics, heatmaps, bar charts, strips, confusion matrices) are set
with Pillow, in matplotlib's look: its DejaVu Sans file, its colour maps (``colormaps.npz``) and
its round-tick rule (:func:`nice_ticks`), all without importing matplotlib, so ``convlens
analyze`` never does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

# The smallest text on any figure, in points: legible at 100 % zoom (titles, tick labels, colour
# bar labels, tile titles).
SMALL = 8

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL,
    "legend.fontsize": SMALL,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Run a drawing function with :data:`STYLE` in force, and the caller's rcParams after it."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({**STYLE, "font.family": ["DejaVu Sans", *_fallback_families()]}):
            return fn(*args, **kwargs)

    return inner  # type: ignore[return-value]


class _Figures:
    """The part of pyplot the drawing code uses, without pyplot's figure manager or backend:
    ``subplots`` and ``figure`` make plain ``Figure`` objects, which are saved (through the Agg
    canvas PNG needs) and then dropped; nothing outlives them."""

    def __init__(self) -> None:
        from matplotlib import colormaps, patches
        from matplotlib.figure import Figure

        self._figure, self._colormaps, self.Rectangle = Figure, colormaps, patches.Rectangle

    def figure(self, **fig_kw: Any) -> Any:
        return self._figure(**fig_kw)

    def subplots(
        self,
        nrows: int = 1,
        ncols: int = 1,
        *,
        sharex: Any = False,
        sharey: Any = False,
        squeeze: bool = True,
        subplot_kw: dict | None = None,
        gridspec_kw: dict | None = None,
        width_ratios: Any = None,
        height_ratios: Any = None,
        **fig_kw: Any,
    ) -> tuple[Any, Any]:
        fig = self._figure(**fig_kw)
        axes = fig.subplots(
            nrows,
            ncols,
            sharex=sharex,
            sharey=sharey,
            squeeze=squeeze,
            subplot_kw=subplot_kw,
            gridspec_kw=gridspec_kw,
            width_ratios=width_ratios,
            height_ratios=height_ratios,
        )
        return fig, axes

    def get_cmap(self, name: str) -> Any:
        return self._colormaps[name]

    def close(self, fig: Any) -> None:
        """Nothing to release: no figure manager holds the figure."""


@functools.cache
def pyplot() -> _Figures:
    """A pyplot-like factory of figures that changes no global matplotlib state (see :class:`_Figures`);
    draw inside a :func:`styled` function to get the house style."""
    return _Figures()


def progress(items: Sequence[Any], desc: str, show: bool | None = None) -> Any:
    """``items``, with a progress bar of the figures being drawn on a terminal (``show``: None
    decides by :func:`convlens.utils.interactive`; False never, as in logs and CI)."""
    from .utils import interactive

    if not (interactive() if show is None else show):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, unit="fig")


def save(fig: Any, path: str | Path) -> Path:
    """Save a figure (PNG unless the name says otherwise) atomically: a reader never sees half an
    image. Parent folders are created.

    A PNG is rendered once and cropped to what was drawn plus a small margin (what
    ``bbox_inches="tight"`` gives, without its second rendering) and written with light
    compression: the per-filter figures of an analysis are hundreds of small PNGs, and this halves
    their drawing time."""
    import io

    import matplotlib

    from .utils import atomic_write

    buf = io.BytesIO()
    fmt = Path(path).suffix[1:].lower() or "png"
    if fmt == "png" and hasattr(fig, "get_tightbbox"):  # a matplotlib Figure
        _png(fig, buf)
    else:
        with matplotlib.rc_context({"savefig.dpi": STYLE["savefig.dpi"]}):
            fig.savefig(buf, format=fmt, bbox_inches="tight")
    atomic_write(Path(path), lambda f: f.write(buf.getvalue()), mode="wb", sync=False)  # see _write_png
    return Path(path)


def _png(fig: Any, out: Any, pad_inches: float = 0.1) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    dpi = STYLE["savefig.dpi"]
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.get_tightbbox(renderer)  # in inches, from the bottom left; may reach outside the figure
    w, h = fig.get_size_inches()
    slack = 1.5 / dpi  # anti-aliasing may reach a pixel past the edge
    if box.x0 < -slack or box.y0 < -slack or box.x1 > w + slack or box.y1 > h + slack:
        # something drawn beyond the edges: let matplotlib lay out the larger canvas
        fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight", pad_inches=pad_inches)
        return
    x0, x1 = max(0.0, box.x0 - pad_inches), min(w, box.x1 + pad_inches)
    y0, y1 = max(0.0, box.y0 - pad_inches), min(h, box.y1 + pad_inches)
    rgba = np.asarray(canvas.buffer_rgba())
    H = rgba.shape[0]
    r0, r1 = int(np.floor((h - y1) * dpi)), int(np.ceil((h - y0) * dpi))
    c0, c1 = int(np.floor(x0 * dpi)), int(np.ceil(x1 * dpi))
    crop = rgba[max(0, r0) : min(H, r1), max(0, c0) : c1]
    Image.fromarray(np.ascontiguousarray(crop[..., :3])).save(out, format="png", compress_level=1)


LAYOUTS = ("chw", "hwc", "hw")


def to_display(img: np.ndarray, layout: str) -> np.ndarray:
    """An image in the stated ``layout`` -> (H, W) or (H, W, 3) float in [0, 1] for imshow.

    ``layout`` is "chw" (channels first, as tensors are), "hwc" (channels last) or "hw" (one
    plane). It is never guessed from the shape: a 3x3 RGB kernel (3, 3, 3) or a one-channel
    patch (1, 3, 3) fits both channel orders. uint8 is scaled by 1/255; one channel is grey.
    """
    a = np.asarray(img)
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    want = 2 if layout == "hw" else 3
    if a.ndim != want:
        raise ValueError(f"an image of layout {layout!r} has {want} dimensions, not {a.ndim} (shape {a.shape})")
    if layout == "chw":
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] not in (1, 3):
        raise ValueError(f"an image of layout {layout!r} has 1 or 3 channels, not {a.shape[-1]} (shape {a.shape})")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.clip(a, 0, 1)


def _layouts(layout: str | Sequence[str], n: int) -> list[str]:
    """One layout per image: ``layout`` for all, or a sequence naming each image's own."""
    if isinstance(layout, str):
        return [layout] * n
    layouts = list(layout)
    if len(layouts) != n:
        raise ValueError(f"{len(layouts)} layouts given for {n} images")
    return layouts


@styled
def image_grid(
    images: Sequence[np.ndarray],
    path: str | Path,
    *,
    layout: str | Sequence[str],
    titles: Sequence[str] | None = None,
    cols: int = 8,
    scale: float = 1.2,
    suptitle: str | None = None,
    cmap: str = "gray",
    title_colors: Sequence[str] | None = None,
) -> Path:
    """A grid of images with optional titles. Pixels are shown unsmoothed (nearest neighbour),
    so 3x3 or 7x7 kernels stay legible. ``layout``: see :func:`to_display` (one, or one per image)."""
    plt = pyplot()
    layouts = _layouts(layout, len(images))
    n = max(1, len(images))
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * scale, rows * scale + (0.3 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            a = to_display(images[i], layouts[i])
            ax.imshow(a, cmap=cmap if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=SMALL, color=title_colors[i] if title_colors else "black")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save(fig, path)


def confusion(
    matrix: Sequence[Sequence[float]],
    classes: Sequence[str],
    path: str | Path,
    *,
    title: str = "Confusion matrix",
    diverging: bool = False,
    normalize: bool = False,
) -> Path:
    """Rows are true classes, columns predicted ones; ``diverging`` for before/after differences
    (blue below 0, red above, on a scale symmetric about 0). Each cell shows its number (up to 20
    classes); a labelled colour bar on the right. Set with Pillow in matplotlib's font at
    :data:`SMALL` points: a tenth of matplotlib's time."""
    from PIL import Image, ImageDraw

    m = np.asarray(matrix, dtype=np.float64).reshape(len(classes), len(classes))
    shown = m / np.maximum(m.sum(1, keepdims=True), 1) if normalize else m
    k = len(classes)
    if diverging:
        lim = max(1e-9, float(np.abs(shown).max())) if shown.size else 1.0
        cmap, lo, hi = "RdBu_r", -lim, lim
    else:
        cmap = "Blues"
        lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    dpi = STYLE["savefig.dpi"]
    font = _font(int(round(SMALL * dpi / 72)))
    fs = font.size
    cell = max(int(0.36 * dpi), int(font.getlength("0.00")) + 6)
    ylabels = [_text_image([str(c)], font) for c in classes]
    xlabels = [_text_image([str(c)], font).rotate(45, expand=True) for c in classes]
    true_label = _text_image(["true"], font, rotate=True)
    left = 6 + true_label.width + 6 + max([im.width for im in ylabels] + [0]) + 4
    lines = _wrap(title, font, max(left + k * cell, int(2.4 * dpi))) if title else []
    head = len(lines) * int(round(1.25 * fs)) + 8
    grid_w = k * cell
    bar_w = _colorbar_width(font, lo, hi, "", grid_w)
    below = max([im.height for im in xlabels] + [0]) + 4
    pred = _text_image(["predicted"], font)
    width = max([left + grid_w + 10 + bar_w + 6] + [int(font.getlength(t)) + 8 for t in lines])
    img = Image.new("RGB", (width, head + grid_w + below + pred.height + 6), "white")
    draw = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        draw.text((4, 4 + i * int(round(1.25 * fs))), t, fill="black", font=font, anchor="la")
    colours = _colours(cmap, shown, lo, hi)
    thresh = np.abs(shown).max() / 2 if shown.size else 0
    for i in range(k):
        for j in range(k):
            x, y = left + j * cell, head + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=tuple(colours[i, j]))
            if k <= 20:
                v = m[i, j]
                txt = f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"
                ink = "white" if abs(shown[i, j]) > thresh else "black"
                draw.text((x + cell / 2, y + cell / 2), txt, fill=ink, font=font, anchor="mm")
    for i, im in enumerate(ylabels):
        img.paste(im, (left - 4 - im.width, int(head + (i + 0.5) * cell - im.height / 2)), im)
    for j, im in enumerate(xlabels):  # the end of each label at its column, as matplotlib's ha="right"
        img.paste(im, (int(left + (j + 0.5) * cell - im.width + fs / 2), head + grid_w + 4), im)
    img.paste(true_label, (6, int(head + grid_w / 2 - true_label.height / 2)), true_label)
    img.paste(pred, (int(left + grid_w / 2 - pred.width / 2), head + grid_w + below), pred)
    _colorbar(img, draw, font, (left + grid_w + 10, head, grid_w), cmap, lo, hi, "")
    return _write_png(img, path)


def _colours(cmap: str, values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` on the scale [lo, hi] of matplotlib's colour map ``cmap`` as uint8 RGB (NaN: white)."""
    v = np.asarray(values, dtype=np.float64)
    t = np.nan_to_num(np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.full(v.shape, 0.5))
    lut = _lut(cmap)
    if lut is None:
        from matplotlib import colormaps

        rgb = (colormaps[cmap](t)[..., :3] * 255 + 0.5).astype(np.uint8)
    else:  # matplotlib's own lookup: entry floor(t * 256), 1.0 in the last
        rgb = lut[np.minimum((t * len(lut)).astype(np.intp), len(lut) - 1)]
    rgb[~np.isfinite(v)] = 255
    return rgb


@functools.cache
def _lut(cmap: str) -> np.ndarray | None:
    """The 256 colours (uint8 RGB) of matplotlib's colour map ``cmap``, from ``colormaps.npz``
    beside this module (the maps the analyses use and a few more, taken from matplotlib: see
    tests/test_perfilter.py), so drawing an analysis' figures never imports matplotlib (0.2 s);
    None for another map."""
    with np.load(Path(__file__).with_name("colormaps.npz")) as z:
        return z[cmap] if cmap in z.files else None


def nice_ticks(lo: float, hi: float, nbins: int) -> list[float]:
    """The round ticks ``matplotlib.ticker.MaxNLocator(nbins).tick_values(lo, hi)`` gives (default
    steps 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10), without importing matplotlib."""
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = -1e-13, 1e-13
    lo, hi = min(lo, hi), max(lo, hi)
    big = max(abs(lo), abs(hi))
    if big < 1e20 * np.finfo(float).tiny:
        lo, hi = -1e-13, 1e-13
    elif hi - lo <= big * 1e-14:
        lo, hi = (-1e-13, 1e-13) if hi == 0 and lo == 0 else (lo - 1e-13 * abs(lo), hi + 1e-13 * abs(hi))
    span, mean = hi - lo, (hi + lo) / 2
    offset = 0.0 if abs(mean) / span < 100 else math.copysign(10 ** (math.log10(abs(mean)) // 1), mean)
    scale = 10 ** (math.log10(span / nbins) // 1)
    base = np.array([1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10])
    steps = np.concatenate([0.1 * base[:-1], base, [10 * base[1]]]) * scale
    _lo, _hi = lo - offset, hi - offset
    large = np.nonzero(steps >= (_hi - _lo) / nbins)[0]
    istep = large[0] if len(large) else len(steps) - 1
    ticks = np.zeros(0)
    for step in steps[: istep + 1][::-1]:
        # matplotlib's slack for a tick on an edge: more when the offset is large against the step
        tol = min(0.4999, max(1e-10, 10 ** (math.log10(abs(offset) / step) - 12))) if offset else 1e-10
        best = (_lo // step) * step
        d, m = divmod(_lo - best, step)
        low = d + 1 if abs(m / step - 1) < tol else d
        d, m = divmod(_hi - best, step)
        high = d if abs(m / step) < tol else d + 1
        ticks = np.arange(low, high + 1) * step + best
        if ((ticks <= _hi) & (ticks >= _lo)).sum() >= 2:
            break
    return [float(t) for t in ticks + offset]


def _colorbar_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    if not hi > lo:
        return [(lo, f"{lo:.3g}")]
    ticks = nice_ticks(lo, hi, 5)
    eps = 1e-9 * (hi - lo)
    return [(t, f"{t:.3g}".replace("-", "\u2212")) for t in ticks if lo - eps <= t <= hi + eps]


def _colorbar_width(font: Any, lo: float, hi: float, label: str, height: int) -> int:
    """Pixels that :func:`_colorbar` of ``height`` pixels takes right of its left edge."""
    bar = int(0.12 * STYLE["savefig.dpi"])
    ticks = max([int(font.getlength(t)) for _, t in _colorbar_ticks(lo, hi)] + [0])
    lines = len(_wrap(label, font, max(height, 1))) if label else 0
    return bar + 4 + ticks + (6 + lines * int(round(1.25 * font.size)) if label else 0)


def _colorbar(
    img: Any, draw: Any, font: Any, box: tuple[int, int, int], cmap: str, lo: float, hi: float, label: str
) -> list[Box]:
    """A vertical colour bar at ``box`` = (left, top, height): ``cmap`` from ``lo`` at the bottom to
    ``hi`` at the top, round ticks labelled on its right, then ``label`` turned upright and wrapped
    to the bar's height (a long label never runs past the picture's edge). Returns its boxes."""
    from PIL import Image

    x, y, h = box
    bar = int(0.12 * STYLE["savefig.dpi"])
    column = _colours(cmap, np.linspace(hi, lo, max(h, 1)), lo, hi)
    img.paste(Image.fromarray(np.ascontiguousarray(np.repeat(column[:, None], bar, 1))), (x, y))
    draw.rectangle((x, y, x + bar - 1, y + h - 1), outline="black")
    out = [Box("colorbar", x, y, x + bar, y + h)]
    for t, text in _colorbar_ticks(lo, hi):
        ty = y + (h - 1) * ((hi - t) / (hi - lo) if hi > lo else 0.5)
        draw.line((x + bar, ty, x + bar + 2, ty), fill="black")
        draw.text((x + bar + 4, ty), text, fill="black", font=font, anchor="lm")
        out.append(Box("text", *draw.textbbox((x + bar + 4, ty), text, font=font, anchor="lm"), text))
    if label:
        im = _text_image(_wrap(label, font, max(h, 1)), font, rotate=True)
        ticks = max([int(font.getlength(t)) for _, t in _colorbar_ticks(lo, hi)] + [0])
        left, top = x + bar + 4 + ticks + 4, int(y + h / 2 - im.height / 2)
        img.paste(im, (left, top), im)
        out.append(Box("text", left, top, left + im.width, top + im.height, label))
    return out


def epoch_axis(ax: Any) -> None:
    """An x axis of whole epochs (never 1.5), labelled."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def marker(points: int) -> dict[str, Any]:
    """Dots for a curve of few points: a one-epoch curve is a dot, not nothing."""
    return {"marker": "o", "ms": 3} if points < 30 else {}


@styled
def curves(metrics: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss, accuracy (train and validation) and learning rate against epochs."""
    plt = pyplot()
    ep = [r["epoch"] for r in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))

    def line(ax, key: str, label: str, pct: bool = False) -> None:
        pts = [(e, r[key]) for e, r in zip(ep, metrics) if r.get(key) is not None]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, [100 * v for v in y] if pct else y, label=label, **marker(len(pts)))

    line(axes[0], "train_loss", "train")
    line(axes[0], "val_loss", "validation")
    axes[0].set_title("loss")
    line(axes[1], "train_acc", "train", True)
    line(axes[1], "val_acc", "validation", True)
    axes[1].set_title("accuracy (%)")
    line(axes[2], "lr", "lr")
    axes[2].set_title("learning rate")
    for ax in axes:
        epoch_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    if title:
        fig.suptitle(title)
    return save(fig, path)


@styled
def bars(
    values: Sequence[float],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    errors: Sequence[float] | None = None,
    highlight: int | Sequence[int] | None = None,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One bar per label (e.g. per class), optional error bars and highlighted bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.35 * len(labels) + 1.2), 2.4))
    colors = ["#4c72b0"] * len(values)
    for h in [highlight] if isinstance(highlight, int) else (highlight or []):
        colors[h] = "#dd8452"
    ax.bar(range(len(values)), values, yerr=errors, color=colors, capsize=2)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    _room_below(fig, labels, 2.0)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save(fig, path)


def _text_inches(labels: Sequence[str], size: float = SMALL) -> float:
    """About how wide the longest label is drawn, in inches (DejaVu Sans: ~0.62 em a character)."""
    return max((len(str(x)) for x in labels), default=0) * size * 0.62 / 72


def _room_below(fig: Any, labels: Sequence[str], height: float) -> None:
    """Grow a figure of one row of axes downwards so x tick labels rotated by 45 degrees fit inside
    it (the PNG is then rendered once; see :func:`save`)."""
    below = 0.45 + 0.71 * _text_inches(labels) + 0.1
    fig.set_size_inches(fig.get_size_inches()[0], height + below)
    fig.subplots_adjust(bottom=below / (height + below), top=1 - 0.35 / (height + below))


def _plane(t: np.ndarray, layout: str) -> np.ndarray:
    """A map drawn on a colour scale: one plane, (H, W) or a one-channel (1, H, W) / (H, W, 1)."""
    a = np.asarray(t, dtype=np.float64)
    if layout == "chw" and a.ndim == 3 and a.shape[0] == 1:
        return a[0]
    if layout == "hwc" and a.ndim == 3 and a.shape[-1] == 1:
        return a[..., 0]
    if layout == "hw" and a.ndim == 2:
        return a
    raise ValueError(f"a map drawn on a colour scale is one plane; got shape {a.shape} with layout {layout!r}")


def _canvas(
    tiles: Sequence[np.ndarray],
    layouts: Sequence[str],
    cols: int,
    scalar: bool,
    titles: Sequence[str] | None,
    tile_inches: float,
):
    """Tiles pasted on one array, a blank band above each row for their titles; returns the
    canvas, each tile's top-left pixel, the tiles as shown, inches per pixel and each title as the
    lines it is set in (wrapped to its tile's width, so no title reaches its neighbour's; the band
    is as tall as the longest one)."""
    shown = [_plane(t, lay) if scalar else to_display(t, lay) for t, lay in zip(tiles, layouts)]
    shown, shrink = _shrink(shown, tile_inches)
    n = max(1, len(shown))
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    h = max((t.shape[0] for t in shown), default=1)
    w = max((t.shape[1] for t in shown), default=1)
    rgb = not scalar and any(t.ndim == 3 for t in shown)
    px = tile_inches / w  # inches per pixel
    gap = max(1, int(round(0.04 / px)))
    k = _zoom(px)
    font = _font(int(round(SMALL * STYLE["savefig.dpi"] / 72)))
    lines = [_fit(str(t), font, (w + gap) * k - 4) for t in titles] if titles is not None else None
    step = int(round(1.25 * font.size))
    most = max([len(x) for x in lines or []] + [1])
    band = max(gap, int(np.ceil((most * step + 4) / k))) if titles is not None else gap
    H, W = rows * (h + band) + gap, cols * (w + gap) + gap
    canvas = np.full((H, W, 3) if rgb else (H, W), np.nan if scalar else 1.0)
    origins = []
    for i, t in enumerate(shown):
        r, c = divmod(i, cols)
        y0 = band + r * (h + band) + (h - t.shape[0]) // 2
        x0 = gap + c * (w + gap) + (w - t.shape[1]) // 2
        canvas[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]] = t if (not rgb or t.ndim == 3) else t[..., None]
        origins.append((y0, x0))
    return canvas, origins, shown, px, lines, shrink


def _shrink(shown: list[np.ndarray], tile_inches: float) -> tuple[list[np.ndarray], int]:
    """Tiles far finer than a ``tile_inches`` tile shows (a 224 px image in a 0.45 inch tile),
    each block of ``f`` x ``f`` pixels averaged into one, ``f`` the smallest integer that brings
    the largest side to at most twice the pixels such a tile has at ``savefig.dpi``: hundreds of
    224 px tiles would otherwise make a canvas of gigabytes, drawn at 20x the screen's detail.
    Returns the tiles and ``f`` (1: unchanged, so small tiles keep every pixel)."""
    side = max((max(t.shape[:2]) for t in shown), default=1)
    limit = 2 * tile_inches * STYLE["savefig.dpi"]
    f = int(np.ceil(side / limit)) if side > limit else 1
    if f == 1:
        return shown, 1
    out = []
    for t in shown:
        h, w = t.shape[:2]
        pad = ((0, -h % f), (0, -w % f)) + ((0, 0),) * (t.ndim - 2)
        a = np.pad(t, pad, mode="edge")
        out.append(a.reshape(a.shape[0] // f, f, a.shape[1] // f, f, *a.shape[2:]).mean(axis=(1, 3)))
    return out, f


def _zoom(px: float) -> int:
    """Screen pixels per canvas pixel of a mosaic whose canvas pixels are ``px`` inches."""
    return max(1, int(round(px * STYLE["savefig.dpi"])))


def _fit(text: str, font: Any, width: float, most: int = 2) -> list[str]:
    """``text`` wrapped to ``width`` pixels in at most ``most`` lines; a word too long for a line is
    cut with an ellipsis, and so is what does not fit in the last line."""

    def cut(line: str) -> str:
        if font.getlength(line) <= width:
            return line
        while line and font.getlength(line + "\u2026") > width:
            line = line[:-1]
        return line + "\u2026"

    lines = _wrap(text, font, width) or [""]
    if len(lines) > most:
        lines = lines[: most - 1] + [cut(" ".join(lines[most - 1 :]))]
    return [cut(x) for x in lines]


def mosaic(tiles: Sequence[np.ndarray], path: str | Path, **kwargs: Any) -> Path:
    """Many small images as ONE picture, set with Pillow (see :func:`_picture_mosaic`): a tenth of
    matplotlib's time, which matters for hundreds of per-filter figures.

    Tiles are images in ``layout`` ("chw", "hwc" or "hw", one for all tiles or one per tile; see
    :func:`to_display`); smaller tiles are centred on a blank background. Without ``vmin``/``vmax``
    tiles are images in [0, 1] (uint8 scaled); with them, tiles are one-plane maps drawn with
    ``cmap`` on that shared scale (``colorbar`` labels it).
    ``boxes`` are (top, bottom, left, right) pixel rectangles drawn on their tiles. Pixels are
    shown unsmoothed (nearest neighbour), so 3x3 kernels stay legible; tiles more than twice as
    fine as their place on the page are averaged down by a whole factor (:func:`_shrink`, the boxes
    with them). ``row_labels`` name the
    rows on the left.

    Arguments: ``layout`` (required), ``cols``, ``titles``, ``title_colors``, ``boxes``,
    ``row_labels``, ``suptitle``, ``cmap``, ``vmin``, ``vmax``, ``colorbar``, ``tile_inches``
    (see :func:`_mosaic` for their types and defaults).
    """
    return _mosaic(tiles, path, **kwargs)[0]


def mosaic_boxes(tiles: Sequence[np.ndarray], **kwargs: Any) -> list[Box]:
    """Where :func:`mosaic` (same arguments, less ``path``) puts each tile and each piece of
    text, as :class:`Box` es in the picture's pixels, without saving it: what a test checks for
    overlaps."""
    return _mosaic(tiles, None, **kwargs)[1]


def _mosaic(
    tiles: Sequence[np.ndarray],
    path: str | Path | None,
    *,
    layout: str | Sequence[str],
    cols: int = 10,
    titles: Sequence[str] | None = None,
    title_colors: Sequence[str] | None = None,
    boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    row_labels: Sequence[str] | None = None,
    suptitle: str | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: str | None = None,
    tile_inches: float = 0.9,
) -> tuple[Any, list[Box]]:
    scalar = vmin is not None or vmax is not None
    canvas, origins, shown, px, lines, f = _canvas(
        tiles, _layouts(layout, len(tiles)), cols, scalar, titles, tile_inches
    )
    if f > 1 and boxes is not None:  # the boxes in the shrunk tiles' pixels, still around what they held
        boxes = [None if b is None else (b[0] // f, -(-b[1] // f), b[2] // f, -(-b[3] // f)) for b in boxes]
    rows = None
    if row_labels is not None:
        firsts = origins[:: max(1, min(cols, len(origins)))]
        rows = [(label, y0 + shown[0].shape[0] / 2) for label, (y0, _) in zip(row_labels, firsts)]
    bar = None
    if scalar:  # maps on a colour scale: coloured here, then set as pictures
        finite = canvas[np.isfinite(canvas)]
        lo = float(vmin) if vmin is not None else float(finite.min()) if finite.size else 0.0
        hi = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
        canvas = _colours(cmap, canvas, lo, hi) / 255.0
        bar = (cmap, lo, hi, colorbar) if colorbar else None
    return _picture_mosaic(canvas, origins, shown, px, path, lines, title_colors, boxes, suptitle, bar, rows)


@functools.cache
def _font(size_px: int) -> Any:
    """matplotlib's own DejaVu Sans, for text set without matplotlib (the same face as the rest)."""
    from PIL import ImageFont

    return ImageFont.truetype(_font_file(), size_px)


@functools.cache
def _font_file() -> str:
    """The DejaVu Sans file matplotlib ships, found without importing matplotlib; else the one
    its font manager finds."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return str(path)
    from matplotlib import font_manager

    return font_manager.findfont("DejaVu Sans")


# Faces with CJK glyphs, tried in turn for text DejaVu Sans cannot set (class names in Chinese,
# Japanese, Korean): Debian's fonts-noto-cjk, fonts-wqy-zenhei and fonts-droid-fallback. None is
# required: without one, a missing character is shown as its code point (U+732B), never a box.
FALLBACK_FONTS = {
    "Noto Sans CJK JP": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "WenQuanYi Zen Hei": "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "Droid Sans Fallback": "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
}


@functools.cache
def _fallback_families() -> tuple[str, ...]:
    """The fallback faces matplotlib can find here (it sets each glyph from the first face in
    ``font.family`` that has it)."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    return tuple(name for name in FALLBACK_FONTS if name in known)


@functools.cache
def _missing(path: str, size_px: int, ch: str) -> bool:
    """Whether the face at ``path`` has no glyph for ``ch`` (it would draw its empty box)."""
    from PIL import ImageFont

    face = ImageFont.truetype(path, size_px)
    box = face.getmask("\U0010fffd")  # a private-use code point no face covers: the box itself
    mask = face.getmask(ch)
    return ch.strip() != "" and mask.size == box.size and bytes(mask) == bytes(box)


def text_face(text: str, font: Any) -> tuple[str, Any]:
    """``(text, font)`` to draw: ``font`` when it has every glyph, else the first fallback face
    that has them all, else ``text`` with each missing character written as its code point."""
    from PIL import ImageFont

    size, path = font.size, font.path
    if not any(_missing(path, size, ch) for ch in set(text) if ord(ch) > 0x24F):
        return text, font
    for other in FALLBACK_FONTS.values():
        if Path(other).is_file() and not any(_missing(other, size, ch) for ch in set(text) if ord(ch) > 0x24F):
            return text, ImageFont.truetype(other, size)
    return "".join(f"U+{ord(ch):04X}" if ord(ch) > 0x24F and _missing(path, size, ch) else ch for ch in text), font


def _wrap(text: str, font: Any, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (a longer word keeps a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _picture_mosaic(
    canvas: np.ndarray,
    origins: list[tuple[int, int]],
    shown: list[np.ndarray],
    px: float,
    path: str | Path | None,
    titles: Sequence[Sequence[str]] | None,
    title_colors: Sequence[str] | None,
    boxes: Sequence[tuple[int, int, int, int] | None] | None,
    suptitle: str | None,
    bar: tuple[str, float, float, str] | None = None,
    rows: Sequence[tuple[str, float]] | None = None,
) -> tuple[Any, list[Box]]:
    """A mosaic of pictures set with Pillow: the pixels enlarged by a whole factor (nearest
    neighbour), each tile framed in light grey (a white patch still shows on a white page),
    titles (each the lines :func:`_canvas` fitted to its tile) in matplotlib's font at
    :data:`SMALL` points, boxes in red. It looks as matplotlib's rendering at ``savefig.dpi`` and
    takes a tenth of the time, which is what the hundreds of per-filter figures of an analysis
    need. ``bar`` = (colour map, low, high, label) adds a labelled colour bar on the right;
    ``rows`` = (label, canvas row of its centre) are set right-aligned left of the tiles. Returns
    the saved path (the Pillow image itself without ``path``) and the layout: a :class:`Box` for
    every tile and every piece of text."""
    from PIL import Image, ImageDraw

    dpi = STYLE["savefig.dpi"]
    k = _zoom(px)  # screen pixels per canvas pixel
    font = _font(int(round(SMALL * dpi / 72)))
    step = int(round(1.25 * font.size))
    rgb = canvas if canvas.ndim == 3 else np.repeat(canvas[..., None], 3, 2)
    big = np.repeat(np.repeat((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), k, 0), k, 1)
    pad = max(6, max([int(font.getlength(t)) + 10 for t, _ in rows or []] + [0]))
    # the title wraps to the mosaic's width (at least 2.4 inches): a long title over a few small
    # tiles would otherwise leave most of the picture white
    lines = _wrap(suptitle or "", font, max(big.shape[1], int(2.4 * dpi)))
    head = len(lines) * step + int(0.1 * dpi) if lines else 4
    width = big.shape[1] + 2 * pad + (_colorbar_width(font, bar[1], bar[2], bar[3], big.shape[0]) + 6 if bar else 0)
    width = max([width] + [int(font.getlength(t)) + 8 for t in lines])
    if bar:  # the end tick labels are centred on the bar's ends
        head = max(head, font.size // 2 + 4)
    foot = font.size // 2 + 4 if bar else 4
    img = Image.new("RGB", (width, big.shape[0] + head + foot), "white")
    img.paste(Image.fromarray(big), (pad, head))
    draw = ImageDraw.Draw(img)
    layout: list[Box] = []

    def text(xy: tuple[float, float], s: str, anchor: str, fill: str = "black") -> None:
        s, face = text_face(s, font)  # a fallback face for glyphs the font lacks (CJK class names)
        draw.text(xy, s, fill=fill, font=face, anchor=anchor)
        layout.append(Box("text", *draw.textbbox(xy, s, font=face, anchor=anchor), s))

    for i, s in enumerate(lines):
        text((4, 4 + i * step), s, "la")
    for s, y in rows or []:
        text((pad - 6, head + y * k), s, "rm")
    if bar:
        cmap, lo, hi, label = bar
        x = pad + big.shape[1] + 6
        layout += _colorbar(img, draw, font, (x, head, big.shape[0]), cmap, lo, hi, label)
    line = max(1, int(round(dpi / 72)))
    for i, ((y0, x0), t) in enumerate(zip(origins, shown)):
        left, top = pad + x0 * k, head + y0 * k
        right, bottom = left + t.shape[1] * k, top + t.shape[0] * k
        draw.rectangle((left - 1, top - 1, right, bottom), outline="#c8c8c8")
        layout.append(Box("tile", left - 1, top - 1, right + 1, bottom + 1))
        for n, s in enumerate(reversed(titles[i]) if titles is not None and i < len(titles) else []):
            text((left + t.shape[1] * k / 2, top - 3 - n * step), s, "md", title_colors[i] if title_colors else "black")
        if boxes is not None and i < len(boxes) and boxes[i] is not None:
            b_top, b_bottom, b_left, b_right = boxes[i]
            draw.rectangle(
                (left + b_left * k, top + b_top * k, left + b_right * k - 1, top + b_bottom * k - 1),
                outline="#ff2d2d",
                width=line,
            )
    if path is None:  # the picture itself, to be set into a larger one
        return img, layout
    return _write_png(img, path), layout


@dataclass(frozen=True)
class Box:
    """A rectangle of a figure set with Pillow, in its pixels (right and bottom exclusive): a
    ``"tile"``, a ``"text"`` (``text`` says which), or a ``"colorbar"``."""

    kind: str
    left: float
    top: float
    right: float
    bottom: float
    text: str = ""

    def overlaps(self, other: Box) -> bool:
        across = self.left < other.right and other.left < self.right
        return across and self.top < other.bottom and other.top < self.bottom


def overlaps(layout: Sequence[Box]) -> list[tuple[Box, Box]]:
    """Every pair of boxes of a layout that share a pixel (none, in a legible figure)."""
    return [(a, b) for i, a in enumerate(layout) for b in layout[i + 1 :] if a.overlaps(b)]


def image_with_maps(
    image: np.ndarray,
    maps: Sequence[np.ndarray],
    path: str | Path,
    *,
    layout: str,
    titles: Sequence[str],
    vmin: float,
    vmax: float,
    cmap: str,
    suptitle: str,
    colorbar: str,
    cols: int = 8,
) -> Path:
    """An input image (in ``layout``, see :func:`to_display`) beside a grid of its (H, W) feature
    maps, all maps on one shared colour scale (``colorbar`` labels it). Set with Pillow, as
    :func:`mosaic`."""
    from PIL import Image, ImageDraw

    grid, _ = _mosaic(
        maps,
        None,
        layout="hw",
        cols=cols,
        titles=titles,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        colorbar=colorbar,
        tile_inches=0.8,
    )
    dpi = STYLE["savefig.dpi"]
    font = _font(int(round(SMALL * dpi / 72)))
    step = int(round(1.25 * font.size))
    a = to_display(image, layout)
    a3 = a if a.ndim == 3 else np.repeat(a[..., None], 3, 2)
    k = max(1, int(1.4 * dpi) // max(1, a3.shape[1]))
    big = np.repeat(np.repeat((np.clip(a3, 0, 1) * 255 + 0.5).astype(np.uint8), k, 0), k, 1)
    inp = Image.fromarray(np.ascontiguousarray(big))
    width = 8 + inp.width + 12 + grid.width
    lines = _wrap(suptitle, font, max(width, int(2.4 * dpi)) - 8)
    width = max([width] + [int(font.getlength(t)) + 8 for t in lines])
    head = len(lines) * step + 8
    img = Image.new("RGB", (width, head + max(step + inp.height, grid.height) + 4), "white")
    draw = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        draw.text((4, 4 + i * step), t, fill="black", font=font, anchor="la")
    draw.text((8 + inp.width / 2, head + step - 2), "input", fill="black", font=font, anchor="md")
    img.paste(inp, (8, head + step))
    img.paste(grid, (8 + inp.width + 12, head))
    return _write_png(img, path)


def heatmap(
    matrix: Sequence[Sequence[float]],
    rows: Sequence[str],
    cols: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    colorbar: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A labelled matrix (e.g. filters x classes) on ``cmap`` (NaN: white), rows labelled on the
    left (at most about 64), columns below, turned 45 degrees; a labelled colour bar on the right.
    Set with Pillow in matplotlib's font at :data:`SMALL` points."""
    from PIL import Image, ImageDraw

    m = np.asarray(matrix, dtype=np.float64).reshape(len(rows), len(cols))
    finite = m[np.isfinite(m)]
    lo = float(vmin) if vmin is not None else float(finite.min()) if finite.size else 0.0
    hi = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
    dpi = STYLE["savefig.dpi"]
    font = _font(int(round(SMALL * dpi / 72)))
    step = int(round(1.25 * font.size))
    cw = int(0.32 * dpi)
    ch = max(1, min(int(0.16 * dpi), int(28 * dpi) // max(1, len(rows))))
    every = max(1, len(rows) // 64)
    ylabels = [(i, _text_image([str(rows[i])], font)) for i in range(0, len(rows), every)]
    xlabels = [_text_image([str(c)], font).rotate(45, expand=True) for c in cols]
    ylab = _text_image([ylabel], font, rotate=True) if ylabel else None
    left = 6 + (ylab.width + 4 if ylab else 0) + max([im.width for _, im in ylabels] + [0]) + 6
    grid_w, grid_h = cw * len(cols), ch * len(rows)
    lines = _wrap(title, font, max(left + grid_w, int(2.4 * dpi))) if title else []
    head = max(len(lines) * step + 8, font.size // 2 + 4)
    below = max([im.height for im in xlabels] + [0]) + 4
    xl = _text_image([xlabel], font) if xlabel else None
    width = max([left + grid_w + 10 + _colorbar_width(font, lo, hi, colorbar, grid_h) + 6])
    width = max([width] + [int(font.getlength(t)) + 8 for t in lines])
    img = Image.new("RGB", (width, head + grid_h + below + (xl.height + 4 if xl else 0) + 4), "white")
    draw = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        draw.text((4, 4 + i * step), t, fill="black", font=font, anchor="la")
    cells = np.repeat(np.repeat(_colours(cmap, m, lo, hi), ch, 0), cw, 1)
    img.paste(Image.fromarray(np.ascontiguousarray(cells)), (left, head))
    for i, im in ylabels:
        img.paste(im, (left - 4 - im.width, int(head + (i + 0.5) * ch - im.height / 2)), im)
    for j, im in enumerate(xlabels):  # the end of each label at its column, as matplotlib's ha="right"
        img.paste(im, (int(left + (j + 0.5) * cw - im.width + font.size / 2), head + grid_h + 4), im)
    if ylab is not None:
        img.paste(ylab, (6, int(head + grid_h / 2 - ylab.height / 2)), ylab)
    if xl is not None:
        img.paste(xl, (int(left + grid_w / 2 - xl.width / 2), head + grid_h + below), xl)
    _colorbar(img, draw, font, (left + grid_w + 10, head, grid_h), cmap, lo, hi, colorbar)
    return _write_png(img, path)


def strip(groups: dict[str, Sequence[float]], path: str | Path, *, title: str = "", ylabel: str = "") -> Path:
    """One column of dots per group (e.g. each filter's selectivity, per layer), with the median
    as an orange bar; set with Pillow in matplotlib's font at :data:`SMALL` points."""
    from PIL import ImageDraw

    values = [np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=np.float64) for v in groups.values()]
    finite = np.concatenate(values) if values else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    margin = 0.05 * (hi - lo) if hi > lo else 0.5  # matplotlib's margins: no dot on the frame
    chart = _Chart(list(groups), lo - margin, hi + margin, ylabel, title, slot=0.9, height=2.2, tight=True)
    img = chart.image()
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(0)  # fixed jitter: the same data give the same picture
    r = max(2, int(round(0.022 * STYLE["savefig.dpi"])))
    for i, v in enumerate(values):
        centre = chart.left + (i + 0.5) * chart.slot
        for dx, y in zip(rng.uniform(-0.18, 0.18, len(v)), v):
            x, yy = centre + dx * chart.slot, chart.y(y)
            draw.ellipse((x - r, yy - r, x + r, yy + r), fill=DOT)
        if len(v):
            y = chart.y(float(np.median(v)))
            draw.line((centre - 0.3 * chart.slot, y, centre + 0.3 * chart.slot, y), fill=ORANGE, width=3)
    chart.finish(img, draw)
    return _write_png(img, path)


def panels(
    series: dict[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str = "",
    title: str = "",
    errors: dict[str, Sequence[float]] | None = None,
    highlight: Sequence[int] = (),
    highlight_label: str = "",
) -> Path:
    """Stacked bar panels sharing one x axis (e.g. per-filter statistics of a layer), set with
    Pillow (see :func:`_bar_panels`); the ``highlight`` bars in red."""
    n = max((len(v) for v in series.values()), default=0)
    marked = set(highlight)
    colors = [RED if i in marked else BLUE for i in range(n)]
    rows = [(label, values, (errors or {}).get(label), colors) for label, values in series.items()]
    legend = (RED, highlight_label) if marked and highlight_label else None
    return _bar_panels(rows, [str(i) for i in range(n)], path, title=title, xlabel=xlabel, legend=legend)


def grouped_bars(
    series: dict[str, Sequence[float]],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Side-by-side bars per label, one colour per series (e.g. per-class accuracy before/after),
    a legend at the top left; a NaN value gets no bar. Set with Pillow in matplotlib's font at
    :data:`SMALL` points."""
    from PIL import ImageDraw

    rows = [np.asarray([np.nan if x is None else x for x in v], dtype=np.float64) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in rows]) if rows else np.zeros(0)
    lo, hi = ylim if ylim else (min(0.0, float(finite.min(initial=0.0))), max(0.0, float(finite.max(initial=1.0))))
    legend = [(CYCLE[s % len(CYCLE)], str(n)) for s, n in enumerate(series)]
    chart = _Chart(list(labels), lo, hi, ylabel, title, slot=0.5, height=2.2, tight=ylim is not None, legend=legend)
    img = chart.image()
    draw = ImageDraw.Draw(img)
    k = max(1, len(rows))
    width = 0.8 * chart.slot / k
    zero = chart.y(min(max(0.0, chart.bottom), chart.top))
    for s, v in enumerate(rows):
        colour = CYCLE[s % len(CYCLE)]
        for i, x in enumerate(v):
            if np.isfinite(x):
                a = chart.left + (i + 0.1) * chart.slot + s * width
                y = chart.y(min(max(x, chart.bottom), chart.top))
                draw.rectangle((round(a), min(zero, y), round(a + width) - 1, max(zero, y)), fill=colour)
    chart.finish(img, draw)
    return _write_png(img, path)


# matplotlib's default colour cycle (the colours of series); DOT: BLUE at 70 % on white
CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
DOT = "#82a0c8"


def _write_png(img: Any, path: str | Path) -> Path:
    """A Pillow image as a PNG, atomically, with light compression (the 236 figures of a CIFAR run:
    0.59 s and 7.8 MB against 0.98 s and 7.0 MB at the default level), and not synced to disk: a
    figure is redrawn from the run folder's numbers, and the rename alone keeps a reader from ever
    seeing half of one."""
    from .utils import atomic_write

    atomic_write(Path(path), lambda f: img.save(f, format="png", compress_level=1), mode="wb", sync=False)
    return Path(path)


class _Chart:
    """One chart set with Pillow: a value axis of round ticks (grid lines across), its label turned
    upright, ``labels`` under slots of ``slot`` inches (upright when they fit, else turned a
    quarter), a title wrapped over the top, ``legend`` ((colour, text) entries) right of the axes,
    where it hides no data. ``tight``: the axis spans [low, high] exactly, else it is widened to
    the round ticks around them. :meth:`y` maps a value to a pixel row."""

    def __init__(
        self,
        labels: list[str],
        low: float,
        high: float,
        ylabel: str,
        title: str,
        slot: float,
        height: float,
        tight: bool,
        legend: Sequence[tuple[str, str]] = (),
    ):
        dpi = STYLE["savefig.dpi"]
        self.font = font = _font(int(round(SMALL * dpi / 72)))
        if not high > low:
            low, high = low - 0.5, high + 0.5
        ticks = nice_ticks(low, high, 5)
        if not tight:
            low = max([t for t in ticks if t <= low + 1e-12 * abs(low)], default=low)
            high = min([t for t in ticks if t >= high - 1e-12 * abs(high)], default=high)
        eps = 1e-9 * (high - low)
        self.bottom, self.top = low, high
        self.ticks = [(t, f"{t:.3g}".replace("-", "\u2212")) for t in ticks if low - eps <= t <= high + eps]
        self.slot = max(int(slot * dpi), int(1.6 * font.size))
        self.ph = int(height * dpi)
        flat = [_text_image([str(x)], font) for x in labels]
        upright = all(im.width <= self.slot - 4 for im in flat)
        self.xlabels = flat if upright else [_text_image([str(x)], font, rotate=True) for x in labels]
        self.ylab = _text_image([ylabel], font, rotate=True) if ylabel else None
        tick_w = max([int(font.getlength(t)) for _, t in self.ticks] + [0])
        self.left = 6 + (self.ylab.width + 6 if self.ylab else 0) + tick_w + 6
        self.plot_w = self.slot * max(len(labels), 1)
        self.legend = list(legend)
        key_w = max([int(font.getlength(t)) for _, t in self.legend] + [0]) + 2 * font.size + 12
        width = self.left + self.plot_w + 12 + (key_w if self.legend else 0)
        step = int(round(1.25 * font.size))
        self.lines = _wrap(title, font, max(width, int(2.4 * dpi)) - 8) if title else []
        self.width = max([width] + [int(font.getlength(t)) + 8 for t in self.lines])
        self.head = len(self.lines) * step + 8 if self.lines else font.size // 2 + 4
        self.below = max([im.height for im in self.xlabels] + [0]) + 12

    def y(self, value: float) -> float:
        return self.head + (self.top - value) / (self.top - self.bottom) * self.ph

    def image(self) -> Any:
        """The blank chart: white, its grid lines drawn."""
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.head + self.ph + self.below), "white")
        draw = ImageDraw.Draw(img)
        for t, _ in self.ticks:
            draw.line((self.left, self.y(t), self.left + self.plot_w, self.y(t)), fill="#e6e6e6")
        return img

    def finish(self, img: Any, draw: Any) -> None:
        """Axes, ticks, labels, title and legend over what was drawn."""
        font, step = self.font, int(round(1.25 * self.font.size))
        for i, t in enumerate(self.lines):
            draw.text((4, 4 + i * step), t, fill="black", font=font, anchor="la")
        base = self.head + self.ph
        draw.line((self.left, self.head, self.left, base), fill="black")
        draw.line((self.left, base, self.left + self.plot_w, base), fill="black")
        for t, text in self.ticks:
            draw.line((self.left - 4, self.y(t), self.left, self.y(t)), fill="black")
            draw.text((self.left - 6, self.y(t)), text, fill="black", font=font, anchor="rm")
        if self.ylab is not None:
            img.paste(self.ylab, (6, int(self.head + self.ph / 2 - self.ylab.height / 2)), self.ylab)
        for i, im in enumerate(self.xlabels):
            c = self.left + i * self.slot + self.slot // 2
            draw.line((c, base, c, base + 3), fill="black")
            img.paste(im, (int(c - im.width / 2), base + 6), im)
        fs, x = font.size, self.left + self.plot_w + 12
        for n, (colour, text) in enumerate(self.legend):
            y = self.head + 6 + n * step
            draw.rectangle((x, y, x + 2 * fs, y + fs - 2), fill=colour)
            draw.text((x + 2 * fs + 4, y + (fs - 2) / 2), text, fill="black", font=font, anchor="lm")


BLUE, ORANGE, RED = "#4c72b0", "#dd8452", "#c44e52"


def _axis_ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    """A value axis covering [lo, hi] (and 0) with about four round ticks: (bottom, top, ticks)."""
    lo, hi = min(0.0, lo), max(0.0, hi)
    if not hi > lo:
        hi = lo + 1.0
    ticks = nice_ticks(lo, hi, 4)
    bottom = max([t for t in ticks if t <= lo + 1e-12 * abs(lo)], default=lo)
    top = min([t for t in ticks if t >= hi - 1e-12 * abs(hi)], default=hi)
    return bottom, top, [t for t in ticks if bottom <= t <= top]


def _text_image(lines: Sequence[str], font: Any, color: str = "black", rotate: bool = False) -> Any:
    """Lines of text on a transparent image, turned a quarter anticlockwise when ``rotate``."""
    from PIL import Image, ImageDraw

    step = int(round(1.25 * font.size))
    faced = [text_face(t, font) for t in lines]
    w = max([int(np.ceil(f.getlength(t))) for t, f in faced] + [1]) + 2
    img = Image.new("RGBA", (w, step * len(lines) + 2), (255, 255, 255, 0))
    draw = ImageDraw.Draw(img)
    for i, (t, f) in enumerate(faced):
        draw.text((w / 2, i * step), t, fill=color, font=f, anchor="ma")
    return img.rotate(90, expand=True) if rotate else img


def _bar_panels(
    panels: Sequence[tuple[str, Sequence[float], Sequence[float] | None, Sequence[str]]],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    legend: tuple[str, str] | None = None,
    height: float = 1.3,
) -> Path:
    """Bar charts stacked over one x axis, set with Pillow in matplotlib's font at :data:`SMALL`
    points: each panel is (value-axis label, values, error bars or None, bar colours), with a value
    axis of round ticks from 0; a NaN value gets no bar. ``labels`` name the bars (drawn upright
    under the last panel, at most about 32); ``legend`` is (colour, text). A tenth of matplotlib's
    time, for the per-filter small multiples an analysis draws by the dozen."""
    from PIL import Image, ImageDraw

    dpi = STYLE["savefig.dpi"]
    font = _font(int(round(SMALL * dpi / 72)))
    fs = font.size
    n = len(labels)
    slot = max(int(1.4 * fs), min(int(0.3 * dpi), int(4.5 * dpi) // max(n, 1)))
    ph = int(height * dpi)
    axes = []
    for ylabel, values, errors, colors in panels:
        v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
        e = np.zeros_like(v) if errors is None else np.nan_to_num(np.asarray(errors, dtype=np.float64))
        finite = np.isfinite(v)
        lo = float(np.min(v[finite] - e[finite])) if finite.any() else 0.0
        hi = float(np.max(v[finite] + e[finite])) if finite.any() else 1.0
        bottom, top, ticks = _axis_ticks(lo, hi)
        tick_text = [f"{t:.3g}" for t in ticks]
        axes.append((_text_image(ylabel.split("\n"), font, rotate=True) if ylabel else None, v, e, colors))
        axes[-1] += (bottom, top, ticks, tick_text)
    tick_w = max([int(font.getlength(t)) for a in axes for t in a[7]] + [0])
    ylab_w = max([a[0].width for a in axes if a[0] is not None] + [0])
    left = 6 + ylab_w + 6 + tick_w + 6
    plot_w = slot * max(n, 1)
    step = max(1, -(-n // 32))
    xlabels = [_text_image([str(labels[i])], font, rotate=True) for i in range(0, n, step)]
    below = max([im.height for im in xlabels] + [0]) + 8
    xl = _text_image([xlabel], font) if xlabel else None
    below += (xl.height + 4) if xl is not None else 0
    width = left + plot_w + 12
    lines = _wrap(title, font, max(width, int(2.4 * dpi)) - 8) if title else []
    width = max([width] + [int(font.getlength(t)) + 8 for t in lines])
    head = len(lines) * int(round(1.25 * fs)) + 8
    gap = int(0.12 * dpi)
    img = Image.new("RGB", (width, head + len(axes) * (ph + gap) + below), "white")
    draw = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        draw.text((4, 4 + i * int(round(1.25 * fs))), t, fill="black", font=font, anchor="la")
    for k, axis in enumerate(axes):
        _bar_panel(img, draw, font, axis, (left, head + k * (ph + gap), slot, ph, ylab_w), legend if k == 0 else None)
    y_axis = head + (len(axes) - 1) * (ph + gap) + ph
    for j, im in zip(range(0, n, step), xlabels):
        c = left + j * slot + slot // 2
        draw.line((c, y_axis, c, y_axis + 3), fill="black")
        img.paste(im, (int(c - im.width / 2), y_axis + 5), im)
    if xl is not None:
        img.paste(xl, (int(left + plot_w / 2 - xl.width / 2), img.height - xl.height - 4), xl)
    return _write_png(img, path)


def _bar_panel(img: Any, draw: Any, font: Any, axis: tuple, box: tuple, legend: tuple[str, str] | None) -> None:
    """One panel of :func:`_bar_panels` at ``box`` = (left, top, bar slot, height, y-label width)."""
    ylab, v, e, colors, bottom, top, ticks, tick_text = axis
    left, y0, slot, ph, ylab_w = box
    plot_w = slot * max(len(v), 1)

    def ypx(x: float) -> float:
        return y0 + (top - x) / (top - bottom) * ph

    for t, s in zip(ticks, tick_text):
        y = ypx(t)
        draw.line((left, y, left + plot_w, y), fill="#e6e6e6")
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((left - 6, y), s, fill="black", font=font, anchor="rm")
    if ylab is not None:
        img.paste(ylab, (6 + (ylab_w - ylab.width) // 2, int(y0 + ph / 2 - ylab.height / 2)), ylab)
    zero = ypx(0.0)
    for i, x in enumerate(v):
        if not np.isfinite(x):
            continue
        a, b = left + i * slot + slot // 10, left + (i + 1) * slot - slot // 10 - 1
        draw.rectangle((a, min(zero, ypx(x)), b, max(zero, ypx(x))), fill=colors[i % len(colors)])
        if e[i] > 0:
            draw.line(((a + b) / 2, ypx(x - e[i]), (a + b) / 2, ypx(x + e[i])), fill="#999999", width=1)
    draw.line((left, y0, left, y0 + ph), fill="black")
    draw.line((left, zero, left + plot_w, zero), fill="black")
    if legend is not None:
        fs, lw = font.size, int(font.getlength(legend[1]))
        x1 = left + plot_w - 4
        draw.rectangle((x1 - lw - fs - 4, y0 + 4, x1 - lw - 4, y0 + 4 + fs), fill=legend[0])
        draw.text((x1, y0 + 4 + fs / 2), legend[1], fill="black", font=font, anchor="rm")


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    highlight: int | None = None,
) -> Path:
    """One bar per label (e.g. per class), set with Pillow (see :func:`_bar_panels`); the bar at
    ``highlight`` in orange."""
    colors = [ORANGE if i == highlight else BLUE for i in range(len(values))]
    return _bar_panels([(ylabel, values, None, colors)], labels, path, title=title, height=1.6)
