"""Optimisers and learning-rate schedules.

Schedules are functions of the optimisation step (not the epoch), so warm-up and cosine decay
are smooth within an epoch; ``step`` changes the rate only at epoch boundaries, as the reports'
``StepLR`` did.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..config import OptimConfig, ScheduleConfig


def make_optimizer(model: nn.Module, cfg: OptimConfig, bf16: bool = False) -> torch.optim.Optimizer:
    """``bf16``: training runs in bf16 autocast (Muon's ``ns_precision: auto`` follows it)."""
    if cfg.muon is not None:
        from .muon import make_muon_sgd

        return make_muon_sgd(model, cfg, bf16)
    main, bias = [], []
    for p in model.parameters():
        if p.requires_grad:
            # biases and norm scales/shifts are 1-D; they may take their own learning rate
            (bias if p.ndim <= 1 else main).append(p)
    groups = [{"params": main, "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if bias:
        lr = cfg.lr * cfg.bias_lr_scale
        wd = cfg.weight_decay if cfg.bias_weight_decay is None else cfg.bias_weight_decay
        groups.append({"params": bias, "lr": lr, "base_lr": lr, "weight_decay": wd})
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each step (0-based)."""
    total = max(1, total_steps)
    floor = min(1.0, cfg.min_lr / base_lr) if base_lr > 0 else 0.0

    def cosine(t: float) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))

    if cfg.name == "constant":
        return lambda step: 1.0
    if cfg.name == "step":
        return lambda step: cfg.gamma ** ((step // max(1, steps_per_epoch)) // cfg.step_epochs)
    if cfg.name == "cosine":
        return lambda step: cosine(step / total)
    if cfg.name == "warmup_cosine":
        warm = int(round(cfg.warmup_epochs * steps_per_epoch))

        def f(step: int) -> float:
            if step < warm:
                return cfg.start_factor + (1 - cfg.start_factor) * step / warm
            return cosine((step - warm) / max(1, total - warm))

        return f
    # onecycle, triangular: linear rise over pct_start of the steps, then linear fall
    peak = max(1, int(round(cfg.pct_start * total)))

    def tri(step: int) -> float:
        if step < peak:
            return cfg.start_factor + (1 - cfg.start_factor) * step / peak
        return 1 + (cfg.final_factor - 1) * min(1.0, (step - peak) / max(1, total - peak))

    return tri


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    base = opt.param_groups[0]["base_lr"]
    f = lr_factor(cfg, base, total_steps, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, [f] * len(opt.param_groups))
