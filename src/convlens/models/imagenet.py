"""ResNet-18/34/50 and VGG-11/16 in torchvision's ``state_dict`` layout, for any input of 32 px or more.

The ``state_dict`` keys and shapes are exactly torchvision's (``conv1.weight``,
``layer1.0.downsample.1.running_mean``, ``fc.weight``; ``features.0.weight``,
``classifier.6.bias``), so a torchvision or timm ResNet checkpoint, or a torchvision VGG one,
loads with ``torch.load(weights_only=True)`` and ``load_state_dict``. The differences are outside
the ``state_dict``:

- the first child ``input`` normalises [0, 1] images with the data set's mean and std (buffers
  that are not saved: they come from the config), as in every convlens model;
- each ReLU of a block is its own module (``relu1``, ``relu2``, ``relu3``; torchvision calls one
  ``relu`` two or three times), so every activation has a name an analysis can read;
- a block runs its ``downsample`` shortcut first, so its last conv (``conv2``, or ``conv3`` of a
  bottleneck) is the last to run (layer lists are in execution order).

The arithmetic is torchvision's: 7x7/2 stem conv and 3x3/2 max pool, four stages with stride 2
at the first block of stages 2 to 4 (on the 3x3 conv of a bottleneck, "ResNet v1.5"), global
average pooling; VGG's 7x7 adaptive average pool before its three linear layers. Parameter
counts at 1000 classes (checked in tests): resnet18 11,689,512; resnet34 21,797,672; resnet50
25,557,032; vgg11 132,863,336; vgg16 138,357,544.

Their default analysis layers are the output of each stage (``stage_outputs``, see
``models/stages.py``), not every conv.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .builder import GlobalPool, Normalize

RESNET_BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
# torchvision's configurations "A" (VGG-11) and "D" (VGG-16): output channels, "M" a 2x2 max pool
VGG_LAYERS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def _input(c: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> Normalize:
    return Normalize(mean if mean is not None else [0.0] * c, std if std is not None else [1.0] * c, persistent=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = _downsample(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU()
        self.downsample = _downsample(c_in, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.relu3(self.bn3(self.conv3(out)) + skip)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """torchvision's ResNet-18/34/50 (``depth``), any input size and class count."""

    def __init__(
        self,
        depth: int,
        in_shape: tuple[int, int, int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        kind, counts = RESNET_BLOCKS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.in_shape = tuple(in_shape)
        self.input = _input(in_shape[0], mean, std)
        self.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for stage, n in enumerate(counts):
            planes = 64 * 2**stage
            blocks = []
            for i in range(n):
                blocks.append(block(c_in, planes, 2 if stage and i == 0 else 1))
                c_in = planes * block.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        last = "conv3" if block is Bottleneck else "conv2"
        # analyses that default to every conv read these (models/stages.py)
        self.stage_outputs = ["conv1"] + [f"layer{s + 1}.{n - 1}.{last}" for s, n in enumerate(counts)]
        self.avgpool = GlobalPool("mean")
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017)
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x))


class VGG(nn.Module):
    """torchvision's VGG-11/16 (``depth``; ``batch_norm``: the ``_bn`` variants), any input size."""

    def __init__(
        self,
        depth: int,
        in_shape: tuple[int, int, int],
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.input = _input(in_shape[0], mean, std)
        layers: list[nn.Module] = []
        c_in = in_shape[0]
        self.stage_outputs: list[str] = []  # the conv before each pool (models/stages.py)
        for v in VGG_LAYERS[depth]:
            if v == "M":
                self.stage_outputs.append(f"features.{len(layers) - (3 if batch_norm else 2)}")
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c_in, int(v), 3, padding=1))
            layers += [nn.BatchNorm2d(int(v)), nn.ReLU()] if batch_norm else [nn.ReLU()]
            c_in = int(v)
        self.features = nn.Sequential(*layers)
        # 7x7 whatever the input: below 224 px the maps are repeated up to 7x7, as in torchvision
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(self.input(x)))))


def imagenet_factory(cls: type[nn.Module], depth: int, **options):
    """What a preset returns: builds the module once the data's shape and classes are known."""

    def make(in_shape: tuple[int, int, int], num_classes: int, mean=None, std=None) -> nn.Module:
        if min(in_shape[1:]) < 32:
            raise ConfigError(
                f"{cls.__name__.lower()}{depth} needs images of at least 32x32 px (it halves them 5 times); "
                f"got {in_shape[1]}x{in_shape[2]}"
            )
        return cls(depth, tuple(in_shape), num_classes, mean, std, **options)

    return make
