"""A hand-written residual network as people write them: the shortcut is computed first, the
activations are functions, the shortcut conv is declared after the block's convs, and one ReLU
module is called twice. `make` is the factory `convlens import handmade_resnet:make` imports."""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.proj = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if (stride != 1 or c_in != c_out) else None

    def forward(self, x):
        skip = x if self.proj is None else self.proj(x)  # the shortcut first
        out = F.relu(self.bn1(self.conv1(x)))  # an activation written as a function
        return F.relu(self.bn2(self.conv2(out)) + skip)


class HandResNet(nn.Module):
    def __init__(self, channels: int = 1, width: int = 4, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, 1, 1)
        self.act = nn.ReLU()
        self.body = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.act(self.body(x))  # the same ReLU module a second time
        return self.head(x.mean((2, 3)))


def make(channels: int = 1, width: int = 4, classes: int = 10) -> HandResNet:
    torch.manual_seed(0)
    return HandResNet(channels, width, classes)
