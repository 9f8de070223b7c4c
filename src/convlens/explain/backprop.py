"""Gradients of one output back to the pixels, with the ReLU's backward rule swapped.

The three classic "backward projection" methods differ only in what a ReLU passes back:

- plain gradient (saliency, Simonyan et al. 2014): ``grad * (input > 0)``;
- deconvnet (Zeiler & Fergus 2014): ``relu(grad)``, ignoring the forward input, so a unit is
  reconstructed from the signal coming down, as their "rectified unpooling";
- guided backprop (Springenberg et al. 2015): ``relu(grad) * (input > 0)``, both masks.

Max-pooling passes the gradient to the position that won in the forward pass, which is exactly
Zeiler & Fergus's "switches"; convolutions pass it through their transposed filters. So each
method is autograd with the ReLU rule replaced, which :class:`convlens.trace.TraceDict` does by
rewriting every ``nn.ReLU``'s output for the duration of the call (hooks gone afterwards).

``target`` is a class (the logit is differentiated) or, with ``layer=``, a filter of that layer:
then, as in Zeiler & Fergus, the filter's strongest activation in each image is projected alone
(all other activations of the layer set to zero); its position is kept in
``details["positions"]``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..trace import Trace, TraceDict
from .base import ExplainError, Explainer, as_index_tensor, channel_count, check_images, evaluating


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0)


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


RULES = {"guided": _GuidedReLU, "deconv": _DeconvReLU}


def relu_rule(model: nn.Module, rule: str | None) -> TraceDict | Trace | None:
    """A context manager giving every ``nn.ReLU`` of ``model`` the backward ``rule``."""
    if rule is None:
        return None
    fn = RULES[rule].apply
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    return TraceDict(model, names, retain_output=False, rewrite=lambda inp, out, name: fn(inp))


class ReluRuleBackprop(Explainer):
    """Base for saliency, deconvnet and guided backprop: ``rule`` is None, "deconv" or "guided"."""

    rule: str | None = None

    def __init__(self, model: nn.Module, layer: str | None = None):
        super().__init__(model)
        self.layer = layer
        if layer is not None:
            self.channels = channel_count(model, layer)

    def _score(self, x: torch.Tensor, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass on ``x`` (which requires grad); returns the summed scores and targets."""
        if self.layer is None:
            logits = self.model(x)
            t = (logits.argmax(1) if target is None
                 else as_index_tensor(target, len(x), "target class", logits.shape[1], x.device))  # fmt: skip
            return logits.gather(1, t[:, None]).sum(), t
        if target is None:
            raise ExplainError(f"give a target filter of layer {self.layer!r} (0 to {self.channels - 1}) for each image")
        t = as_index_tensor(target, len(x), "filter", self.channels, x.device,
                            f" for layer {self.layer!r}, which has {self.channels} channels")  # fmt: skip
        with Trace(self.model, self.layer, detach=False, stop=True) as tr:
            self.model(x)
        act = tr.output[torch.arange(len(x)), t]  # (N, h, w) or (N,)
        flat = act.reshape(len(x), -1)
        where = flat.argmax(1)
        self.details["positions"] = where.tolist() if act.dim() == 1 else [divmod(int(i), act.shape[-1]) for i in where]
        self.details["activations"] = flat.gather(1, where[:, None])[:, 0].detach()
        return flat.gather(1, where[:, None]).sum(), t

    def attribute(self, images: torch.Tensor, target: Any = None) -> torch.Tensor:
        """The input-space signal (N, C, H, W) of each image's target (class, or filter with ``layer``)."""
        x = check_images(self.model, images).clone().requires_grad_(True)
        self.details = {}
        rule = relu_rule(self.model, self.rule)
        with torch.enable_grad(), evaluating(self.model), (rule if rule is not None else contextlib.nullcontext()):
            score, t = self._score(x, target)
            (grad,) = torch.autograd.grad(score, x)
        self.details["target"] = t.tolist()
        return grad.detach()

