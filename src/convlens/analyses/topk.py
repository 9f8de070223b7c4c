"""topk: the images of a split that excite each filter most, and the input patch that did it.

For every filter of every chosen layer, in ONE streaming pass for all layers: the k images with
the highest response (the max, the mean or the sum of the filter's feature map; the CS7015
report ranks by the sum), where in the map the
maximum was, and the input patch under that position, from the layer's exact receptive field
(computed from the module graph: kernels, strides, paddings, dilations, pools). Per filter also
the class histogram of its top k, their mean and max response.

The running top-k is merged batch by batch with a stable sort on (score, position), so ties go to
the earlier image and the result does not depend on the batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..run.npz import Rows
from ..utils import to_numpy
from ..models.graph import trace_graph
from ..models.summary import ReceptiveField, receptive_fields
from ..trace import get_layer
from .options import TopKOptions
from .perfilter import window_patch
from .base import AnalysisError, Figures, Streaming, Subject, block, register, resolve_layers


class RunningTopK:
    """The k largest scores per channel seen so far, their split positions and argmax locations.

    Its size is channels x k whatever the number of images: a batch's candidates are merged in and
    cut back to k at once, and no feature map is kept (each image's argmax location comes with its
    score, :func:`peaks`)."""

    def __init__(self, channels: int, k: int):
        self.k = k
        self.values = torch.full((channels, k), -torch.inf)
        self.positions = torch.full((channels, k), -1, dtype=torch.long)
        self.locations = torch.zeros((channels, k), dtype=torch.long)

    def update(self, scores: torch.Tensor, positions: torch.Tensor, locations: torch.Tensor) -> None:
        """``scores`` (B, C) of images at split ``positions`` (B,), increasing and after every
        position seen before; ``locations`` (B, C): where in each map its maximum is (row-major)."""
        c, b, k = self.values.shape[0], scores.shape[0], self.k
        cand_v = torch.cat([self.values, scores.t().float().cpu().nan_to_num(nan=-torch.inf)], 1)
        cand_p = torch.cat([self.positions, positions.cpu().view(1, b).expand(c, b)], 1)
        cand_l = torch.cat([self.locations, locations.t().cpu()], 1)
        # stable: among equal scores the kept entries (earlier images) stay ahead of the batch's
        order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, :k]
        self.values, self.positions, self.locations = (t.gather(1, order) for t in (cand_v, cand_p, cand_l))


def peaks(fmap: torch.Tensor, score: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's score per channel (the ``"max"``, ``"mean"`` or ``"sum"`` of its map) and the
    row-major index of the map's maximum, both (B, C), read in the tensor's own memory layout (a
    channels-last map is viewed as (B, H*W, C), never copied). The max and its place come from one
    reduction; ties go to the first position in row-major order."""
    b, c = fmap.shape[:2]
    if fmap.is_contiguous(memory_format=torch.channels_last) and not fmap.is_contiguous():
        flat, dim = fmap.permute(0, 2, 3, 1).reshape(b, -1, c), 1
    else:
        flat, dim = fmap.reshape(b, c, -1), 2
    if score == "max":
        values, where = flat.max(dim)
        return values, where
    reduce = {"mean": torch.mean, "sum": torch.sum}[score]
    return reduce(flat, dim), flat.argmax(dim)


def patch(image: np.ndarray, rf: ReceptiveField, i: int, j: int, fill: float = 0.5) -> np.ndarray:
    """The full receptive-field window of output (i, j) cut from a (C, H, W) float image; the part
    outside the image (padding) is ``fill`` grey, so every patch of a layer has the same size."""
    return window_patch(image, rf.to_dict(), i, j, fill)


def _no_field(subject: Subject, layer: str) -> str:
    return trace_graph(subject.model, subject.in_shape).unresolved.get(layer, "not a spatial layer")


