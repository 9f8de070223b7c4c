"""Patch-whitening initialisation: a conv whose filters decorrelate the patches they see.

A conv layer with ``init: whiten`` and kernel ``k`` on ``C`` channels sees patches of
``D = C * k * k`` values. Its filters are set from the training data: the eigenvectors ``v`` of
the patches' covariance, each scaled by ``1 / sqrt(eigenvalue + eps)``, and their negatives
(``out / 2`` eigenvectors, largest eigenvalue first), with biases that centre the patches. The
first ``out / 2`` output channels then have (close to) identity covariance over the training
patches, and the negated half lets a following GELU or ReLU pass both signs. This is the first
layer of the CIFAR-10 speed records (airbench, hlb-CIFAR10): the network starts from
decorrelated, equally scaled features instead of learning them, which saves epochs. With
``freeze: true`` the filters stay fixed while the rest of the network trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..trace import Trace, borrowed

#: Images used to estimate the patch covariance (airbench uses 5,000 as well: enough for a
#: 12 x 12 covariance to be stable; more only costs time).
WHITEN_IMAGES = 5000


def whiten_layers(model: nn.Module) -> list[str]:
    """Names of the conv layers built with ``init: whiten`` (the spec is kept on the model)."""
    spec = getattr(model, "spec", None) or []
    names = [n for n, _ in model.named_children()][1:]  # children after `input` follow the spec
    return [name for name, layer in zip(names, spec) if layer.get("type") == "conv" and layer.get("init") == "whiten"]


@torch.no_grad()
def patch_moments(
    model: nn.Module, layer: str, images: torch.Tensor, chunk: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) in float64 of the patches ``layer`` sees on ``images``.

    ``images`` are uint8 (N, C, H, W) as stored in a split; the layer's input is traced, so any
    layers before it (the input normalisation) are applied first.
    """
    conv = dict(model.named_children())[layer]
    dev = next(model.parameters()).device
    total, outer, count = None, None, 0
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(dev).float().div_(255)
        with Trace(model, layer, retain_input=True, retain_output=False, stop=True) as t:
            model(x)
        p = F.unfold(t.input.float(), conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (n, D, L)
        p = p.transpose(1, 2).reshape(-1, p.shape[1]).double()
        total = p.sum(0) if total is None else total + p.sum(0)
        outer = p.T @ p if outer is None else outer + p.T @ p
        count += len(p)
    mean = total / count
    return mean, outer / count - torch.outer(mean, mean)


@torch.no_grad()
def set_whitening(conv: nn.Conv2d, mean: torch.Tensor, cov: torch.Tensor, eps: float) -> None:
    """Write the whitening filters for patches with this mean and covariance into ``conv``."""
    half = conv.out_channels // 2
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = evals.argsort(descending=True)[:half]
    w = evecs[:, order].T / (evals[order].clamp(min=0) + eps).sqrt().unsqueeze(1)  # (half, D)
    w = torch.cat([w, -w]).to(conv.weight.dtype)
    conv.weight.copy_(w.view_as(conv.weight))
    if conv.bias is not None:
        conv.bias.copy_(-(w.double() @ mean).to(conv.bias.dtype))


@torch.no_grad()
def init_whitening(model: nn.Module, images: torch.Tensor, max_images: int = WHITEN_IMAGES) -> list[str]:
    """Initialise every ``init: whiten`` conv of ``model`` from the first ``max_images`` images.

    Layers are done in order, so a later whitening layer sees the already whitened output of an
    earlier one. The model's train/eval mode is restored. Returns the names it initialised.
    """
    names = whiten_layers(model)
    if not names:
        return names
    # eval mode: batch norm before a whitening layer must not update its running statistics
    with borrowed(model):
        eps_of = {
            name: layer.get("whiten_eps", 5e-4)
            for name, layer in zip([n for n, _ in model.named_children()][1:], model.spec)
        }
        for name in names:
            mean, cov = patch_moments(model, name, images[:max_images])
            set_whitening(dict(model.named_children())[name], mean, cov, eps_of[name])
    return names
