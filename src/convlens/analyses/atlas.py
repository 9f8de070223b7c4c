"""atlas: per class, the filters that carry it across the data set, ranked by contribution.

A filter's norm per class (``classnorms``) says how strongly it fires on a class's images; its
contribution says how much of the class score it carries. For every image of the split that the
model classifies correctly, each filter of the layer (default: Grad-CAM's, the last conv block's
output) contributes activation x gradient of the true class's logit, summed over positions
(:class:`convlens.explain.concepts.Concepts`); the atlas averages that per class and lists the
filters with the largest mean, each with its top-k dataset patches (what it responds to
everywhere, from the run's topk of the layer, computed when the run has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..utils import to_numpy
from .base import Analysis, AnalysisError, Figures, Subject, register
from .options import AtlasOptions


@register
class Atlas(Analysis, AtlasOptions):
    """Class atlas: per class, the filters with the largest mean contribution over its correct images."""

    name = "atlas"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1 or self.patches < 0:
            raise AnalysisError(f"atlas: top={self.top} must be 1 or more and patches={self.patches} 0 or more")

    def contributions(
        self, subject: Subject, layer: str | None
    ) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(layer, per-class sums (K, C), correct images per class (K,), their share sums (K,))``."""
        from ..explain.concepts import Concepts

        expl = Concepts(subject.model, layer)
        k = len(subject.classes)
        sums = counts = totals = None
        for x, labels, _ in subject.batches(self.name):
            c = expl.attribute(x, labels)
            ok = expl.details["predicted"] == labels
            if sums is None:
                sums, counts, totals = torch.zeros(k, c.shape[1]), torch.zeros(k), torch.zeros(k)
            y = labels[ok].cpu()
            sums.index_add_(0, y, c[ok].cpu())
            counts.index_add_(0, y, torch.ones(len(y)))
            totals.index_add_(0, y, expl.details["total"][ok].cpu())
        if sums is None:
            raise AnalysisError("atlas: the split is empty")
        return str(expl.details["layer"]), sums, counts, totals

    def compute(self, subject: Subject) -> dict[str, Any]:
        figures = Figures(subject, self.name, self.key())
        layers = {}
        for layer in self.layers or [None]:  # one pass per layer
            name, entry = self._layer(subject, layer, figures)
            layers[name] = entry
        return {"layers": layers, "figures": figures}

    def _layer(self, subject: Subject, layer: str | None, figures: Figures) -> tuple[str, dict[str, Any]]:
        layer, sums, counts, totals = self.contributions(subject, layer)
        mean = sums / counts.clamp(min=1)[:, None]
        top = min(self.top, mean.shape[1])
        classes = []
        for c, name in enumerate(subject.classes):
            n = int(counts[c])
            order = torch.argsort(mean[c], descending=True, stable=True)[:top].tolist() if n else []
            share = float(totals[c]) / n if n else None
            classes.append(
                {
                    "class": name,
                    "correct": n,
                    "mean_total": share,
                    "filters": [
                        {
                            "filter": int(f),
                            "mean_contribution": float(mean[c, f]),
                            "share": float(mean[c, f]) / share if share else None,
                        }
                        for f in order
                    ],
                }
            )
        entry: dict[str, Any] = {"classes": classes, "mean_contribution": to_numpy(mean).round(6).tolist()}
        if figures.on:
            self._matrix(subject, layer, mean, counts, figures)
        if figures.on and self.patches:
            entry.update(self._draw(subject, layer, classes, figures))
        return layer, entry

    def _matrix(self, subject: Subject, layer: str, mean: torch.Tensor, counts: torch.Tensor, figures: Figures) -> None:
        from .. import plots

        lim = float(mean.abs().max()) or 1.0
        m = to_numpy(mean.t()).astype(np.float64)
        m[:, to_numpy(counts) == 0] = np.nan  # no correct image: no mean
        path = plots.heatmap(
            m,
            [f"f{f}" for f in range(m.shape[0])],
            list(subject.classes),
            figures.path(f"{layer}_matrix.png"),
            title=f"{layer}: mean contribution of each filter to each class's score (its correct images)",
            xlabel="class",
            ylabel="filter",
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            colorbar="mean contribution",
        )
        figures.add(
            path,
            f"Mean contribution (activation x gradient of the class logit, summed over positions) of every {layer} "
            f"filter (rows) to each class (columns), over the class's correctly classified {subject.split_name} "
            "images (white: none); red raises the score, blue lowers it.",
            layer,
        )

    def _draw(self, subject: Subject, layer: str, classes: list[dict[str, Any]], figures: Figures) -> dict[str, Any]:
        from .. import plots
        from .conceptpatches import Patches, ensure_topk

        doc, info, computed = ensure_topk(
            subject.root, layer, subject.split_name, lambda: subject, model=subject.model, echo=subject.say
        )
        patches = Patches(subject.root, doc, info)
        tiles, titles, rows = [], [], []
        blank = np.ones((subject.in_shape[0], 4, 4), np.float32)
        cols = self.top * self.patches
        for entry in classes:
            row_tiles, row_titles = [], []
            for fi in entry["filters"]:
                got = (patches.of(fi["filter"], self.patches) + [blank] * self.patches)[: self.patches]
                row_tiles += got
                row_titles += [f"f{fi['filter']} {fi['mean_contribution']:.2g}"] + [""] * (self.patches - 1)
            pad = cols - len(row_tiles)
            tiles += row_tiles + [blank] * pad
            titles += row_titles + [""] * pad
            rows.append(f"{entry['class']} ({entry['correct']})")
        path = plots.mosaic(
            tiles,
            figures.path(f"{layer}.png"),
            layout="chw",
            cols=cols,
            titles=titles,
            row_labels=rows,
            tile_inches=0.5,
            suptitle=f"class atlas of {layer}: per class (correct images), the {self.top} filters with the largest "
            f"mean contribution to its score, each with its top {self.patches} patches",
        )
        figures.add(
            path,
            f"Class atlas of {layer}: for each class (rows; in brackets its correctly classified "
            f"{subject.split_name} images), the {self.top} filters with the largest mean contribution "
            f"(activation x gradient of the class logit, summed over positions) and each filter's top "
            f"{self.patches} patches over the {doc.get('split')} split (topk at {info.get('measured_at')})",
            layer,
        )
        source = {"measured_at": info.get("measured_at"), "split": doc.get("split"), "computed_now": computed}
        return {"patches_from": source}

    def lines(self, result: dict[str, Any]) -> list[str]:
        return [
            f"{layer} {e['class']}: "
            + ", ".join(f"f{fi['filter']} {fi['mean_contribution']:.3g}" for fi in e["filters"][:3])
            for layer, info in result["layers"].items()
            for e in info["classes"]
        ]
