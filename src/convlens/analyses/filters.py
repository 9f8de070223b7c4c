"""filters: the weights of conv layers as pictures, and their norms.

Weights are drawn on a symmetric scale: grey is 0, white the largest positive weight, black the
most negative (per colour channel for the RGB composites), either one scale shared by all filters
of a layer (compare filters) or one per filter (see each filter's shape); the figure says which.
The first layer on colour images gets an RGB composite per filter and a grey image per input
channel (the CSE849 report's 7x7 filters per channel); deeper layers a grid of filters by input
channels. Kernels are upscaled nearest-neighbour, so 3x3 and 7x7 stay legible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..utils import to_numpy
from ..trace import conv_layers
from .options import FiltersOptions
from ..run import Layout
from .base import Analysis, AnalysisError, Figures, Subject, register, require_conv, resolve_layers
from .perfilter import weights_shown


@register
class Filters(Analysis, FiltersOptions):
    """Conv weights as images (RGB composite and per channel for the first layer), with norms."""

    name = "filters"

    def compute(self, subject: Subject) -> dict[str, Any]:
        model = subject.model
        names = resolve_layers(model, self.layers, "all", self.name)
        first = conv_layers(model)[0]
        layers: dict[str, Any] = {}
        weights: dict[str, np.ndarray] = {}
        figures = Figures(subject, self.name, self.key_for(subject))
        for layer in names:
            conv = require_conv(model, layer, self.name)
            w = conv.weight.detach().float().cpu()
            flat = w.flatten(1)
            layers[layer] = {
                "shape": list(w.shape),
                "l2": flat.norm(dim=1).tolist(),
                "l1": flat.abs().sum(1).tolist(),
                "min": flat.min(1).values.tolist(),
                "max": flat.max(1).values.tolist(),
                "bias": conv.bias.detach().float().cpu().tolist() if conv.bias is not None else None,
                "max_abs": float(flat.abs().max()),
                "rgb": layer == first and w.shape[1] == 3,  # drawn as RGB composites
            }
            weights[layer] = to_numpy(w)
            if figures.on:
                self._draw(layer, weights[layer], rgb=layers[layer]["rgb"], figures=figures)
        stored = {}
        if figures.on and self.per_filter:  # the weights the per-filter figures are drawn from
            artifact = Layout(subject.root).artifact(self.name, self.key_for(subject))
            stored["arrays"] = artifact.save_arrays(compressed=False, **weights)
        return {"layers": layers, "scale": self.scale, **stored, "figures": figures}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_channels < 1 or self.max_filters < 1:
            raise AnalysisError("filters: max_channels and max_filters must be at least 1")

    def _draw(self, layer: str, w: np.ndarray, rgb: bool, figures: Figures) -> None:
        """The layer's figures now; each filter's own listed, drawn when first needed (:mod:`.perfilter`)."""
        from .. import plots

        n, c = w.shape[:2]
        shown, how = weights_shown(w, self.scale)
        k = f"{w.shape[2]}x{w.shape[3]}"
        if rgb:
            p = plots.mosaic(
                [s for s in shown],
                figures.path(f"{layer}.png"),
                layout="chw",
                cols=16,
                titles=[f"f{i}" for i in range(n)],
                tile_inches=0.55,
                suptitle=f"{layer}: {n} {k} filters as RGB ({how})",
            )
            figures.add(p, f"{layer}: every filter as an RGB image ({how})", layer)
        rows = min(n, self.max_filters)
        cols = c if rgb else min(c, self.max_channels)
        tiles = [shown[i, j] for i in range(rows) for j in range(cols)]
        what = "RGB channels" if rgb else (f"input channels 0-{cols - 1} of {c}" if cols < c else "input channels")
        p = plots.mosaic(
            tiles,
            figures.path(f"{layer}_channels.png" if rgb else f"{layer}.png"),
            layout="hw",
            cols=cols,
            row_labels=[f"f{i}" for i in range(rows)],
            tile_inches=0.3 if cols > 8 else 0.45,
            suptitle=f"{layer}: filters {0}-{rows - 1} of {n} (rows) x {what} (columns), {k}; {how}",
        )
        figures.add(
            p,
            f"{layer}: the {k} kernel of each filter (rows) for each {what[:-1] if not rgb else 'colour channel'} "
            f"(columns); {how}",
            layer,
        )
        if not self.per_filter:
            return
        for i in range(n):
            figures.later(
                figures.path(layer, f"f{i}.png"), f"{layer} filter {i}: its weights per input channel ({how})", layer, i
            )

    def lines(self, result: dict[str, Any]) -> list[str]:
        out = []
        for layer, info in result["layers"].items():
            l2 = np.asarray(info["l2"])
            out.append(
                f"{layer}: {info['shape'][0]} filters of {info['shape'][1]}x{info['shape'][2]}x{info['shape'][3]}, "
                f"weight norm {l2.min():.3g} to {l2.max():.3g} (median {np.median(l2):.3g})"
            )
        return out