@register
class TopK(Streaming, TopKOptions):
    """The k most exciting images per filter, with the receptive-field patch of the maximum."""

    name = "topk"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise AnalysisError(f"topk: k={self.k} must be at least 1")
        if (self.score == "contribution") != (self.target is not None):
            raise AnalysisError(
                "topk: --score contribution ranks by one class's score: give it with --target CLASS (and "
                f"--target only with it); got score={self.score!r}, target={self.target!r}"
            )

    def streams(self) -> bool:
        return self.score != "contribution"  # needs gradients: a pass of its own

    def key(self) -> str | None:
        """A relevance-ranked topk is keyed by its class too (``topk-contribution_cat``), beside the
        activation-ranked one."""
        base = super().key()
        if self.score != "contribution":
            return base
        from ..run import artifact_key

        return artifact_key([*(self.layers or []), f"contribution_{self.target}"])

    def target_class(self, subject: Subject) -> int:
        """``target`` (a class name or index) as an index into the subject's classes."""
        classes = list(subject.classes)
        if self.target in classes:
            return classes.index(self.target)
        if str(self.target).isdigit() and int(self.target) < len(classes):
            return int(self.target)
        raise AnalysisError(
            f"topk: --target {self.target!r} is not a class of this run; allowed: {', '.join(classes)} "
            f"or an index 0 to {len(classes) - 1}"
        )

    def validate(self, subject: Subject) -> None:
        super().validate(subject)
        if self.score == "contribution":
            self.target_class(subject)

    def compute(self, subject: Subject) -> dict[str, Any]:
        if self.streams():
            return super().compute(subject)
        # relevance maximisation: images ranked by the filter's contribution to the class score,
        # the location of the maximum taken from the per-position contribution map
        from ..trace import TraceDict

        target = self.target_class(subject)
        probes = self.probes(subject)
        self.start(subject)
        for x, labels, positions in subject.batches(self.name):
            with torch.enable_grad(), TraceDict(subject.model, probes, detach=False) as td:
                logits = subject.model(x)
                acts = [td[p].output for p in probes]
                grads = torch.autograd.grad(logits[:, target].sum(), acts)
            for p, a, g in zip(probes, acts, grads):
                self._update(p, positions, (a.detach() * g).float(), "sum")
        result = self.finish(subject)
        result["target"] = {"index": target, "name": subject.classes[target]}
        return result

    def probes(self, subject: Subject) -> list[str]:
        model = subject.model
        self._layers = resolve_layers(model, self.layers, "all", self.name)
        self._probe = {
            layer: block(model, layer).at(self.at) if isinstance(get_layer(model, layer), nn.Conv2d) else layer
            for layer in self._layers
        }
        return list(dict.fromkeys(self._probe.values()))

    def start(self, subject: Subject) -> None:
        n = len(subject.split)
        self._k = min(self.k, max(n, 1))  # the running buffers never hold more than the split
        if self.k > n:
            subject.say(
                f"topk: k={self.k} is more than the {n} images of the {subject.split_name} split; "
                f"each filter keeps all {n}"
            )
        self._running: dict[str, RunningTopK] = {}
        self._map_size: dict[str, tuple[int, int]] = {}

    def observe(self, probe: str, output: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> None:
        self._update(probe, positions, output, self.score)

    def _update(self, probe: str, positions: torch.Tensor, output: torch.Tensor, score: str) -> None:
        scores = locations = None
        for layer in self._layers:
            if self._probe[layer] != probe:
                continue
            if scores is None:  # one reduction per probe, whichever layers read it
                scores, locations = peaks(output, score)
            if layer not in self._running:
                self._running[layer] = RunningTopK(output.shape[1], self._k)
                self._map_size[layer] = tuple(output.shape[2:])
            self._running[layer].update(scores, positions, locations)

    def finish(self, subject: Subject) -> dict[str, Any]:
        rfs = receptive_fields(subject.model, subject.in_shape)
        # each unit's exact window: narrower than the box near the border after a dilated conv
        window = trace_graph(subject.model, subject.in_shape).window
        split, classes = subject.split, subject.classes
        h_in, w_in = subject.in_shape[1:]
        layers: dict[str, Any] = {}
        for layer in self._layers:
            run = self._running.get(layer)
            if run is None:  # an empty split
                continue
            probe, (h, w) = self._probe[layer], self._map_size[layer]
            rf = rfs.get(probe) or rfs.get(layer)
            if rf is None:
                why = _no_field(subject, probe)
                subject.say(f"topk: {layer} has no receptive field ({why}): no patches drawn")
            filters = []
            for f in range(run.values.shape[0]):
                keep = run.positions[f] >= 0
                pos = run.positions[f][keep]
                scores = run.values[f][keep]
                locs = [divmod(int(v), w) for v in run.locations[f][keep]]
                labels = split.labels[pos]
                hist = torch.bincount(labels, minlength=len(classes))
                filters.append(
                    {
                        "filter": f,
                        "positions": pos.tolist(),
                        "indices": split.indices[pos].tolist(),
                        "labels": labels.tolist(),
                        "scores": scores.tolist(),
                        "locations": [list(ij) for ij in locs],
                        "windows": [list(window(probe, i, j) or rf.window(i, j, h_in, w_in)) for i, j in locs]
                        if rf
                        else None,
                        "class_histogram": hist.tolist(),
                        "top_class": classes[int(hist.argmax())] if len(pos) else None,
                        "mean": float(scores.mean()) if len(pos) else None,
                        "max": float(scores.max()) if len(pos) else None,
                    }
                )
            layers[layer] = {
                "measured_at": probe,
                "channels": run.values.shape[0],
                "map_size": [h, w],
                "receptive_field": None if rf is None else rf.to_dict(),
                "filters": filters,
            }
        figures = Figures(subject, self.name, self.key_for(subject))
        stored = self._draw(subject, layers, rfs, figures) if figures.on else {}
        return {"layers": layers, "score": self.score, **stored, "figures": figures}

    # -- figures -------------------------------------------------------------------------------
    def _draw(
        self, subject: Subject, layers: dict[str, Any], rfs: dict[str, ReceptiveField], figures: Figures
    ) -> dict[str, Any]:
        """The per-layer overview of top patches, drawn now; each filter's top images and patches
        listed, drawn when first needed (:mod:`.perfilter`) from the top images this stores in the
        .npz. Returns what the JSON gains: the class names and the .npz's path."""
        from .. import plots
        from ..run import Layout

        images = subject.split.images
        classes = subject.classes
        used = sorted({p for info in layers.values() for fi in info["filters"] for p in fi["positions"]})
        artifact = Layout(subject.root).artifact(self.name, self.key_for(subject))
        # the winners' pictures, read from the split and written a batch at a time (at 224 px each
        # is 150 KB, and there may be layers x filters x k of them); stored uncompressed, so that
        # drawing a filter's figure maps its k images only. (CIFAR's pictures shrink 7 % at zlib
        # level 6, for 50 ms a megabyte.)
        batch = 256
        arrays = artifact.save_arrays(
            compressed=False,
            images=Rows(
                (len(used), *subject.in_shape),
                np.uint8,
                lambda: (to_numpy(images[used[i : i + batch]]).astype(np.uint8) for i in range(0, len(used), batch)),
            ),
            positions=np.asarray(used, dtype=np.int64),
        )
        for layer, info in layers.items():
            rf = rfs.get(info["measured_at"]) or rfs.get(layer)
            overview, labels = [], []
            where = f"{self.score} of {info['measured_at']}"
            if self.score == "contribution":
                where = f"contribution to {self.target} of {info['measured_at']} (activation x gradient)"
            for fi in info["filters"]:
                f, pos = fi["filter"], fi["positions"]
                if not pos:
                    continue
                figures.later(
                    figures.path(layer, f"f{f}.png"),
                    f"{layer} filter {f}: the {len(pos)} {subject.split_name} images with the highest "
                    f"{where}, boxed where the maximum was",
                    layer,
                    f,
                )
                if rf is None:
                    continue
                figures.later(
                    figures.path(layer, f"f{f}_patches.png"),
                    f"{layer} filter {f}: the {rf.size}x{rf.cols[0]} input patch (receptive field) under the "
                    "maximum of each top image (grey: padding)",
                    layer,
                    f,
                )
                if len(labels) < 64:
                    imgs = to_numpy(images[pos].float().div(255))
                    patches = [patch(imgs[n], rf, *ij) for n, ij in enumerate(fi["locations"][:8])]
                    per_row = min(8, len(patches))
                    overview += patches[:per_row] + [np.ones_like(patches[0])] * (8 - per_row)
                    labels.append(f"f{f}")
            if overview:
                p = plots.mosaic(
                    overview,
                    figures.path(f"{layer}.png"),
                    layout="chw",
                    cols=8,
                    row_labels=labels,
                    tile_inches=0.45,
                    suptitle=f"{layer}: top patches per filter (rows; first {len(labels)} filters)",
                )
                figures.add(
                    p,
                    f"{layer}: the receptive-field patches of the top images of each filter, one row per filter",
                    layer,
                )
        return {"classes": list(classes), "arrays": arrays}

    def lines(self, result: dict[str, Any]) -> list[str]:
        out = []
        for layer, info in result["layers"].items():
            rf = info["receptive_field"]
            tops = [fi["top_class"] for fi in info["filters"] if fi["top_class"]]
            common = max(set(tops), key=tops.count) if tops else "-"
            out.append(
                f"{layer}: {info['channels']} filters, receptive field {rf['size'] if rf else '?'} px, "
                f"most frequent top class {common}"
            )
        return out
