"""The deconvnet projection of Zeiler & Fergus (2014).

A filter's strongest activation in an image is kept alone (every other activation of the layer
set to zero) and sent back down to pixel space: through each ReLU by rectifying the signal coming
down (the "ReLU rule", which ignores where the forward input was negative; every element-wise
activation gets this rule, see :mod:`.backprop`), through each
max-pool by the forward pass's switches (the winning position of each pooling region), through
each convolution by its transposed filters. See :mod:`.backprop` for how this is done with
autograd and for class targets.
"""

from __future__ import annotations

from .backprop import ReluRuleBackprop
from .base import register


@register("deconv")
class Deconvnet(ReluRuleBackprop):
    """Deconvnet projection (N, C, H, W) of a filter's strongest activation (``layer=``) or a class logit."""

    rule = "deconv"
