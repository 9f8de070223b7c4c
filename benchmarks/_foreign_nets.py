"""Networks convlens did not build, written as people write them, for the benchmarks that must hold
on a user's own model: an airbench94-like net (a 2x2 whitening conv, GELU, a pool between conv and
batch norm, one activation module called twice per block, a scaling output), a hand-written ResNet
(shortcut first, functional ReLU) and a flat net with LeakyReLU, SiLU, a dilated conv and
``AdaptiveAvgPool2d(8)``. Each takes (3, 32, 32) images in [0, 1]; ``first_conv`` names the conv
that sees the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class ConvGroup(nn.Module):
    """airbench's block: conv, pool, norm, act, conv, norm, act (the same GELU module twice)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Airbench(nn.Module):
    first_conv = "whiten"

    def __init__(self, width: int = 16):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.act = nn.GELU()
        self.layers = nn.Sequential(ConvGroup(24, width), ConvGroup(width, 2 * width), ConvGroup(2 * width, 2 * width))
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(2 * width, 10, bias=False)
        self.scale = Mul(1 / 9)

    def forward(self, x):
        x = self.pool(self.layers(self.act(self.whiten(x))))
        return self.scale(self.head(x.flatten(1)))


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)  # declared before conv1
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.proj = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if (stride != 1 or c_in != c_out) else None

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + skip)


class ResNet(nn.Module):
    first_conv = "stem"

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1)
        self.body = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x):
        x = self.body(torch.relu(self.stem(x)))
        return self.head(x.mean((2, 3)))


class Flat(nn.Module):
    first_conv = "features.0"

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(width, 2 * width, 3, padding=2, dilation=2),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(8),
        )
        self.head = nn.Linear(2 * width * 64, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


NETS = {"airbench": Airbench, "resnet": ResNet, "flat": Flat}


def train_briefly(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 1, seed: int = 0):
    """A few SGD epochs with flips on uint8 ``images``: enough for conv1 to hold edge and colour
    filters instead of random ones. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order), 128):
            idx = order[i : i + 128]
            x = images[idx].float() / 255
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=g) < 0.5, x.flip(3), x)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
