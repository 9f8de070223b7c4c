"""Gradients of one output back to the pixels, with the activations' backward rule swapped.

The three classic "backward projection" methods differ only in what an activation passes back.
For a ReLU, with ``g`` the gradient coming down and ``x`` the activation's forward input:

- plain gradient (saliency, Simonyan et al. 2014): ``g * (x > 0)``;
- deconvnet (Zeiler & Fergus 2014): ``relu(g)``, ignoring the forward input, so a unit is
  reconstructed from the signal coming down, as their "rectified unpooling";
- guided backprop (Springenberg et al. 2015): ``relu(g) * (x > 0)``, both masks.

Any other element-wise activation ``f`` (GELU, SiLU, LeakyReLU, ELU, Tanh, ... : the modules in
:data:`ELEMENTWISE`) gets the same rules written with its own derivative, which reduce to the
above for a ReLU (``f'(x) = [x > 0]``):

- saliency: ``g * f'(x)`` (the true gradient);
- deconvnet: ``relu(g)`` (the signal coming down is rectified, the forward input ignored);
- guided backprop: ``relu(g) * f'(x)`` (only positive signal passes, through the activation's
  own gradient; for a GELU, ``f'(x)`` is slightly negative for x in about (-0.75, 0), so a
  guided signal can have both signs there, unlike a ReLU's).

Max-pooling passes the gradient to the position that won in the forward pass, which is exactly
Zeiler & Fergus's "switches"; convolutions pass it through their transposed filters. So each
method is autograd with the activation rule replaced, which :class:`convlens.trace.TraceDict`
does by rewriting every activation module's output for the duration of the call (hooks gone
afterwards). What a module hook cannot reach is refused, never passed through silently: an
activation called as a function inside a forward (``F.relu(x)``, ``x.relu()``; found by a probe
forward pass on one image under a :class:`torch.overrides.TorchFunctionMode`), a recurrent
layer (its gates are inside one fused op), an activation module that is not element-wise
(Softmax, ...), and for deconvnet an in-place activation (its input is overwritten before the
hook sees it). The error names the activation and the layer. Saliency is the plain gradient and
needs no rule, so it takes any model.

``target`` is a class (the logit is differentiated) or, with ``layer=``, a filter of that layer:
then, as in Zeiler & Fergus, the filter's strongest activation in each image is projected alone
(all other activations of the layer set to zero); its position is kept in
``details["positions"]``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..trace import Trace, TraceDict
from .base import ExplainError, Explainer, as_index_tensor, channel_count, check_images, evaluating

# element-wise activation modules: each output depends on its own input only, so a rule on the
# gradient of each element is well defined
ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Tanh,
    nn.Sigmoid,
)
# activations as functions or tensor methods (names as a TorchFunctionMode sees them)
FUNCTIONAL = {
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "prelu",
    "rrelu",
    "rrelu_",
    "elu",
    "elu_",
    "celu",
    "celu_",
    "selu",
    "selu_",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "hardswish",
    "hardtanh",
    "hardtanh_",
    "hardsigmoid",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "threshold",
    "threshold_",
}


class _RectifyGrad(torch.autograd.Function):
    """Identity forward; passes back only the positive part of the gradient."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


class _DeconvPass(torch.autograd.Function):
    """Forward: the activation's output ``y``; backward: the rectified gradient straight to the
    activation's input ``x``, whatever ``x`` was."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(min=0), None


RULES = {
    # guided: relu(g), then the activation's own backward multiplies by f'(x)
    "guided": lambda inp, out, name: _RectifyGrad.apply(out),
    # deconv: relu(g) to the input, the activation's derivative skipped
    "deconv": lambda inp, out, name: _DeconvPass.apply(inp, out.detach()),
}


class _FindActivations(TorchFunctionMode):
    """Records activation functions called outside an element-wise activation module's forward,
    with the innermost module whose forward called them."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names, self.found = names, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in FUNCTIONAL:
            frame = sys._getframe(1)
            while frame is not None:
                owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
                if isinstance(owner, nn.Module):
                    break
                frame = frame.f_back
            owner = None if frame is None else frame.f_locals["self"]
            if not isinstance(owner, ELEMENTWISE):
                where = self.names.get(id(owner), type(owner).__name__) if owner is not None else "outside the model"
                self.found.append((name, where or "the model itself"))
        return func(*args, **(kwargs or {}))


def check_rule(model: nn.Module, rule: str, probe: torch.Tensor) -> list[str]:
    """The names of the activation modules that ``rule`` rewrites; raises ExplainError for any
    activation it cannot rewrite (see the module docstring). ``probe`` is one input image."""
    method = {"guided": "guided backprop", "deconv": "deconvnet"}[rule]
    names = []
    for name, m in model.named_modules():
        if isinstance(m, ELEMENTWISE):
            if rule == "deconv" and getattr(m, "inplace", False):
                raise ExplainError(
                    f"{method} cannot rewrite the in-place {type(m).__name__} at layer {name!r}: its "
                    "input is overwritten before a hook sees it; build it with inplace=False"
                )
            names.append(name)
        elif isinstance(m, nn.RNNBase):
            raise ExplainError(
                f"{method} has no rule for the {type(m).__name__} at layer {name!r}: its tanh/sigmoid "
                "gates run inside one fused op that a hook cannot reach; use saliency or occlusion"
            )
        elif type(m).__module__ == nn.modules.activation.__name__:
            raise ExplainError(
                f"{method} has no rule for the {type(m).__name__} at layer {name!r}: only element-wise "
                f"activations ({', '.join(c.__name__ for c in ELEMENTWISE)}) are rewritten"
            )
    mode = _FindActivations({id(m): n for n, m in model.named_modules()})
    with torch.no_grad(), mode:
        model(probe)
    if mode.found:
        fn, where = mode.found[0]
        what = "the model's own forward" if where == "the model itself" else f"layer {where!r}"
        raise ExplainError(
            f"{method} cannot rewrite the activation {fn}() called as a function in {what} "
            f"({len(mode.found)} such call(s)): a module hook cannot reach it; use activation "
            "modules (nn.ReLU, nn.GELU, ...) there, or saliency / occlusion"
        )
    return names


def activation_rule(model: nn.Module, rule: str | None, probe: torch.Tensor) -> TraceDict | None:
    """A context manager giving every element-wise activation module of ``model`` the backward
    ``rule`` (None: the plain gradient, no hooks)."""
    if rule is None:
        return None
    names = check_rule(model, rule, probe)
    return TraceDict(model, names, retain_output=False, rewrite=RULES[rule])


class ReluRuleBackprop(Explainer):
    """Base for saliency, deconvnet and guided backprop: ``rule`` is None, "deconv" or "guided"
    (the backward rule of every activation, see the module docstring)."""

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
            t = (
                logits.argmax(1)
                if target is None
                else as_index_tensor(target, len(x), "target class", logits.shape[1], x.device)
            )
            return logits.gather(1, t[:, None]).sum(), t
        if target is None:
            raise ExplainError(
                f"give a target filter of layer {self.layer!r} (0 to {self.channels - 1}) for each image"
            )
        t = as_index_tensor(
            target,
            len(x),
            "filter",
            self.channels,
            x.device,
            f" for layer {self.layer!r}, which has {self.channels} channels",
        )
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
        with torch.enable_grad(), evaluating(self.model), contextlib.ExitStack() as stack:
            rule = activation_rule(self.model, self.rule, x[:1].detach())
            if rule is not None:
                stack.enter_context(rule)
            score, t = self._score(x, target)
            (grad,) = torch.autograd.grad(score, x)
        self.details["target"] = t.tolist()
        return grad.detach()
