"""Grad-CAM (Selvaraju et al. 2017): where in a layer's maps the evidence for a class lies.

Each channel of the chosen layer's output is weighted by the mean gradient of the class logit
over its positions; the weighted sum, rectified, is the map. The map has the layer's resolution
(``details["maps"]``); :meth:`GradCAM.attribute` returns it resized to the image (bilinear),
unnormalised: use :func:`.heatmap.normalize_heatmaps` for display, so every figure says how it
was scaled. The default layer is the output of the last convolutional block (the last
activation after the last conv before the head).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..trace import Trace, conv_layers, get_layer
from .base import ExplainError, Explainer, as_index_tensor, check_images, evaluating, register

_ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def default_layer(model: nn.Module) -> str:
    """The last element-wise layer right after the last conv (e.g. ``relu3``), else that conv."""
    convs = conv_layers(model)
    if not convs:
        raise ExplainError("Grad-CAM needs a model with a convolutional layer")
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    best = convs[-1]
    for name in names[names.index(best) + 1 :]:
        if not isinstance(modules[name], _ELEMENTWISE):
            break
        best = name
    return best


@register("gradcam")
class GradCAM(Explainer):
    """Grad-CAM maps (N, H, W) at the image's resolution, for one class per image."""

    def __init__(self, model: nn.Module, layer: str | None = None, *, upsample: bool = True):
        super().__init__(model)
        self.layer = layer or default_layer(model)
        get_layer(model, self.layer)
        self.upsample = upsample

    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        x = check_images(self.model, images).clone().requires_grad_(True)
        with torch.enable_grad(), evaluating(self.model), Trace(self.model, self.layer, detach=False) as tr:
            logits = self.model(x)
            act = tr.output
            if not (isinstance(act, torch.Tensor) and act.dim() == 4):
                raise ExplainError(
                    f"Grad-CAM needs a layer with (N, C, H, W) output; {self.layer!r} gives "
                    f"{tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__}"
                )
            t = (
                logits.argmax(1)
                if target is None
                else as_index_tensor(target, len(x), "target class", logits.shape[1], x.device)
            )
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act)
        weights = grad.mean((2, 3), keepdim=True)
        cam = F.relu((weights * act.detach()).sum(1))
        self.details = {"layer": self.layer, "target": t.tolist(), "maps": cam}
        if not self.upsample:
            return cam
        return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
