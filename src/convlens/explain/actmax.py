"""Activation maximisation: synthesise the image that most excites a filter (or a class logit).

Many targets are optimised at once as one batch: by default (``objective="center"``) image ``i``
maximises the activation of filter ``target[i]`` of ``layer`` at the unit in the centre of its
map, so the picture is what the filter prefers where it looks, at its receptive field's size
(``field_box()``); ``objective="mean"`` maximises the mean over all positions of the whole canvas
(a small filter's pattern then comes out tiled); no ``layer``: the logit of class ``target[i]``.
Images never interact (eval mode; Adam's update is per element) and every random draw for an
image (initial noise, transforms at every step) comes from a generator seeded with
``seed + target``, so a filter gets the same optimisation alone or among 127 others, in any
chunking: pixel-space results agree to float rounding (tested). In the Fourier basis, Adam's
first, sign-like steps magnify the rounding differences of differently sized FFT batches, so
images drift apart by a few hundredths of a pixel value over some tens of steps; each still
follows its own filter's gradient.

Each step: image = parameterisation (``pixel`` or ``fourier``, colours decorrelated with the
data set's covariance, see :mod:`.imageparam`) -> random jitter / scale / rotation -> model up to
``layer`` -> loss = -objective + ``l2`` * mean((x - 0.5)^2) + ``tv`` * total variation (Adam).
The last ``polish`` share of the steps optimises the untransformed image itself, by sign steps on
each pixel's logit (the image before the sigmoid, in data colours) that shrink to zero (cosine):
the transforms keep the early steps from an adversarial pattern; the polish makes the result a
maximum of the objective it reports, not of its average over transforms. Sign steps, because
Adam's steps shrink with the sigmoid's slope while its second moment remembers the early,
larger gradients: pixels that should be 0 or 1 stall half-way, which on filters whose optimum
is small left 0.5-0.8 of it (measured on foreign nets' first convs, before the polish).

The default jitter is 1 pixel per 16 of the canvas the objective looks at: the receptive field
for ``center`` (0 for fields up to 8 pixels: a 3x3 filter shifted by 2 pixels sees another
patch), the image for ``mean`` and class logits.

Convergence is checked per target and stated: ``details["converged"]`` is True where the last
tenth of the polish raised the objective by less than 1 % of the whole rise; ``details["dead"]``
is True where the objective never changed (a filter or class whose gradient is zero on every
image tried: its picture is the grey start, and says nothing about the filter).
How close the defaults get to a known optimum (a first conv's output is affine in the image, so
its maximum over images in [0, 1] is b + sum(relu(gradient))) on presets and on networks
convlens did not build: ``benchmarks/bench_actmax_converge.py`` (numbers in BENCHMARKS.md).
``details["objective"]`` holds the objective of every image at every step (steps, N), measured
on the (transformed) image the step optimised; ``details["initial"]`` / ``["final"]`` hold it on
the untransformed start and result.

``benchmarks/bench_explain_actmax.py`` times all filters of a layer in one run against one by one.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..trace import Trace, get_layer
from .base import (
    ExplainError,
    Explainer,
    as_index_tensor,
    channel_count,
    check_images,
    evaluating,
    expected_shape,
    model_device,
    register,
)
from .imageparam import (
    PARAMS,
    ImageParam,
    colour_matrix,
    make_param,
    param_shape,
    random_affine,
    total_variation,
    transform,
)

OBJECTIVES = ("center", "mean")
# Adam's step size per parameterisation: a pixel's logit, or a Fourier coefficient (Lucent's 0.05)
DEFAULT_LR = {"pixel": 0.5, "fourier": 0.05}
CONVERGED = 0.01  # the last tenth of the polish raised the objective by less than this share of its rise
DEAD = 1e-6  # an objective that moved less than this (relative to 1 + |value|) never changed


@register("actmax")
class ActMax(Explainer):
    """Images (N, C, H, W) in [0, 1], one per target filter (or class), optimised together.

    >>> am = ActMax(model, "conv2", steps=256, colour_cov=cov)           # doctest: +SKIP
    >>> images = am.attribute(None, target=range(64))     # every filter of conv2
    >>> am.details["objective"]                           # (256, 64), rising
    >>> top, bottom, left, right = am.field_box()         # what the centre unit sees
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        steps: int = 256,
        lr: float | None = None,
        param: str = "pixel",
        colour_cov: torch.Tensor | None = None,
        jitter: float | None = None,
        scale: tuple[float, float] = (0.95, 1.05),
        rotate: float = 5.0,
        l2: float = 0.0,
        tv: float = 0.0,
        objective: str = "center",
        polish: float = 0.25,
        seed: int = 0,
        chunk: int = 256,
        image_shape: tuple[int, int, int] | None = None,
        progress: bool | None = None,
    ):
        super().__init__(model)
        self.layer = layer
        self._size: tuple[int, ...] | None = None  # the layer's map size, measured when first asked
        if layer is not None:
            get_layer(model, layer)
        self.shape = tuple(image_shape or expected_shape(model) or ())
        if len(self.shape) != 3:
            raise ExplainError("give image_shape=(C, H, W): the model does not say which input it takes")
        c, h, w = self.shape
        if param not in PARAMS:
            raise ExplainError(f"param {param!r} is not one of: {', '.join(PARAMS)}")
        if objective not in OBJECTIVES:
            raise ExplainError(f"objective {objective!r} is not one of: {', '.join(OBJECTIVES)}")
        if steps < 1:
            raise ExplainError(f"steps {steps} is out of range; allowed: 1 or more")
        lr = DEFAULT_LR[param] if lr is None else lr
        if not lr > 0:
            raise ExplainError(f"lr {lr} is out of range; allowed: above 0")
        if not 0 <= polish <= 1:
            raise ExplainError(f"polish {polish} is out of range; allowed: 0 to 1 (a share of the steps)")
        if chunk < 1:
            raise ExplainError(f"chunk {chunk} is out of range; allowed: 1 or more images per batch")
        if l2 < 0 or tv < 0:
            raise ExplainError(f"penalties must be 0 or more; got l2={l2}, tv={tv}")
        self.field = self._field() if layer is not None and objective == "center" else None
        seen = self.field.size if self.field is not None else min(h, w)
        self.jitter = float(round(seen / 16) if jitter is None else jitter)
        if not (0 <= self.jitter < min(h, w) / 2):
            raise ExplainError(f"jitter {jitter} is out of range; allowed: 0 to {min(h, w) / 2} pixels")
        if not (0 < scale[0] <= scale[1]):
            raise ExplainError(f"scale {scale} must be (low, high) with 0 < low <= high")
        self.steps, self.lr, self.param, self.objective = int(steps), float(lr), param, objective
        self.scale, self.rotate, self.l2, self.tv = (
            (float(scale[0]), float(scale[1])),
            float(rotate),
            float(l2),
            float(tv),
        )
        self.polish, self.seed, self.chunk, self.progress = float(polish), int(seed), int(chunk), progress
        self.colour = colour_matrix(colour_cov, c)

    # ------------------------------------------------------------------------------------------
    def _map_size(self) -> tuple[int, ...]:
        """The spatial size of ``layer``'s output for one image of the model's shape."""
        if self._size is None:
            with torch.no_grad(), evaluating(self.model):
                out = self._output(torch.zeros(1, *self.shape, device=model_device(self.model)))
            self._size = tuple(out.shape[2:])
        return self._size

    def _field(self):
        """The receptive field of ``layer`` (None where it has none, e.g. after a global pool)."""
        from ..models import receptive_fields

        return receptive_fields(self.model, self.shape).get(self.layer)

    def unit(self) -> tuple[int, int] | None:
        """The (row, column) of the map unit the ``center`` objective maximises (None otherwise)."""
        if self.layer is None or self.objective != "center":
            return None
        size = self._map_size()
        return (size[0] // 2, size[1] // 2) if len(size) == 2 else None

    def field_box(self) -> tuple[int, int, int, int] | None:
        """Input rows [top, bottom) and columns [left, right) the centre unit sees (unclipped; parts
        outside the image are padding); None for the whole-canvas objectives or without a field."""
        unit = self.unit()
        if unit is None or self.field is None:
            return None
        return self.field.box(*unit)

    def _limit(self) -> int:
        if self.layer is not None:
            return channel_count(self.model, self.layer)
        with torch.no_grad(), evaluating(self.model):
            return int(self.model(torch.zeros(1, *self.shape, device=model_device(self.model))).shape[1])

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return self.model(x)
        with Trace(self.model, self.layer, detach=False, stop=True) as tr:
            self.model(x)
        return tr.output

    def _reduce(self, act: torch.Tensor) -> torch.Tensor:
        """(N, ...) activations of one channel per image -> the objective (N,)."""
        if act.dim() == 1:
            return act
        if self.objective == "center":
            return act[:, act.shape[1] // 2, act.shape[2] // 2]
        return act.flatten(1).mean(1)

    def _objective(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Objective of each image (N,) for its own target."""
        return self._reduce(self._output(x)[torch.arange(len(x), device=x.device), t])

    def dataset_top(self, images: torch.Tensor, target: Sequence[int], k: int = 9, batch_size: int = 256):
        """The yardstick from a data set (uint8 or float (N, C, H, W), untransformed): per target,
        the ``k`` images where the filter responds most, one value per image. For ``center`` that
        is the filter's maximum over all positions (the centre unit is one of them; any unit is the
        same filter shifted), with the map ``locations`` (T, k, 2) of each maximum, where the
        receptive-field patches lie; for ``mean`` and class logits the objective itself
        (locations None). Returns ``(values (T, k), positions (T, k), locations)``, best first."""
        t = torch.as_tensor(list(target), dtype=torch.long)
        device = model_device(self.model)
        spatial = self.objective == "center" and self.layer is not None
        vals = torch.empty(len(t), 0)
        pos = torch.empty(len(t), 0, dtype=torch.long)
        locs = torch.empty(len(t), 0, dtype=torch.long)
        width = 0  # the map's width, once a spatial map was seen
        with torch.no_grad(), evaluating(self.model):
            for i in range(0, len(images), batch_size):
                x = images[i : i + batch_size].to(device)
                x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
                out = self._output(x)[:, t.to(device)].float().cpu()  # (B, T, ...)
                if spatial and out.dim() == 4:
                    width = out.shape[3]
                    v, where = out.flatten(2).max(2)  # (B, T)
                else:
                    v = self._reduce(out.transpose(0, 1).flatten(0, 1)).view(len(t), len(x)).T
                    where = torch.zeros_like(v, dtype=torch.long)
                vals = torch.cat([vals, v.T], 1)
                pos = torch.cat([pos, torch.arange(i, i + len(x)).expand(len(t), -1)], 1)
                locs = torch.cat([locs, where.T], 1)
                keep = vals.topk(min(k, vals.shape[1]), 1).indices
                vals, pos, locs = vals.gather(1, keep), pos.gather(1, keep), locs.gather(1, keep)
        rows_cols = torch.stack([locs // width, locs % width], -1) if width else None
        return vals, pos, rows_cols

    def best_images(self, images: torch.Tensor, target: Sequence[int], batch_size: int = 256):
        """The best value (T,) of each target on a data set and the position (T,) of the image
        that reached it (see :meth:`dataset_top`): what the optimisation is measured against."""
        vals, pos, _ = self.dataset_top(images, target, 1, batch_size)
        return vals[:, 0], pos[:, 0]

    def attribute(
        self, images: torch.Tensor | None = None, target: Sequence[int] | torch.Tensor | Any = None
    ) -> torch.Tensor:
        """Optimise one image per target; ``images`` (optional) are the starting points."""
        if target is None:
            raise ExplainError("give the filters (or classes) to maximise as target, e.g. target=range(16)")
        device = model_device(self.model)
        t = torch.as_tensor(
            list(target) if not isinstance(target, torch.Tensor) else target, dtype=torch.long
        ).flatten()
        limit = self._limit()
        where = (
            f" for layer {self.layer!r}, which has {limit} channels"
            if self.layer
            else f"; the model has {limit} classes"
        )
        t = as_index_tensor(t, len(t), "filter" if self.layer else "target class", limit, device, where)
        start = check_images(self.model, images) if images is not None else None
        if start is not None and len(start) != len(t):
            raise ExplainError(f"{len(start)} start images for {len(t)} targets; give one per target")
        results, curves, first, last = [], [], [], []
        bar = self._bar(len(t))
        try:
            with evaluating(self.model):
                for i in range(0, len(t), self.chunk):
                    sl = slice(i, i + self.chunk)
                    img, curve, a, b = self._optimise(t[sl], None if start is None else start[sl], device, bar)
                    results.append(img), curves.append(curve), first.append(a), last.append(b)
        finally:
            if bar is not None:
                bar.close()
        curve, initial, final = torch.cat(curves, 1), torch.cat(first), torch.cat(last)
        self.details = {
            "target": t.tolist(),
            "layer": self.layer,
            "objective": curve,
            "initial": initial,
            "final": final,
            **self._verdict(curve, initial, final),
        }
        return torch.cat(results)

    def _verdict(self, curve: torch.Tensor, initial: torch.Tensor, final: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per target: ``dead`` (the objective never moved) and ``converged`` (the last tenth of
        the steps, untransformed when there is a polish, raised it by under :data:`CONVERGED` of
        its whole rise)."""
        every = torch.cat([initial[None], curve, final[None]])
        dead = (every.amax(0) - every.amin(0)) <= DEAD * (1 + initial.abs())
        tail = max(1, self.steps // 10)
        ref = curve[-tail - 1] if len(curve) > tail else initial
        rise = (final - initial).abs().clamp(min=1e-12)
        converged = ((final - ref) <= CONVERGED * rise) & ~dead
        return {"dead": dead, "converged": converged}

    def _bar(self, n: int):
        """A progress bar over the steps of all chunks on stderr, on a terminal (``progress``:
        None decides by :func:`convlens.utils.interactive`)."""
        from ..utils import interactive

        if not (interactive() if self.progress is None else self.progress):
            return None
        from tqdm.auto import tqdm

        chunks = -(-n // self.chunk)
        name = self.layer or "class logits"
        return tqdm(total=self.steps * chunks, desc=f"actmax {name} ({n})", unit="step", leave=False)

    def _optimise(self, t: torch.Tensor, start: torch.Tensor | None, device: torch.device, bar=None):
        c, h, w = self.shape
        gens = [torch.Generator().manual_seed(self.seed + int(k)) for k in t]
        shape = param_shape(self.param, c, (h, w))
        noise = torch.stack([torch.randn(shape, generator=g) * 0.01 for g in gens]).to(device)
        draws = torch.stack([torch.rand(self.steps, 4, generator=g) for g in gens], 1).to(device)  # (steps, N, 4)
        p = make_param(self.param, noise, self.colour.to(device), (h, w), start)
        opt = torch.optim.Adam(p.params, lr=self.lr)
        polish = int(round(self.polish * self.steps))
        free = self.steps - polish  # steps under random transforms, then the polish
        curve = torch.empty(self.steps, len(t))
        with torch.enable_grad():
            with torch.no_grad():
                initial = self._objective(p.image(), t).cpu()
            for step in range(self.steps):
                if step == free:  # the polish: each pixel's logit on its own, no colour mixing
                    p = ImageParam("pixel", p.logits().detach(), torch.eye(c, device=device), (h, w))
                x = p.image()
                if step < free:
                    theta = random_affine(draws[step], self.jitter, self.scale, self.rotate, (h, w))
                    x_seen = transform(x, theta)
                else:
                    x_seen = x
                # channels-last: the layout oneDNN convolutions run fastest in on the CPU
                obj = self._objective(x_seen.contiguous(memory_format=torch.channels_last), t)
                loss = -obj
                if self.l2:
                    loss = loss + self.l2 * (x - 0.5).pow(2).flatten(1).mean(1)
                if self.tv:
                    loss = loss + self.tv * total_variation(x)
                # grads for the image parameters only: the model's .grad stays untouched
                grads = torch.autograd.grad(loss.sum(), p.params)
                if step < free:
                    for q, g in zip(p.params, grads):
                        q.grad = g
                    opt.step()
                else:  # sign steps shrinking to 0 (cosine) over the polish
                    size = self.lr * 0.5 * (1 + math.cos(math.pi * (step - free) / polish))
                    with torch.no_grad():
                        for q, g in zip(p.params, grads):
                            q -= size * g.sign()
                curve[step] = obj.detach().cpu()
                if bar is not None:
                    bar.update(1)
            with torch.no_grad():
                x = p.image()
                final = self._objective(x, t).cpu()
        return x.detach(), curve, initial, final
