"""``convlens.show(images, maps)``: heat maps drawn over their images, from any tensors.

Any explainer's ``attribute`` output (or any other method's maps, Captum's included) goes through
the one shared normalisation, :func:`convlens.explain.heatmap.normalize_heatmaps`, so every map
of a call is on the scale the figure names (one scale for all maps by default)::

    maps = Saliency(model).attribute(images)
    convlens.show(images, maps)                                   # one row, maps over images
    convlens.show(images, {"saliency": s, "grad-cam": g}, layout="side")

Maps of another size than the image (Grad-CAM at a layer's resolution) are stretched over it.
The result is a matplotlib ``Figure`` that a notebook shows inline; no pyplot or global state.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

LAYOUTS = ("overlay", "side", "map")


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _images(images: Any) -> list[np.ndarray]:
    """(N, C, H, W) or (N, H, W) images (floats in [0, 1], or uint8) -> displayable arrays."""
    from .plots import to_display

    a = _array(images)
    if a.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W), got {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 1)
    return [to_display(x, "chw" if a.ndim == 4 else "hw") for x in a]


def show(
    images: Any,
    maps: Any | Mapping[str, Any],
    *,
    layout: str = "overlay",
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str | None = None,
    **heatmap: Any,
) -> Any:
    """Draw ``maps`` over (or beside) ``images``; returns a ``Figure``.

    ``images``: (N, C, H, W) or (N, H, W) tensor or array. ``maps``: (N, H, W) or (N, C, H, W)
    maps, one per image, or ``{name: maps}`` for one row per method. ``layout``: ``overlay``
    (the map blended over its image), ``side`` (image, then the map) or ``map`` (the map alone).
    ``heatmap`` options go to ``normalize_heatmaps`` (``sign``, ``reduce``, ``percentile``,
    ``scale``, ``vmin``, ``vmax``); the colour bar names the scale they give.
    """
    from .explain.heatmap import normalize_heatmaps
    from .plots import STYLE
    from .results import new_figure

    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of: {', '.join(LAYOUTS)}")
    shown = _images(images)
    rows = dict(maps) if isinstance(maps, Mapping) else {"": maps}
    normed = {}
    for name, m in rows.items():
        a, scale = normalize_heatmaps(_array(m), **heatmap)
        if len(a) != len(shown) or a.ndim != 3:
            raise ValueError(
                f"maps{f' {name!r}' if name else ''} give {len(a)} map(s) of shape {a.shape[1:]} for "
                f"{len(shown)} image(s); give one (H, W) or (C, H, W) map per image"
            )
        normed[name] = (a, scale)
    from matplotlib import rc_context

    with rc_context(STYLE):
        return _draw(new_figure, shown, normed, layout, titles, alpha, cmap)


def _draw(new_figure: Any, shown: list[np.ndarray], normed: dict, layout: str, titles, alpha, cmap) -> Any:
    import textwrap

    from .plots import SMALL

    per = 2 if layout == "side" else 1
    n, r = len(shown), len(normed)
    fig = new_figure(figsize=(1.6 * n * per + 1.4, 1.9 * r + 0.5))
    axes = fig.subplots(r, n * per, squeeze=False)
    for row, (name, (a, scale)) in enumerate(normed.items()):
        im = None
        signed = scale.sign == "signed"
        cm = cmap or ("bwr" if signed else "inferno")
        lo = -1 if signed else 0
        for i, img in enumerate(shown):
            h, w = img.shape[:2]
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
            grey = "gray" if img.ndim == 2 else None
            ax = axes[row, i * per]
            if layout != "map":
                ax.imshow(img, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
            if layout == "side":
                ax.axis("off")
                ax = axes[row, i * per + 1]
            im = ax.imshow(a[i], cmap=cm, vmin=lo, vmax=1, extent=extent, alpha=alpha if layout == "overlay" else 1.0)
            ax.axis("off")
            if row == 0 and titles is not None and i < len(titles):
                axes[row, i * per].set_title(str(titles[i]), fontsize=SMALL)
        if name:
            axes[row, 0].text(-0.1, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center", ha="right")
        # each row (method) is normalised on its own, so each has its own colour bar naming its
        # scale, wrapped to the row's height (about 4.5 pt a character at SMALL points)
        cb = fig.colorbar(im, ax=axes[row, :].tolist(), fraction=0.03, pad=0.01)
        cb.set_label("\n".join(textwrap.wrap(scale.label, int(0.8 * 1.9 * 72 / (0.6 * SMALL)))), fontsize=SMALL)
        cb.ax.tick_params(labelsize=SMALL)
    return fig
