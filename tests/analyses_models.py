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
    layers = (
        [{"type": "conv", "out": 2, "kernel": 3, "padding": 1}]
        + norm
        + ["relu", {"type": "maxpool"}, {"type": "conv", "out": 2, "kernel": 3, "padding": 1}]
        + norm
        + ["relu", {"type": "globalpool", "mode": "max"}, {"type": "linear", "out": "classes"}]
    )
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


def random_net(seed: int = 0, channels: int = 3, head: str = "globalpool", groups: int = 1):
    """A small randomly initialised conv net with batch norms (no known answers: for invariances).

    ``head``: ``globalpool`` (average, then the class layer, as the tiny preset) or ``flatten``
    (max-pool, dropout, flatten, fc 16, ReLU, dropout, class layer, as the CSCI-611 net).
    ``groups`` splits conv2 into groups (a layer the ablation ranking cannot see through).
    """
    torch.manual_seed(seed)
    heads = {
        "globalpool": [{"type": "globalpool", "mode": "avg"}, {"type": "linear", "out": "classes"}],
        "flatten": [
            {"type": "maxpool"},
            {"type": "dropout", "p": 0.3},
            "flatten",
            {"type": "linear", "out": 16},
            "relu",
            {"type": "dropout", "p": 0.3},
            {"type": "linear", "out": "classes"},
        ],
    }
    layers = [
        {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
        "bn",
        "relu",
        {"type": "maxpool"},
        {"type": "conv", "out": 6, "kernel": 3, "padding": 1, "groups": groups},
        "bn",
        "relu",
    ] + heads[head]
    model = build(layers, (channels, 8, 8), 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics and affine parts
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.002, 0.01)  # small: the features vary across images
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, torch.nn.Linear):  # hidden units that respond to the features
                torch.nn.init.normal_(m.weight, std=2 / m.in_features**0.5)
    return model.eval()


def fit_head(model, split: Split):
    """Fit the class layer to ``split`` by (ridge) least squares, so that predictions depend on the
    features (a random head predicts one class for everything) and silencing filters matters."""
    from convlens.trace import Trace

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad(), Trace(model, [n for n, m in model.named_modules() if m is head][0], retain_input=True) as t:
        model(split.images.float() / 255)
    feats = torch.cat([t.input, torch.ones(len(split), 1)], 1).double()
    target = torch.nn.functional.one_hot(split.labels, head.out_features).double()
    # ridge regression: well posed even when ReLUs leave the features rank-deficient (lstsq's
    # answer is then not unique and changes from run to run)
    sol = torch.linalg.solve(
        feats.t() @ feats + 1e-3 * torch.eye(feats.shape[1], dtype=feats.dtype), feats.t() @ target
    )
    sol = sol.float()  # (features + 1, classes)
    with torch.no_grad():
        head.weight.copy_(sol[:-1].t())
        head.bias.copy_(sol[-1])
    return model


def random_split(n: int = 60, channels: int = 3, seed: int = 0) -> Split:
    """Noise images whose colour depends on the class (labels cycle 0, 1, 2, 3)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    colour = torch.rand(4, channels, 1, 1, generator=g)
    x = 0.3 * torch.rand(n, channels, 8, 8, generator=g) + 0.7 * colour[labels]
    return Split((x * 255).round().to(torch.uint8), labels, torch.arange(n))


def subject(model, split: Split, classes=None, **kw) -> Subject:
    classes = classes or (CLASSES if int(split.labels.max()) < 3 else ["w", "x", "y", "z"])
    kw.setdefault("progress", False)
    return Subject(model, split, list(classes), **kw)
