"""Grad-CAM (Selvaraju et al. 2017): where in a layer's maps the evidence for a class lies.

Each channel of the chosen layer's output is weighted by the mean gradient of the class logit
over its positions; the weighted sum, rectified, is the map. The map has the layer's resolution
(``details["maps"]``); :meth:`GradCAM.attribute` returns it resized to the image (bilinear),
unnormalised: use :func:`.heatmap.normalize_heatmaps` for display, so every figure says how it
was scaled. The default layer is the output of the last convolutional block (traced: the last
module after the last conv whose map keeps that conv's size, e.g. a ResNet's last residual block,
its sum included).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.graph import known_shape
from ..models.summary import is_elementwise
from ..trace import Trace, borrowed, call_name, conv_layers, get_layer, split_call
from .base import ExplainError, Explainer, as_index_tensor, check_images, evaluating, register


def default_layer(model: nn.Module, in_shape: tuple[int, ...] | None = None) -> str:
    """The output of the last convolutional block: of the modules that finish after the last conv
    has run, the last one whose (N, C, H, W) output keeps that conv's map size (``relu3`` in a
    conv-BN-ReLU stack, the whole residual block, sum and ReLU included, in a ResNet); where two
    modules return the same tensor, the innermost; a module called more than once is named by
    its call (``act@2``, see ``trace.call_name``). Found by one forward pass on a blank image of
    ``in_shape`` (or the shape known for the model); in declaration order when none is known."""
    convs = conv_layers(model, in_shape)  # type: ignore[arg-type]
    if not convs:
        raise ExplainError("Grad-CAM needs a model with a convolutional layer")
    shape = tuple(in_shape) if in_shape is not None else known_shape(model)
    if shape is None:
        return _declared_default(model, convs[-1])
    finished: list[tuple[str, Any]] = []
    count: dict[str, int] = {}

    def done(name: str, out: Any) -> None:  # a module called twice: one entry per call (act@2)
        count[name] = count.get(name, 0) + 1
        finished.append((call_name(name, count[name]), out))

    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: done(name, out))
        for name, m in model.named_modules()
        if name
    ]
    try:
        with borrowed(model, grad=False):
            param = next(model.parameters(), None)
            model(torch.zeros(1, *shape, device=param.device if param is not None else "cpu"))
    finally:
        for h in hooks:
            h.remove()
    kinds = dict(model.named_modules())
    last = max(i for i, (name, _) in enumerate(finished) if isinstance(kinds[split_call(name)[0]], nn.Conv2d))
    size = finished[last][1].shape[2:]
    best = finished[last]
    for name, out in finished[last + 1 :]:
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2:] == size:
            best = (name, out)
    same = [name for name, out in finished if out is best[1]]
    return max(same, key=lambda n: n.count("."))


def _declared_default(model: nn.Module, conv: str) -> str:
    """The last element-wise module declared right after ``conv`` (the model's input shape is unknown)."""
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    best = conv
    for name in names[names.index(conv) + 1 :]:
        if not is_elementwise(modules[name]):
            break
        best = name
    return best


@register("gradcam")
class GradCAM(Explainer):
    """Grad-CAM maps (N, H, W) at the image's resolution, for one class per image."""

    def __init__(self, model: nn.Module, layer: str | None = None, *, upsample: bool = True):
        super().__init__(model)
        self.layer = layer or (default_layer(model) if known_shape(model) is not None else None)
        if self.layer is not None:
            get_layer(model, self.layer)
        self.upsample = upsample

    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        x = check_images(self.model, images).clone().requires_grad_(True)
        if self.layer is None:
            self.layer = default_layer(self.model, tuple(x.shape[1:]))
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
