"""Muon for conv filters: orthogonalised momentum updates, SGD for everything else.

Muon (Jordan et al. 2024; the airbench94_muon CIFAR-10 record) replaces the update of each conv
filter bank by the nearest semi-orthogonal matrix of its (Nesterov) momentum, flattened to
``(out_channels, in_channels * k * k)``: every direction of the update gets the same step, however
small its gradient. The orthogonal factor ``U V^T`` of ``G = U S V^T`` is approximated by a few
Newton-Schulz iterations of a quintic polynomial (no SVD). The filters are then rescaled to norm
``sqrt(out_channels)``; the batch norm after every conv makes the network blind to that scale.

:class:`MuonSGD` is one optimiser with two kinds of parameter group, so the learning-rate
schedule, checkpoints and weight averaging treat it like any other: groups with ``muon: True``
take the Muon step, the others exactly ``torch.optim.SGD``'s (coupled weight decay, momentum,
Nesterov).
"""

from __future__ import annotations

import torch
from torch import nn

#: The quintic's coefficients (a, b, c) in ``a X + b (X X^T) X + c (X X^T)^2 X``: chosen for the
#: steepest slope at zero, so a few steps push every singular value into roughly [0.7, 1.2].
NS_COEFFS = (3.4445, -4.7750, 2.0315)


@torch.no_grad()
def newton_schulz(
    g: torch.Tensor, steps: int = 3, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """An approximately semi-orthogonal matrix with the singular vectors of the 2-D ``g``.

    ``dtype``: the iteration's precision. bfloat16 (as airbench94_muon iterates) halves its cost
    on CPUs with bf16 matrix units (where bf16 is emulated it is far slower); the result's singular
    values stay within the iteration's own spread (about 0.65-1.2)."""
    if g.ndim != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFS
    x = g.float()
    x = (x / (x.norm() + eps)).to(dtype)  # singular values now <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Muon for the groups marked ``muon: True``, ``torch.optim.SGD`` for the others.

    ``ns_bf16`` (iterate in bf16) belongs to this machine and config, not to the training state:
    it is an attribute, kept out of ``state_dict``, so a run resumed on a CPU without native bf16
    decides afresh.
    """

    def __init__(
        self,
        groups: list[dict],
        lr: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 3,
        ns_bf16: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "muon": False,
            "ns_steps": ns_steps,
        }
        super().__init__(groups, defaults)
        self.ns_bf16 = ns_bf16

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ns_dtype = torch.bfloat16 if self.ns_bf16 else torch.float32
        for group in self.param_groups:
            lr, mom, nesterov, wd = group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and not group["muon"]:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if mom:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(mom).add_(g)
                    g = g.add(buf, alpha=mom) if nesterov else buf
                if group["muon"]:
                    # fixed filter norm (batch norm follows), then the orthogonalised step
                    p.mul_(len(p) ** 0.5 / (p.norm() + 1e-12))
                    g = newton_schulz(g.reshape(len(g), -1), group["ns_steps"], dtype=ns_dtype).view_as(p)
                p.add_(g, alpha=-lr)
        return loss


def muon_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(conv filter banks that Muon steps, every other trainable parameter)."""
    filters, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (filters if p.ndim == 4 else rest).append(p)
    return filters, rest


def make_muon_sgd(model: nn.Module, cfg, bf16: bool = False) -> MuonSGD:
    """``cfg`` (an OptimConfig with ``muon`` set): Muon groups first, then SGD's main and bias
    groups as :func:`~convlens.train.optim.make_optimizer` makes them. ``bf16``: training runs in
    bf16 autocast, so ``ns_precision: auto`` iterates in bf16."""
    filters, rest = muon_groups(model)
    m = cfg.muon
    groups = []
    if filters:
        groups.append(
            {
                "params": filters,
                "lr": m.lr,
                "base_lr": m.lr,
                "momentum": m.momentum,
                "nesterov": m.nesterov,
                "weight_decay": 0.0,
                "muon": True,
                "ns_steps": m.ns_steps,
            }
        )
    main = [p for p in rest if p.ndim > 1]
    bias = [p for p in rest if p.ndim <= 1]
    if main:
        groups.append({"params": main, "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay})
    if bias:
        lr = cfg.lr * cfg.bias_lr_scale
        wd = cfg.weight_decay if cfg.bias_weight_decay is None else cfg.bias_weight_decay
        groups.append({"params": bias, "lr": lr, "base_lr": lr, "weight_decay": wd})
    return MuonSGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        ns_bf16=m.ns_precision == "bf16" or (m.ns_precision == "auto" and bf16),
    )
