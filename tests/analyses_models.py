"""Tiny models with hand-set weights and synthetic splits whose analysis results are known."""

from __future__ import annotations

import pytest
import torch

from convlens.analyses import Subject
from convlens.data import Split
from convlens.models import build

# Twelve 6x6 grey images, black except one bright pixel: image n has value VALUES[n] at PIXELS[n].
VALUES = [40, 200, 90, 255, 10, 120, 180, 60, 230, 150, 20, 100]
PIXELS = [(0, 0), (2, 3), (5, 5), (1, 4), (3, 3), (4, 0), (0, 5), (2, 2), (5, 1), (3, 0), (1, 1), (4, 4)]
CLASSES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine each threaded call
    can wait tens of milliseconds for the other core (measured: 0.05 ms vs 40 ms per conv)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dot_split() -> Split:
    x = torch.zeros(len(VALUES), 1, 6, 6, dtype=torch.uint8)
    for n, ((r, c), v) in enumerate(zip(PIXELS, VALUES)):
        x[n, 0, r, c] = v
    labels = torch.arange(len(VALUES)) % 3
    return Split(x, labels, torch.arange(len(VALUES)) + 1000)


def center(conv: torch.nn.Conv2d, out: int, inp: int, value: float) -> None:
    with torch.no_grad():
        k = conv.kernel_size[0] // 2
        conv.weight[out, inp, k, k] = value


def dot_net(bn: bool = False):
    """conv3 p1 (2 filters) -> [bn] -> relu -> maxpool 2 -> conv3 p1 (2 filters) -> [bn] -> relu -> max -> fc.

    conv1 f0 copies the image (centre weight 1), conv1 f1 negates it; conv2 f0 copies conv1 f0's
    pooled map, conv2 f1 has zero weights and bias -1: never active after its ReLU.
    """
    torch.manual_seed(0)
    norm = [{"type": "bn"}] if bn else []
    layers = ([{"type": "conv", "out": 2, "kernel": 3, "padding": 1}] + norm + ["relu", {"type": "maxpool"},
              {"type": "conv", "out": 2, "kernel": 3, "padding": 1}] + norm + ["relu",
              {"type": "globalpool", "mode": "max"}, {"type": "linear", "out": "classes"}])  # fmt: skip
    model = build(layers, (1, 6, 6), len(CLASSES))
    with torch.no_grad():
        for conv in (model.conv1, model.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        center(model.conv1, 0, 0, 1.0)
        center(model.conv1, 1, 0, -1.0)
        center(model.conv2, 0, 0, 1.0)
        model.conv2.bias[1] = -1.0
    return model.eval()


def random_net(seed: int = 0, channels: int = 3):
    """A small randomly initialised conv net with batch norms (no known answers: for invariances)."""
    torch.manual_seed(seed)
    layers = [{"type": "conv", "out": 4, "kernel": 3, "padding": 1}, "bn", "relu", {"type": "maxpool"},
              {"type": "conv", "out": 6, "kernel": 3, "padding": 1}, "bn", "relu",
              {"type": "globalpool", "mode": "avg"}, {"type": "linear", "out": "classes"}]  # fmt: skip
    model = build(layers, (channels, 8, 8), 4)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parts
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def random_split(n: int = 60, channels: int = 3, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, 8, 8), dtype=torch.uint8, generator=g)
    return Split(x, torch.arange(n) % 4, torch.arange(n))


def subject(model, split: Split, classes=None, **kw) -> Subject:
    classes = classes or (CLASSES if int(split.labels.max()) < 3 else ["w", "x", "y", "z"])
    kw.setdefault("progress", False)
    return Subject(model, split, list(classes), **kw)
