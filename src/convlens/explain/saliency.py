"""Saliency (Simonyan et al. 2014): the gradient of the target's logit with respect to the pixels;
with ``samples > 0``, SmoothGrad (Smilkov et al. 2017): the mean gradient over noisy copies.

SmoothGrad's noisy copies of all images go through the model together, ``chunk`` at a time; the
noise for image ``i`` comes from a generator seeded with ``seed + i``, so a result does not
depend on the chunk size or on which other images share the call. ``noise`` is the standard
deviation in pixel units (images span [0, 1], so 0.15 is Smilkov et al.'s 15 % of the range).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backprop import ReluRuleBackprop
from .base import ExplainError, check_images, register


@register("saliency")
class Saliency(ReluRuleBackprop):
    """Input gradient (N, C, H, W), signed; heat maps take its magnitude (see :mod:`.heatmap`)."""

    rule = None

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        samples: int = 0,
        noise: float = 0.15,
        seed: int = 0,
        chunk: int = 128,
    ):
        super().__init__(model, layer)
        if samples < 0:
            raise ExplainError(f"samples {samples} is out of range; allowed: 0 (plain gradient) or more")
        if not noise >= 0:
            raise ExplainError(f"noise {noise} is out of range; allowed: 0 or more (pixel units)")
        if chunk < 1:
            raise ExplainError(f"chunk {chunk} is out of range; allowed: 1 or more")
        self.samples, self.noise, self.seed, self.chunk = int(samples), float(noise), int(seed), int(chunk)

    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        if self.samples == 0:
            return super().attribute(images, target)
        x = check_images(self.model, images)
        if target is None and self.layer is None:
            target = self._classes(x, None)
        n, s = len(x), self.samples
        noise = (
            torch.stack(
                [torch.randn(s, *x.shape[1:], generator=torch.Generator().manual_seed(self.seed + i)) for i in range(n)]
            ).to(x.device)
            * self.noise
        )
        noisy = (x[:, None] + noise).reshape(n * s, *x.shape[1:])
        t = torch.as_tensor(target, device=x.device)
        t = (t.expand(n) if t.dim() == 0 else t).repeat_interleave(s)
        grads = torch.cat(
            [
                super(Saliency, self).attribute(noisy[i : i + self.chunk], t[i : i + self.chunk])
                for i in range(0, n * s, self.chunk)
            ]
        )
        self.details = {"target": t[::s].tolist(), "samples": s, "noise": self.noise}
        return grads.view(n, s, *x.shape[1:]).mean(1)
