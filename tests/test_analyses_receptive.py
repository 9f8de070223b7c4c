"""Receptive fields: the hand-computed table, and the input-gradient support of a unit."""

import pytest
import torch
from torch import nn

from convlens.models import ReceptiveField, build, receptive_fields

C3 = {"type": "conv", "out": 1, "kernel": 3}
POOL2 = {"type": "maxpool", "kernel": 2}


@pytest.mark.parametrize(
    "layers,size,jump",
    [
        ([C3], 3, 1),  # conv3 s1
        ([C3, C3], 5, 1),  # two conv3
        ([C3, POOL2, C3], 8, 2),  # conv3 + pool2 + conv3
        ([C3, C3, C3], 7, 1),
        ([{**C3, "kernel": 5}], 5, 1),
        ([{**C3, "stride": 2}, C3], 7, 2),  # a stride-2 conv doubles later steps
        ([{**C3, "dilation": 2}], 5, 1),  # dilation 2: 3 taps spread over 5 pixels
        ([C3, POOL2, C3, POOL2, C3], 18, 4),
        ([{**C3, "kernel": 7, "padding": 3}, POOL2, C3], 12, 2),  # the CSE849 first block
    ],
)
def test_hand_computed_table(layers, size, jump):
    model = build(layers + [{"type": "flatten"}, {"type": "linear", "out": 2}], (1, 32, 32), 2)
    last = [n for n, _ in model.named_children()][len(layers)]
    rf = receptive_fields(model)[last]
    assert (rf.size, rf.jump) == (size, jump)


def test_net4_table_of_the_cs7015_report():
    # The report's Table 4 gives 3, 5, 7, 13, 17 for conv1-5 of Net 4; counting pixels exactly
    # (a 2x2 pool adds one pixel times the current step) gives 12 and 16 for conv4 and conv5.
    from convlens.config import load_config
    from convlens.models import build_model

    model = build_model(load_config({"model": {"preset": "net4", "options": {"width": 4}}}).model, (3, 32, 32), 10)
    rf = receptive_fields(model)
    assert [rf[f"conv{i}"].size for i in range(1, 7)] == [3, 5, 7, 12, 16, 20]


def _support(model: nn.Module, layer_index: int, i: int, j: int, shape) -> tuple[int, int, int, int]:
    """Rows/cols of the input that reach output (i, j) of the given child: the gradient's support."""
    x = torch.zeros(1, *shape, requires_grad=True)
    y = x
    for k, m in enumerate(model):
        y = m(y)
        if k == layer_index:
            break
    y[0, 0, i, j].backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    return int(nz[:, 0].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].min()), int(nz[:, 1].max()) + 1


@pytest.mark.parametrize(
    "spec",
    [
        [(3, 1, 1, 1), "avg2", (3, 1, 1, 1)],
        [(5, 2, 2, 1), (3, 1, 0, 2), "avg3s2p1", (3, 1, 1, 1)],
        [(3, 1, 0, 1), (3, 2, 1, 1), "avg2", (1, 1, 0, 1)],
    ],
)
def test_window_matches_the_gradient_support(spec):
    # all-positive weights and average pools: every input pixel in the field has a nonzero gradient
    mods = []
    for s in spec:
        if s == "avg2":
            mods.append(nn.AvgPool2d(2))
        elif s == "avg3s2p1":
            mods.append(nn.AvgPool2d(3, 2, 1, count_include_pad=True))
        else:
            k, stride, pad, dil = s
            conv = nn.Conv2d(1, 1, k, stride, pad, dil)
            nn.init.constant_(conv.weight, 1.0)
            mods.append(conv)
    model = nn.Sequential(*mods)
    rf = receptive_fields(model)
    last = str(len(mods) - 1)
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 24, 24))
    for i, j in [(0, 0), (1, 2), (out.shape[2] - 1, out.shape[3] - 1)]:
        assert rf[last].window(i, j, 24, 24) == _support(model, len(mods) - 1, i, j, (1, 24, 24))


def test_window_clips_at_the_border():
    rf = ReceptiveField(size=8, jump=2, start=-3)
    assert rf.window(0, 0, 6, 6) == (0, 5, 0, 5)
    assert rf.window(2, 1, 6, 6) == (1, 6, 0, 6)


def test_string_padding():
    model = nn.Sequential(nn.Conv2d(1, 1, 5, padding="same"), nn.Conv2d(1, 1, 3, padding="valid"))
    rf = receptive_fields(model)
    assert rf["0"] == ReceptiveField(5, 1, -2)
    assert rf["1"] == ReceptiveField(7, 1, -2)
