"""Activation maximisation: synthesise the image that most excites a filter (or a class logit).

Many targets are optimised at once as one batch: image ``i`` maximises the mean activation of
filter ``target[i]`` of ``layer`` over its positions (``objective="center"``: the activation at
the map's centre; no ``layer``: the logit of class ``target[i]``). Images never interact (eval
mode; Adam's update is per element) and every random draw for an image (initial noise, transforms
at every step) comes from a generator seeded with ``seed + target``, so a filter gets the same
optimisation alone or among 127 others, in any chunking: pixel-space results agree to float
rounding (tested). In the Fourier basis, Adam's first, sign-like steps magnify the rounding
differences of differently sized FFT batches, so images drift apart by a few hundredths of a
pixel value over some tens of steps; each still follows its own filter's gradient.

Each step: image = parameterisation (``pixel`` or ``fourier``, colours decorrelated with the
data set's covariance, see :mod:`.imageparam`) -> random jitter / scale / rotation -> model up to
``layer`` -> loss = -objective + ``l2`` * mean((x - 0.5)^2) + ``tv`` * total variation.

Defaults (pixel basis, Adam lr 0.5, 256 steps, mild transforms) are chosen for the small inputs
convlens models take (28x28, 32x32), by how close they get to a known optimum: a conv1 filter's
mean output is affine in the image, so its maximum over images in [0, 1] is reached at the image
that is 1 where the filter's input gradient is positive and 0 elsewhere. On the 16 conv1 filters
of the benchmarks' trained CSCI-611 net (width 16) the defaults reach a median 0.996 of that
optimum (min 0.86) and all 16 beat their best test image; the Fourier basis at lr 0.05 (Lucent's
setting for 224-pixel images) reaches 0.76 (min 0.50) in the same 256 steps, 4 of 16 above the
best test image: its 1/f scaling slows exactly the high frequencies a 3x3 filter wants. Deeper
layers too: the defaults put 16 of 16 conv2 and conv3 filters above their best test image
(median 1.28x and 1.70x its value), the Fourier basis 10 and 6 of 16.
``benchmarks/bench_explain_actmax.py --converge`` prints these ratios.
``details["objective"]`` holds the objective of every image at every step (steps, N), measured
on the transformed image the step optimised; ``details["initial"]`` / ``["final"]`` hold it on
the untransformed start and result.

``benchmarks/bench_explain_actmax.py`` times all filters of a layer in one run against one by one.
"""

from __future__ import annotations

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
from .imageparam import PARAMS, colour_matrix, make_param, param_shape, random_affine, total_variation, transform

OBJECTIVES = ("mean", "center")
# Adam's step size per parameterisation: a pixel's logit, or a Fourier coefficient (Lucent's 0.05)
DEFAULT_LR = {"pixel": 0.5, "fourier": 0.05}


@register("actmax")
class ActMax(Explainer):
    """Images (N, C, H, W) in [0, 1], one per target filter (or class), optimised together.

    >>> am = ActMax(model, "conv2", steps=256, colour_cov=cov)           # doctest: +SKIP
    >>> images = am.attribute(None, target=range(64))     # every filter of conv2
    >>> am.details["objective"]                           # (256, 64), rising
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
        objective: str = "mean",
        seed: int = 0,
        chunk: int = 256,
        image_shape: tuple[int, int, int] | None = None,
    ):
        super().__init__(model)
        self.layer = layer
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
        if chunk < 1:
            raise ExplainError(f"chunk {chunk} is out of range; allowed: 1 or more images per batch")
        if l2 < 0 or tv < 0:
            raise ExplainError(f"penalties must be 0 or more; got l2={l2}, tv={tv}")
        self.jitter = float(max(1, round(h / 16)) if jitter is None else jitter)
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
        self.seed, self.chunk = int(seed), int(chunk)
        self.colour = colour_matrix(colour_cov, c)

    # ------------------------------------------------------------------------------------------
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

    def best_images(self, images: torch.Tensor, target: Sequence[int], batch_size: int = 256):
        """The objective of each target on every image of a data set (uint8 or float (N, C, H, W),
        untransformed), maximised: returns the best values (T,) and positions (T,), the yardstick
        for what the optimisation reached."""
        t = torch.as_tensor(list(target), dtype=torch.long)
        device = model_device(self.model)
        best = torch.full((len(t),), -torch.inf)
        where = torch.zeros(len(t), dtype=torch.long)
        with torch.no_grad(), evaluating(self.model):
            for i in range(0, len(images), batch_size):
                x = images[i : i + batch_size].to(device)
                x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
                out = self._output(x)[:, t.to(device)]  # (B, T, ...)
                vals = self._reduce(out.transpose(0, 1).flatten(0, 1)).view(len(t), len(x)).float().cpu()
                v, p = vals.max(1)
                better = v > best
                best[better], where[better] = v[better], p[better] + i
        return best, where

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
        with evaluating(self.model):
            for i in range(0, len(t), self.chunk):
                sl = slice(i, i + self.chunk)
                img, curve, a, b = self._optimise(t[sl], None if start is None else start[sl], device)
                results.append(img), curves.append(curve), first.append(a), last.append(b)
        self.details = {
            "target": t.tolist(),
            "layer": self.layer,
            "objective": torch.cat(curves, 1),
            "initial": torch.cat(first),
            "final": torch.cat(last),
        }
        return torch.cat(results)

    def _optimise(self, t: torch.Tensor, start: torch.Tensor | None, device: torch.device):
        c, h, w = self.shape
        gens = [torch.Generator().manual_seed(self.seed + int(k)) for k in t]
        shape = param_shape(self.param, c, (h, w))
        noise = torch.stack([torch.randn(shape, generator=g) * 0.01 for g in gens]).to(device)
        draws = torch.stack([torch.rand(self.steps, 4, generator=g) for g in gens], 1).to(device)  # (steps, N, 4)
        p = make_param(self.param, noise, self.colour.to(device), (h, w), start)
        opt = torch.optim.Adam(p.params, lr=self.lr)
        curve = torch.empty(self.steps, len(t))
        with torch.enable_grad():
            with torch.no_grad():
                initial = self._objective(p.image(), t).cpu()
            for step in range(self.steps):
                x = p.image()
                theta = random_affine(draws[step], self.jitter, self.scale, self.rotate, (h, w))
                # channels-last: the layout oneDNN convolutions run fastest in on the CPU
                obj = self._objective(transform(x, theta).contiguous(memory_format=torch.channels_last), t)
                loss = -obj
                if self.l2:
                    loss = loss + self.l2 * (x - 0.5).pow(2).flatten(1).mean(1)
                if self.tv:
                    loss = loss + self.tv * total_variation(x)
                # grads for the image parameters only: the model's .grad stays untouched
                grads = torch.autograd.grad(loss.sum(), p.params)
                for q, g in zip(p.params, grads):
                    q.grad = g
                opt.step()
                curve[step] = obj.detach().cpu()
            with torch.no_grad():
                x = p.image()
                final = self._objective(x, t).cpu()
        return x.detach(), curve, initial, final
