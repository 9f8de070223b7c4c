"""featuremaps: what chosen images look like inside the network (the CSCI-611 report's Task 2).

For a few images, chosen by position in the split, by class (the first image of each named
class) or from a file, the feature maps of the chosen conv layers before the activation (after
the batch norm, if any) and after it. Each figure shares one colour scale across its maps, so a
filter that responds weakly looks weak: diverging around 0 before the activation, from 0 to the
largest value after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import to_numpy
from ..data.bundle import to_grayscale
from ..trace import TraceDict, get_layer
from .options import FeatureMapsOptions
from .base import Analysis, AnalysisError, Figures, Subject, block, check_spatial, register, resolve_layers


def load_image_file(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file as a float (C, H, W) tensor in [0, 1] with the model's channels and size."""
    from ..data.images import decode

    c, h, w = shape
    if h != w:
        raise AnalysisError(f"the model takes {h}x{w} images; only square inputs can be read from a file")
    if not Path(path).is_file():
        raise AnalysisError(f"image file {path} does not exist")
    a = decode(str(path), None, h)
    a = a[..., None] if a.ndim == 2 else a
    if c == 1 and a.shape[-1] == 3:
        a = to_grayscale(a[None])[0]
    elif c == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return torch.from_numpy(np.array(a)).permute(2, 0, 1).float().div(255)  # a writable copy


@register
class FeatureMaps(Analysis, FeatureMapsOptions):
    """Feature maps of chosen images at chosen layers, before and after the activation."""

    name = "featuremaps"

    def _pick(self, subject: Subject) -> list[dict[str, Any]]:
        split, classes = subject.split, subject.classes
        chosen: list[dict[str, Any]] = []
        for p in self.images or []:
            if not 0 <= p < len(split):
                raise AnalysisError(
                    f"featuremaps: image {p} is out of range; the {subject.split_name} split has "
                    f"{len(split)} images (0 to {len(split) - 1})"
                )
            chosen.append({"position": p})
        names = self.classes
        if names is None and not chosen and not self.file:
            present = sorted(set(split.labels.tolist()))
            names = [classes[c] for c in present[:3]]
        for name in names or []:
            if name not in classes:
                raise AnalysisError(f"featuremaps: unknown class {name!r}; classes: {', '.join(classes)}")
            hits = torch.nonzero(split.labels == classes.index(name)).flatten()
            if len(hits) == 0:
                raise AnalysisError(f"featuremaps: the {subject.split_name} split has no image of class {name!r}")
            chosen.append({"position": int(hits[0])})
        for c in chosen:
            p = c["position"]
            c.update(index=int(split.indices[p]), label=int(split.labels[p]), cls=classes[int(split.labels[p])])
            c["image"] = split.images[p].float().div(255)
            c["tag"] = f"img{p}"
        if self.file:
            chosen.append(
                {
                    "file": str(self.file),
                    "image": load_image_file(self.file, subject.in_shape),
                    "tag": "file-" + "".join(ch if ch.isalnum() else "_" for ch in Path(self.file).stem),
                }
            )
        return chosen

    def compute(self, subject: Subject) -> dict[str, Any]:
        model = subject.model
        names = resolve_layers(model, self.layers, "first", self.name)
        where = {}
        for layer in names:
            b = block(model, layer) if isinstance(get_layer(model, layer), nn.Conv2d) else None
            where[layer] = (b.pre, b.post) if b else (layer, layer)
        chosen = self._pick(subject)
        x = torch.stack([c["image"] for c in chosen]).to(subject.device)
        probes = list(dict.fromkeys(p for pair in where.values() for p in pair))
        with TraceDict(model, probes) as td:
            probs = model(x).float().softmax(1).cpu()
        images = []
        for c, pr in zip(chosen, probs):
            entry = {k: v for k, v in c.items() if k not in ("image", "cls")}
            if "cls" in c:
                entry["class"] = c["cls"]
            entry["predicted"] = subject.classes[int(pr.argmax())]
            entry["confidence"] = float(pr.max())
            images.append(entry)
        layers: dict[str, Any] = {}
        figures = Figures(subject, self.name, self.key_for(subject))
        for layer, (pre, post) in where.items():
            a, z = td[pre].output, td[post].output
            for t, probe in ((a, pre), (z, post)):
                check_spatial(t, probe, self.name, model)
            a, z = a.float().cpu(), z.float().cpu()
            layers[layer] = {
                "pre": pre,
                "post": post,
                "channels": a.shape[1],
                "map_size": list(a.shape[2:]),
                "maps": [
                    {
                        "pre_mean": a[i].mean((1, 2)).tolist(),
                        "pre_max": a[i].amax((1, 2)).tolist(),
                        "post_mean": z[i].mean((1, 2)).tolist(),
                        "active_fraction": (z[i] > 0).float().mean((1, 2)).tolist(),
                    }
                    for i in range(len(chosen))
                ],
            }
            if figures.on:
                self._draw(layer, pre, post, a, z, chosen, images, figures)
        return {"images": images, "layers": layers, "figures": figures}

    def _draw(
        self,
        layer: str,
        pre: str,
        post: str,
        a: torch.Tensor,
        z: torch.Tensor,
        chosen: list[dict[str, Any]],
        images: list[dict[str, Any]],
        figures: Figures,
    ) -> None:
        from .. import plots

        n = min(a.shape[1], self.max_maps)
        shown = f"channels 0-{n - 1} of {a.shape[1]}" if n < a.shape[1] else f"{n} channels"
        kinds = [("pre", pre, a, "RdBu_r", True)] + ([("act", post, z, "viridis", False)] if post != pre else [])
        for c, img, i in zip(chosen, images, range(len(chosen))):
            who = f"{img.get('class', img.get('file'))} (predicted {img['predicted']}, {img['confidence']:.2f})"
            for kind, module, maps, cmap, diverging in kinds:
                m = maps[i, :n]
                top = float(m.abs().max()) or 1.0
                lo, hi = (-top, top) if diverging else (0.0, top)
                p = plots.image_with_maps(
                    to_numpy(c["image"]),
                    list(to_numpy(m)),
                    figures.path(layer, f"{c['tag']}_{kind}.png"),
                    layout="chw",
                    titles=[f"f{j}" for j in range(n)],
                    vmin=lo,
                    vmax=hi,
                    cmap=cmap,
                    suptitle=f"{layer}, output of {module}: {who}; {shown}, one shared scale",
                    colorbar=f"{module} output",
                )
                when = "before the activation" if kind == "pre" else "after the activation"
                figures.add(
                    p, f"{layer} feature maps {when} ({module}) of {who}; {shown} on one shared colour scale", layer
                )

    def lines(self, result: dict[str, Any]) -> list[str]:
        shown = ", ".join(f"{i.get('class', i.get('file'))}->{i['predicted']}" for i in result["images"])
        return [f"images: {shown}; layers: {', '.join(result['layers'])}"]
