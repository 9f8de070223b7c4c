"""Residual networks in the CIFAR layout of He et al. 2016 (section 4.2), as ``nn.Module``\\ s.

A 3x3 conv with ``width`` channels, then three stages of ``n`` basic blocks with ``width``,
``2 width`` and ``4 width`` channels (the first block of stages 2 and 3 halves the map with stride
2), global average pooling and one linear layer: ``6 n + 2`` weight layers (ResNet-20: n = 3).
Where a block changes the shape, its shortcut is a 1x1 conv with stride 2 and a batch norm (the
paper's option B, projection shortcuts); everywhere else it is the identity. Like every convlens
model, the first child ``input`` normalises [0, 1] images, so analyses work in pixel space.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .builder import GlobalPool, Normalize


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the shortcut, then ReLU (declared in reading order; the
    shortcut runs first, which layer lists follow: they are in execution order)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)  # first: the block's last conv to run is conv2, its deepest
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + skip)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        width: int,
        in_shape: tuple[int, int, int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        c = in_shape[0]
        n = (depth - 2) // 6
        self.in_shape = tuple(in_shape)
        self.input = Normalize(mean if mean is not None else [0.0] * c, std if std is not None else [1.0] * c)
        self.conv1 = nn.Conv2d(c, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        c_in = width
        for stage in range(3):
            c_out = width * 2**stage
            blocks = [BasicBlock(c_in if i == 0 else c_out, c_out, 2 if (stage and i == 0) else 1) for i in range(n)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
            c_in = c_out
        self.pool = GlobalPool("mean")
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.input(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


def resnet_factory(depth: int, width: int):
    """What a residual preset returns: builds the module once the data's shape is known."""

    def make(in_shape: tuple[int, int, int], num_classes: int, mean=None, std=None) -> CifarResNet:
        return CifarResNet(depth, width, in_shape, num_classes, mean, std)

    return make
