"""Occlusion sensitivity (Zeiler & Fergus 2014): slide a patch over the image, watch the class
probability.

A K x K patch of one fill value (gray 0.5, zero, the data set's mean colour, or any value per
channel) is placed at every ``stride``-th position; the model's softmax probability of the target
class at each position forms a map of ``(H - K) // stride + 1`` rows and columns (the shape the
course reports use: a 32x32 image and an 8x8 window at stride 2 give 13x13; at stride 1, 25x25).
``padding`` lets windows hang over the border by that many pixels.

All positions of all images are evaluated in batches of ``chunk`` occluded images. With
``incremental`` (the default) only the part of each layer that the patch can reach is
recomputed: on a flat sequential net by :mod:`.incremental`, on any other model that
``torch.fx`` can trace (residual blocks, functions in ``forward()``) node by node on its traced
graph by :mod:`.occlusion_graph`; a model it cannot trace runs whole occluded images (and
``details["path"]`` says why). Results equal the plain batched loop's to float32 rounding,
whatever the chunk size.

``benchmarks/bench_explain_occlusion.py`` measures both paths against Captum's ``Occlusion``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import ExplainError, Explainer, check_images, evaluating, expected_shape, register
from .geometry import compile_plan
from .incremental import IncrementalOcclusion, chunks
from .occlusion_graph import GraphOcclusion
from ..models.reuse import trace_fx

FILLS = ("gray", "zero", "mean")
# images per pass of the graph path, which keeps every node's activations of its images
GRAPH_IMAGES = 8


def positions(size: int, window: int, stride: int, padding: int = 0) -> np.ndarray:
    """Top-left coordinates of the windows along one axis (negative inside the padding)."""
    return np.arange(-padding, size + padding - window + 1, stride, dtype=np.int64)


def map_size(size: int, window: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - window) // stride + 1


def fill_values(model: nn.Module, fill: str | float | Sequence[float], channels: int) -> torch.Tensor:
    """The patch colour in pixel space, one value per channel."""
    if isinstance(fill, str):
        if fill == "gray":
            return torch.full((channels,), 0.5)
        if fill == "zero":
            return torch.zeros(channels)
        if fill == "mean":
            mean = getattr(getattr(model, "input", None), "mean", None)
            if mean is None:
                raise ExplainError(
                    "fill 'mean' needs a convlens model (its input layer holds the data mean); "
                    "give the mean colour as numbers instead"
                )
            return mean.detach().flatten().float().cpu()
        raise ExplainError(f"fill {fill!r} is not one of: {', '.join(FILLS)}, or a number per channel")
    t = torch.as_tensor(fill, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ExplainError(f"fill has {t.numel()} values; the images have {channels} channel(s)")
    return t.clone()


@register("occlusion")
class Occlusion(Explainer):
    """Probability of the target class with a patch at each position.

    >>> occ = Occlusion(model, window=8, stride=2, fill="gray")            # doctest: +SKIP
    >>> maps = occ.attribute(images, target=labels)       # (N, 13, 13) for 32x32 images
    >>> occ.details["probabilities"]                      # (N, classes, 13, 13): every class
    >>> occ.details["base"]                               # (N, classes): without a patch

    ``target`` may also be (N, T): T classes per image, giving (N, T, h, w) from one pass.
    """

    def __init__(
        self,
        model: nn.Module,
        window: int = 8,
        stride: int = 2,
        *,
        fill: str | float | Sequence[float] = "gray",
        padding: int = 0,
        chunk: int = 256,
        incremental: bool | str = "auto",
    ):
        super().__init__(model)
        self.window, self.stride, self.padding, self.chunk = int(window), int(stride), int(padding), int(chunk)
        self.fill, self.incremental = fill, incremental
        self._cache: dict = {}  # incremental inference: geometry and reordered weights, between calls
        if incremental not in (True, False, "auto"):
            raise ExplainError(f"incremental {incremental!r} is not one of: True, False, 'auto'")
        if self.chunk < 1:
            raise ExplainError(f"chunk {chunk} is out of range; allowed: 1 or more occluded images per batch")
        if self.padding < 0:
            raise ExplainError(f"padding {padding} is out of range; allowed: 0 or more pixels")
        shape = expected_shape(model)
        if shape is not None:
            self._check_geometry(shape[1], shape[2])

    def _check_geometry(self, h: int, w: int) -> None:
        most = min(h, w) + 2 * self.padding
        if not (1 <= self.window <= most):
            raise ExplainError(
                f"window {self.window} does not fit the {h}x{w} image"
                f"{' with padding ' + str(self.padding) if self.padding else ''}; allowed: 1 to {most}"
            )
        if not (1 <= self.stride <= max(h, w)):
            raise ExplainError(f"stride {self.stride} is out of range; allowed: 1 to {max(h, w)}")
        if (
            map_size(h, self.window, self.stride, self.padding)
            == map_size(w, self.window, self.stride, self.padding)
            == 1
        ):
            # one position only: a single number per image, not a map (and nothing to scale)
            largest = max(h, w) + 2 * self.padding - self.stride
            fix = f"allowed at stride {self.stride}: windows 1 to {largest}" if largest >= 1 else "use a smaller stride"
            raise ExplainError(
                f"window {self.window} at stride {self.stride} covers the whole {h}x{w} image at its only "
                f"position, a 1x1 map; {fix}, or more padding"
            )

    # ------------------------------------------------------------------------------------------
    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        x = check_images(self.model, images)
        n, c, h, w = x.shape
        self._check_geometry(h, w)
        ys = positions(h, self.window, self.stride, self.padding)
        xs = positions(w, self.window, self.stride, self.padding)
        fill = fill_values(self.model, self.fill, c).to(x.device)
        with torch.no_grad(), evaluating(self.model):
            base = self.model(x).float()
            k = base.shape[1]
            t = self._targets(target, base)
            out, path = self._evaluate(x, fill, ys, xs)
        probs = torch.softmax(out, 1).view(n, len(ys), len(xs), k).permute(0, 3, 1, 2).contiguous()
        self.details = {
            "probabilities": probs,
            "base": torch.softmax(base, 1),
            "window": self.window,
            "stride": self.stride,
            "padding": self.padding,
            "fill": fill.tolist(),
            "rows": ys.tolist(),
            "cols": xs.tolist(),
            "path": path,
        }
        if t.dim() == 1:
            return probs[torch.arange(n), t]
        return probs[torch.arange(n)[:, None], t]

    def _evaluate(
        self, x: torch.Tensor, fill: torch.Tensor, ys: np.ndarray, xs: np.ndarray
    ) -> tuple[torch.Tensor, str]:
        """Logits of every (image, position) item, image-major, and the path that computed them:
        ``incremental`` (a flat sequential net, :mod:`.incremental`), ``incremental graph`` (any
        model ``torch.fx`` traces, :mod:`.occlusion_graph`) or ``naive`` (whole occluded images;
        with the reason when the model cannot be traced)."""
        n, c, h, w = x.shape
        p = len(ys) * len(xs)
        if self.incremental is False:
            run = self._naive_runner(x, fill, ys, xs)
            return torch.cat([run(a, b).float() for a, b in chunks(n * p, p, self.chunk)]), "naive"
        plan = compile_plan(self.model, (c, h, w))
        if plan is not None:
            engine = IncrementalOcclusion(self.model, plan, x, fill, ys, xs, self.window, self._cache)
            return engine.run(self.chunk).float(), "incremental"
        graph = trace_fx(self.model)
        group = GRAPH_IMAGES
        engine = (
            None
            if isinstance(graph, str)
            else GraphOcclusion(self.model, graph, x[:group], fill, ys, xs, self.window, self._cache)
        )
        if engine is not None and engine.windowed:
            outs = [engine.run(self.chunk).float()]
            for i in range(group, n, group):  # the graph path caches every node: a few images at a time
                part = GraphOcclusion(self.model, graph, x[i : i + group], fill, ys, xs, self.window, self._cache)
                outs.append(part.run(self.chunk).float())
            return torch.cat(outs), "incremental graph"
        why = graph if isinstance(graph, str) else "no conv or pool of the model sees the patch in part of its map"
        if self.incremental is True:
            raise ExplainError(
                f"incremental occlusion needs a traceable model with convs or pools ({why}); "
                "use incremental=False for this model"
            )
        run = self._naive_runner(x, fill, ys, xs)
        out = torch.cat([run(a, b).float() for a, b in chunks(n * p, p, self.chunk)])
        return out, "naive" if engine is not None else f"naive ({why})"

    @staticmethod
    def _targets(target: Any, base: torch.Tensor) -> torch.Tensor:
        """(N,) or (N, T) class indices, checked; ``None``: the predicted class."""
        n, k = base.shape
        if target is None:
            return base.argmax(1)
        t = torch.as_tensor(target, dtype=torch.long, device=base.device)
        if t.dim() == 0:
            t = t.expand(n)
        if t.dim() > 2 or t.shape[0] != n:
            raise ExplainError(f"target has shape {tuple(t.shape)}; give one class per image (N,) or several (N, T)")
        bad = (t < 0) | (t >= k)
        if bool(bad.any()):
            raise ExplainError(f"target class {int(t[bad][0])} is out of range; allowed: 0 to {k - 1}")
        return t

    def _naive_runner(self, x: torch.Tensor, fill: torch.Tensor, ys: np.ndarray, xs: np.ndarray):
        """The plain loop, batched: build each occluded image in full and run the whole model."""
        _, c, h, w = x.shape
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        ty = torch.as_tensor(ys, device=x.device).repeat_interleave(len(xs))
        tx = torch.as_tensor(xs, device=x.device).repeat(len(ys))
        fill = fill.view(1, c, 1, 1)

        def run(start: int, stop: int) -> torch.Tensor:
            items = torch.arange(start, stop, device=x.device)
            img, pos = items // (len(ys) * len(xs)), items % (len(ys) * len(xs))
            y0, x0 = ty[pos].view(-1, 1, 1, 1), tx[pos].view(-1, 1, 1, 1)
            inside = (
                (rows.view(1, 1, h, 1) >= y0)
                & (rows.view(1, 1, h, 1) < y0 + self.window)
                & (cols.view(1, 1, 1, w) >= x0)
                & (cols.view(1, 1, 1, w) < x0 + self.window)
            )
            return self.model(torch.where(inside, fill, x[img]))

        return run


def spread_to_pixels(
    drop: torch.Tensor, window: int, stride: int, image_hw: tuple[int, int], padding: int = 0
) -> torch.Tensor:
    """Per-pixel attribution in Captum's convention from a position map of output drops.

    ``drop`` is (N, h, w): base output minus occluded output at each window position. Each pixel
    gets the mean of ``drop`` over the windows that cover it (0 where none does), which is what
    ``captum.attr.Occlusion`` returns when its windows tile the image exactly.
    """
    d = drop.float().unsqueeze(1)
    ones = torch.ones(1, 1, window, window, dtype=d.dtype, device=d.device)
    total = F.conv_transpose2d(d, ones, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(d), ones, stride=stride)
    h, w = image_hw
    total = total[..., padding : padding + h, padding : padding + w]
    count = count[..., padding : padding + h, padding : padding + w]
    out = torch.zeros(len(d), 1, h, w, dtype=d.dtype, device=d.device)
    th, tw = total.shape[-2:]
    out[..., :th, :tw] = torch.where(count > 0, total / count.clamp(min=1), 0.0)
    return out[:, 0]
