"""Networks written as people write them, not as convlens builds them (tiny widths, 32 px):

- ``airbench``: the airbench94 layout (a whitening conv, GELU, blocks of conv -> max pool ->
  batch norm -> GELU -> conv -> batch norm -> GELU in which ONE activation module runs twice, a
  final max pool, a scaling module);
- ``reversed_resnet``: residual blocks whose activations are ``torch.relu`` calls, whose one conv
  runs twice, and whose modules are declared in the reverse of their call order;
- ``flat``: a sequential net with LeakyReLU, SiLU, a dilated conv and ``AdaptiveAvgPool2d(8)``.

Every batch norm has non-trivial running statistics and affine parts, so that reading the wrong
call or the wrong point of a block changes the numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.data import Split

SHAPE = (3, 32, 32)
CLASSES = ["a", "b", "c", "d"]


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(x)
        x = self.norm1(x)
        x = self.activ(x)
        x = self.conv2(x)
        x = self.norm2(x)
        return self.activ(x)  # the same module a second time


class AirNet(nn.Module):
    def __init__(self, widths=(4, 6, 8), classes: int = 4):
        super().__init__()
        self.whiten = nn.Conv2d(3, 2 * 3 * 2, 2, padding=0, bias=True)
        self.layers = nn.Sequential(
            ConvGroup(12, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2])
        )
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[2], classes, bias=False)
        self.scale = Mul(1 / 9)

    def forward(self, x):
        x = self.layers(self.act(self.whiten(x)))
        return self.scale(self.head(self.pool(x).flatten(1)))


class RevBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.bn2 = nn.BatchNorm2d(c)  # declared in the reverse of their call order
        self.bn1 = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        skip = x
        out = torch.relu(self.bn1(self.conv(x)))
        out = self.bn2(self.conv(out))  # the same conv a second time
        return torch.relu(out + skip)


class RevNet(nn.Module):
    def __init__(self, width: int = 4, classes: int = 4):
        super().__init__()
        self.fc = nn.Linear(2 * width, classes)
        self.block2 = RevBlock(2 * width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block1 = RevBlock(width)
        self.stem = nn.Conv2d(3, width, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.block1(x)
        x = self.block2(torch.relu(self.down(x)))
        return self.fc(x.mean((2, 3)))


def flat_net(classes: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),  # near the border its taps skip a pixel
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(8),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def _statistics(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.05 + 0.2 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
    return model.eval()


def airbench() -> AirNet:
    torch.manual_seed(0)
    return _statistics(AirNet(), 1)


def reversed_resnet() -> RevNet:
    torch.manual_seed(0)
    return _statistics(RevNet(), 2)


def flat() -> nn.Sequential:
    torch.manual_seed(0)
    return _statistics(flat_net(), 3)


MODELS = {"airbench": airbench, "reversed_resnet": reversed_resnet, "flat": flat}


def split(n: int = 16, seed: int = 0) -> Split:
    """Noise images whose colour depends on the class (labels cycle 0..3)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    colour = torch.rand(4, 3, 1, 1, generator=g)
    x = 0.5 * torch.rand(n, *SHAPE, generator=g) + 0.5 * colour[labels]
    return Split((x * 255).round().to(torch.uint8), labels, torch.arange(n))
