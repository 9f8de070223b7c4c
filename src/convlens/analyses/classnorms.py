"""classnorms: which filters are "experts" for a class (the CSE849 reports' class-wise norms).

Per filter and class, the average over that class's images of the norm of the filter's feature
map (L1 or L2, divided by the number of positions, resp. its square root, so layers of different
map sizes compare). Per filter: the variance of these class means, their coefficient of variation
(std / mean, free of the layer's scale) and the class selectivity index

    SI = (mu_max - mu_rest) / (mu_max + mu_rest)

(mu_max: the preferred class's mean; mu_rest: the mean of the other classes): 0 when every class
excites the filter equally, 1 when only one class does. Filters are ranked by SI, leaving out
the nearly silent ones (a dead filter that fires a few times on one class scores 1 for nothing).
A class without images in the split has no mean (null); with fewer than two classes present,
the variance, coefficient of variation, selectivity and preferred class are null too (they
compare classes), and no filter is ranked.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..trace import get_layer
from .options import ClassNormsOptions
from .base import AnalysisError, Figures, Streaming, Subject, block, register, resolve_layers


def selectivity(means: torch.Tensor) -> torch.Tensor:
    """Class selectivity index of each row of ``means`` (filters x classes, non-negative)."""
    c = means.shape[1]
    top = means.max(1).values
    rest = (means.sum(1) - top) / max(c - 1, 1)
    total = top + rest
    return torch.where(total > 0, (top - rest) / total.clamp(min=1e-30), torch.zeros_like(total))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or value != value else format(value, spec)


@register
class ClassNorms(Streaming, ClassNormsOptions):
    """Per-class average feature-map norm of each filter, variance across classes, expert ranking."""

    name = "classnorms"

    def probes(self, subject: Subject) -> list[str]:
        model = subject.model
        self._layers = resolve_layers(model, self.layers, "first_last", self.name)
        for name in self.bars or []:
            if name not in self._layers:
                raise AnalysisError(
                    f"classnorms: bars layer {name!r} is not among the measured layers ({', '.join(self._layers)})"
                )
        self._probe = {
            layer: block(model, layer).at(self.at) if isinstance(get_layer(model, layer), nn.Conv2d) else layer
            for layer in self._layers
        }
        return list(dict.fromkeys(self._probe.values()))

    def start(self, subject: Subject) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts = torch.zeros(len(subject.classes), dtype=torch.long)
        self._first_probe: str | None = None

    def observe(self, probe: str, output: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> None:
        hw = output.shape[2] * output.shape[3]
        # one fused pass over the map (no |x| or x^2 temporaries)
        norms = torch.linalg.vector_norm(output, 1 if self.norm == "l1" else 2, dim=(2, 3))
        norms = norms / (hw if self.norm == "l1" else math.sqrt(hw))
        labels = labels.cpu()
        if probe not in self._sums:
            self._sums[probe] = torch.zeros(len(self._counts), output.shape[1], dtype=torch.float64)
        self._sums[probe].index_add_(0, labels, norms.double().cpu())
        if self._first_probe in (None, probe):  # count each image once, whatever the number of probes
            self._first_probe = probe
            self._counts += torch.bincount(labels, minlength=len(self._counts))

    def finish(self, subject: Subject) -> dict[str, Any]:
        classes = subject.classes
        counts = self._counts.double()
        layers: dict[str, Any] = {}
        ranking = []
        for layer in self._layers:
            sums = self._sums.get(self._probe[layer])
            if sums is None:
                continue
            seen = counts > 0  # a class absent from the split (e.g. a small --limit) has no mean
            means = (sums / counts.clamp(min=1)[:, None]).t()  # filters x classes
            means[:, ~seen] = torch.nan
            valid = means[:, seen]
            var = valid.var(1, correction=0)
            overall = valid.mean(1)
            cv = torch.where(overall > 0, var.sqrt() / overall.clamp(min=1e-30), torch.zeros_like(overall))
            si = selectivity(valid)
            pref_idx = torch.nonzero(seen).flatten()[valid.argmax(1)]
            quiet = overall < self.min_response * overall.mean()
            if int(seen.sum()) < 2:  # nothing to compare: the class statistics are undefined
                var = cv = si = torch.full_like(overall, torch.nan)
            layers[layer] = {
                "measured_at": self._probe[layer],
                "channels": means.shape[0],
                "class_means": means.tolist(),
                "mean": overall.tolist(),
                "variance": var.tolist(),
                "cv": cv.tolist(),
                "selectivity": si.tolist(),
                "preferred_class": [classes[int(i)] if int(seen.sum()) > 1 else None for i in pref_idx],
                "quiet": torch.nonzero(quiet).flatten().tolist(),
                "quiet_threshold": float(self.min_response * overall.mean()),
            }
            order = [
                int(f) for f in torch.argsort(si, descending=True, stable=True) if not quiet[f] and not si[f].isnan()
            ]
            layers[layer]["experts"] = order[: self.experts]
            ranking += [
                {
                    "layer": layer,
                    "filter": f,
                    "selectivity": float(si[f]),
                    "class": classes[int(pref_idx[f])],
                    "cv": float(cv[f]),
                }
                for f in order
            ]
        ranking.sort(key=lambda r: -r["selectivity"])  # stable: ties keep layer and filter order
        figures = Figures(subject, self.name, self.key_for(subject))
        if figures.on:
            self._draw(subject, layers, figures)
        return {
            "norm": self.norm,
            "scale": "L1 / positions" if self.norm == "l1" else "L2 / sqrt(positions)",
            "classes": classes,
            "class_counts": self._counts.tolist(),
            "layers": layers,
            "experts": ranking[: self.experts],
            "figures": figures,
        }

    def _draw(self, subject: Subject, layers: dict[str, Any], figures: Figures) -> None:
        from .. import plots

        classes = subject.classes
        names = list(layers)
        bar_layers = self.bars if self.bars is not None else list(dict.fromkeys([names[0], names[-1]])) if names else []
        norm = self.norm.upper()
        for layer in bar_layers:  # each filter's bars: listed, drawn when first needed (.perfilter)
            info = layers[layer]
            for f in range(len(info["class_means"])):
                pref = info["preferred_class"][f]
                var, si = _fmt(info["variance"][f], ".3g"), _fmt(info["selectivity"][f], ".2f")
                figures.later(
                    figures.path(layer, f"f{f}.png"),
                    f"{layer} filter {f}: average {norm} norm of its feature map ({info['measured_at']}) per "
                    f"class; variance across classes {var}, selectivity {si}, preferred class "
                    f"{pref if pref is not None else 'n/a'} (orange)",
                    layer,
                    f,
                )
        for layer, info in layers.items():
            rel = torch.tensor(
                [[math.nan if v is None else v for v in row] for row in info["class_means"]], dtype=torch.float64
            )
            rel = rel / rel.nanmean(1, keepdim=True).clamp(min=1e-30)
            p = plots.heatmap(
                rel.tolist(),
                [f"f{i}" for i in range(len(rel))],
                classes,
                figures.path(f"{layer}.png"),
                title=f"{layer}: class means / filter mean ({norm})",
                xlabel="class",
                ylabel="filter",
                colorbar="relative norm",
                cmap="magma",
            )
            figures.add(
                p,
                f"{layer}: each filter's per-class average {norm} norm divided by its mean over classes "
                "(bright: the classes it prefers)",
                layer,
            )
        if layers:
            p = plots.strip(
                {k: v["selectivity"] for k, v in layers.items()},
                figures.path("selectivity.png"),
                title="class selectivity of each filter, per layer",
                ylabel="selectivity index",
            )
            figures.add(
                p,
                "Class selectivity index of every filter, per layer (bar: median); deeper layers usually "
                "hold more class-specific filters",
            )

    def lines(self, result: dict[str, Any]) -> list[str]:
        out = []
        for layer, info in result["layers"].items():
            si = [v for v in info["selectivity"] if v is not None and v == v]
            if not si:
                out.append(f"{layer}: fewer than two classes in the split: no selectivity or variance across classes")
                continue
            var = [v for v in info["variance"] if v is not None and v == v]
            out.append(
                f"{layer}: median selectivity {sorted(si)[len(si) // 2]:.2f}, mean variance across classes "
                f"{sum(var) / len(var):.3g}"
            )
        top = ", ".join(
            f"{e['layer']} f{e['filter']} ({e['class']}, SI {e['selectivity']:.2f})" for e in result["experts"][:5]
        )
        if top:
            out.append(f"experts: {top}")
        return out
