"""Grad-CAM's default layer is the traced output of the last convolutional block."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from convlens.explain.gradcam import GradCAM, default_layer
from convlens.models.builder import build_model
from convlens.models.graph import remember_shape


def _preset(name: str) -> nn.Module:
    model = build_model(SimpleNamespace(preset=name, options={}, factory=None), (3, 32, 32), 10)
    remember_shape(model, (3, 32, 32))
    return model


class _Block(nn.Module):
    """Shortcut declared last, sum and ReLU functional: nothing after ``bn2`` is a module."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return F.relu(self.bn2(self.conv1(x)) + self.shortcut(x))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = _Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.pool(self.block(self.stem(x))).flatten(1))


def test_default_layer_of_sequential_presets_is_the_last_activation():
    assert default_layer(_preset("csci611")) == "relu3"
    assert default_layer(_preset("fast")) == "gelu7"


def test_default_layer_of_a_resnet_includes_the_residual_sum():
    # the last conv declared is bn2's input, but the block's output is relu2(bn2 + shortcut)
    assert default_layer(_preset("resnet8")) == "layer3.0.relu2"


def test_default_layer_with_functional_sum_is_the_block_and_matches_a_hand_computation():
    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.rand(2, 3, 8, 8)
    cam = GradCAM(model)  # input shape unknown here: found from the images
    maps = cam.attribute(x, target=[0, 2])
    assert cam.layer == "block"
    # reference: the block's output and the gradient of the target logits at it
    act = model.block(model.stem(x)).detach().requires_grad_(True)
    logits = model.head(model.pool(act).flatten(1))
    (grad,) = torch.autograd.grad(logits[[0, 1], [0, 2]].sum(), act)
    ref = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1))
    assert torch.allclose(cam.details["maps"], ref, atol=1e-6)
    assert maps.shape == (2, 8, 8)
