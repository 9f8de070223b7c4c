"""Concepts: which of a layer's filters carry a class score for one image, and where.

A heat map says where the network looked; a concept explanation says what it saw there, in the
network's own filters. For an image, a class ``c`` and a layer with activations ``A`` (N, C, h, w),
each channel ``k`` gets the contribution

    R_k = sum over positions of A[k, i, j] * d logit_c / d A[k, i, j]      (activation x gradient)

and its own map ``A[k] * dlogit/dA[k]`` (where in the image that filter's contribution lies).
The contributions add up to the first-order share of the class score carried by the layer,
``sum(A * dlogit/dA)``, up to float32 rounding (a regrouping of one sum; the tests check it).
For a network that is positively homogeneous above the layer (ReLUs, max or average pooling,
convolutions and linear layers without biases) that share is the logit itself; biases and batch
norms above the layer keep the rest, which ``details["remainder"]`` states per image.

:meth:`Concepts.lower` goes one layer down (as concept relevance propagation's conditional
relevance, with gradients): the gradient at the concept layer is masked to one channel and held
fixed, and the contribution of each channel of the lower layer to that concept's share is again
activation x gradient.

The default layer is Grad-CAM's: the output of the last convolutional block.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.graph import known_shape
from ..trace import TraceDict, conv_layers, get_layer
from .base import ExplainError, Explainer, as_index_tensor, check_images, evaluating, register
from .gradcam import default_layer


def _spatial(act: Any, layer: str) -> torch.Tensor:
    if not (isinstance(act, torch.Tensor) and act.dim() == 4):
        shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
        raise ExplainError(f"concepts need a layer with (N, C, H, W) output; {layer!r} gives {shape}")
    return act


def lower_layer(model: nn.Module, layer: str) -> str:
    """One layer down from ``layer``. A block (a module with children, a ResNet's ``layer3.0``):
    the block before it (its previous sibling, or its parent's, ``layer2``). A leaf: the output of
    the block of the conv before the last conv that runs up to ``layer`` (its batch norm's
    activation, when named modules follow it: ``relu2`` below ``relu3``)."""
    from ..analyses.base import block

    if list(get_layer(model, layer).children()):
        parts = layer.split(".")
        while parts:
            parent = get_layer(model, ".".join(parts[:-1])) if len(parts) > 1 else model
            siblings = list(parent._modules)
            at = siblings.index(parts[-1])
            if at > 0:
                return ".".join([*parts[:-1], siblings[at - 1]])
            parts = parts[:-1]
        raise ExplainError(f"layer {layer!r} is the first block of the model; there is no layer below it")
    from ..models.graph import execution_order

    order = execution_order(model, None) or [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    # projection shortcuts (1x1 convs) are not a step down: the block's own convs are
    convs = [c for c in conv_layers(model) if tuple(modules[c].kernel_size) != (1, 1)]
    upto = [c for c in convs if c in order and layer in order and order.index(c) < order.index(layer)]
    if len(upto) < 2:
        raise ExplainError(f"layer {layer!r} has no conv layer below its last one to go down to; give lower=NAME")
    return block(model, upto[-2]).post


@register("concepts")
class Concepts(Explainer):
    """Per-channel contributions (N, C) of ``layer`` to one class score per image."""

    def __init__(self, model: nn.Module, layer: str | None = None):
        super().__init__(model)
        self.layer = layer or (default_layer(model) if known_shape(model) is not None else None)
        if self.layer is not None:
            get_layer(model, self.layer)

    def _resolve(self, x: torch.Tensor) -> str:
        if self.layer is None:
            self.layer = default_layer(self.model, tuple(x.shape[1:]))
        return self.layer

    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        """Contributions (N, C) of the layer's channels to the target logit; ``details``: ``maps``
        (N, C, h, w), ``total`` = sum(A * grad) per image, ``logit``, ``remainder`` = logit - total,
        ``target``, ``layer``, ``order`` (channels by contribution, largest first)."""
        x = check_images(self.model, images)
        layer = self._resolve(x)
        with torch.enable_grad(), evaluating(self.model), TraceDict(self.model, [layer], detach=False) as td:
            logits = self.model(x)
            act = _spatial(td[layer].output, layer)
            t = self._target(logits, target, x)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act)
        maps = (act.detach() * grad).float()
        contrib = maps.sum((2, 3))
        logit = logits.detach().gather(1, t[:, None])[:, 0].float()
        total = maps.sum((1, 2, 3))
        self.details = {
            "layer": layer,
            "target": t,
            "maps": maps,
            "activations": act.detach().float(),
            "total": total,
            "logit": logit,
            "remainder": logit - total,
            "predicted": logits.detach().argmax(1),
            "order": torch.argsort(contrib, dim=1, descending=True, stable=True),
        }
        return contrib

    def _target(self, logits: torch.Tensor, target: Any, x: torch.Tensor) -> torch.Tensor:
        if target is None:
            return logits.detach().argmax(1)
        return as_index_tensor(target, len(x), "target class", logits.shape[1], x.device)

    def lower(
        self, images: torch.Tensor, target: Any, channels: Sequence[int] | torch.Tensor, lower: str | None = None
    ) -> torch.Tensor:
        """Contributions (N, K, C_lower) of the lower layer's channels to each image's concepts
        ``channels`` (K per image, (N, K); or one list for all images): activation x gradient of
        the concept's share with the concept layer's gradient held fixed and masked to its channel.
        ``details["lower_maps"]`` (N, K, C_lower, h, w); ``details["lower_layer"]``."""
        x = check_images(self.model, images)
        layer = self._resolve(x)
        below = lower or lower_layer(self.model, layer)
        with torch.enable_grad(), evaluating(self.model), TraceDict(self.model, [below, layer], detach=False) as td:
            logits = self.model(x)
            act = _spatial(td[layer].output, layer)
            low = _spatial(td[below].output, below)
            t = self._target(logits, target, x)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), act, retain_graph=True)
            ch = torch.as_tensor(channels, dtype=torch.long, device=x.device)
            ch = ch.expand(len(x), -1) if ch.dim() == 1 else ch
            if ch.dim() != 2 or ch.shape[0] != len(x):
                raise ExplainError(
                    f"channels have shape {tuple(ch.shape)}; give one list for all {len(x)} images or one per image"
                )
            bad = (ch < 0) | (ch >= act.shape[1])
            if bool(bad.any()):
                raise ExplainError(
                    f"concept channel {int(ch[bad][0])} is out of range for {layer!r}; allowed: 0 to {act.shape[1] - 1}"
                )
            maps = []
            for k in range(ch.shape[1]):
                mask = F.one_hot(ch[:, k], act.shape[1]).to(grad.dtype)[:, :, None, None]
                share = (act * (grad * mask).detach()).sum()
                (g,) = torch.autograd.grad(share, low, retain_graph=True)
                maps.append((low.detach() * g).float())
        lower_maps = torch.stack(maps, 1)
        self.details.update({"lower_layer": below, "lower_maps": lower_maps, "lower_channels": ch})
        return lower_maps.sum((3, 4))


def concept_map(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-channel maps (..., h, w) stretched to the image's ``size`` (bilinear)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)
