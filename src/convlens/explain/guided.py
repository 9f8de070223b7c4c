"""Guided backpropagation (Springenberg et al. 2015): a ReLU passes back only positive gradient,
and only where its input was positive; any other element-wise activation passes back the
positive gradient times its own derivative. See :mod:`.backprop` for the rules, targets and
layers."""

from __future__ import annotations

from .backprop import ReluRuleBackprop
from .base import register


@register("guided")
class GuidedBackprop(ReluRuleBackprop):
    """Guided-backprop signal (N, C, H, W) of a class logit, or of a filter's strongest activation."""

    rule = "guided"
