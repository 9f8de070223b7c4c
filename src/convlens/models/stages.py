"""The stages of a deep network: where an analysis looks by default instead of at every conv.

A stage is the run of layers between two reductions of the map; its output is its last conv.
A model may name them (``stage_outputs``, a list of conv names: the torchvision-layout presets
do: ResNet-50's ``conv1``, ``layer1.2.conv3`` ... ``layer4.2.conv3``, VGG-16's conv before each
max pool); any other network with more than :data:`DEEP` convs gets the last conv before its map
shrinks for good (traced for its input shape). Fifty convs of up to 2,048 filters each are too
many to dissect by default; the stage outputs show each level of the hierarchy.
"""

from __future__ import annotations

from torch import nn

from .graph import known_shape, trace_graph

DEEP = 32  # more conv layers than this: a network's defaults read its stages (ResNet-20 has 21)


def is_deep(model: nn.Module, convs: list[str]) -> bool:
    """Whether ``model`` names its stages or has more than :data:`DEEP` conv layers."""
    return bool(getattr(model, "stage_outputs", None)) or len(convs) > DEEP


def stage_layers(model: nn.Module, convs: list[str]) -> list[str]:
    """The model's ``stage_outputs``, else each of ``convs`` (in execution order) whose map is
    larger than every later conv's, and the last one; ``convs`` unchanged when the model's input
    shape is unknown (nothing to trace)."""
    named = getattr(model, "stage_outputs", None)
    if named:
        return list(named)
    shape = known_shape(model)
    if shape is None:
        return list(convs)
    shapes = trace_graph(model, shape).shapes
    area = []
    for name in convs:
        s = shapes.get(name) or [0, 0, 0]
        area.append(s[1] * s[2] if len(s) == 3 else 0)
    return [n for i, n in enumerate(convs) if i == len(convs) - 1 or area[i] > max(area[i + 1 :])]
