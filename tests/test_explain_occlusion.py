"""Occlusion: a hand-computed map, chunk-size invariance, incremental == naive, Captum agreement."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from convlens.explain import ExplainError, Occlusion, spread_to_pixels
from convlens.explain.geometry import compile_plan
from convlens.explain.incremental import chunks
from convlens.models import build
from convlens.trace import hook_count


def hand_set_model(conv_first: bool) -> nn.Module:
    """1x3x3 images -> logits (sum of pixels, 0); optionally through a 1x1 identity conv first."""
    layers = ([{"type": "conv", "out": 1, "kernel": 1, "bias": False}] if conv_first else []) + [
        {"type": "flatten"},
        {"type": "linear", "out": "classes", "bias": False},
    ]
    m = build(layers, (1, 3, 3), 2)
    with torch.no_grad():
        if conv_first:
            m.conv1.weight.fill_(1.0)
        m.fc1.weight.zero_()
        m.fc1.weight[0].fill_(1.0)
    return m.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    # many small batches: on a shared 2-core machine one thread avoids waiting at every op's barrier
    torch.set_num_threads(1)


IMAGE = torch.tensor([[[[1.0, 0, 0], [0, 0, 0], [0, 0, 2]]]])


@pytest.mark.parametrize("conv_first", [False, True])
@pytest.mark.parametrize("incremental", [False, "auto"])
def test_known_map_on_hand_set_model(conv_first, incremental):
    # a 2x2 zero patch at stride 1 removes the 1 (top-left), nothing, nothing, the 2 (bottom-right):
    # sums 2, 3 / 3, 1; p(class 0) = sigmoid(sum - 0)
    occ = Occlusion(hand_set_model(conv_first), window=2, stride=1, fill="zero", incremental=incremental)
    maps = occ.attribute(IMAGE, target=0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = torch.tensor([[[sig(2), sig(3)], [sig(3), sig(1)]]])
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)
    assert occ.details["path"] == ("incremental" if conv_first and incremental else "naive")
    torch.testing.assert_close(occ.details["base"][0, 0], torch.tensor(sig(3)))
    both = occ.attribute(IMAGE, target=[[0, 1]])  # several targets per image: (N, T, h, w)
    torch.testing.assert_close(both[:, 1], 1 - expected, atol=1e-6, rtol=0)


def test_map_shape_follows_the_reports():
    m = build(
        [
            {"type": "conv", "out": 2, "kernel": 3, "padding": 1},
            "relu",
            "flatten",
            {"type": "linear", "out": "classes"},
        ],
        (3, 32, 32),
        3,
    )
    for k, s in ((8, 2), (4, 3), (12, 4)):
        maps = Occlusion(m, k, s).attribute(torch.rand(2, 3, 32, 32))
        assert maps.shape == (2, (32 - k) // s + 1, (32 - k) // s + 1)
    assert Occlusion(m, 8, 2, padding=4).attribute(torch.rand(1, 3, 32, 32)).shape == (1, 17, 17)


ARCHS = {
    # conv-bn-relu x3 and a pool before fc: the CSCI-611 shape (linear-update path)
    "csci611": (
        [
            {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
            "bn",
            "relu",
            {"type": "conv", "out": 6, "kernel": 3, "padding": 1},
            "bn",
            "relu",
            {"type": "maxpool"},
            {"type": "dropout", "p": 0.3},
            "flatten",
            {"type": "linear", "out": 16},
            "relu",
            {"type": "linear", "out": "classes"},
        ],
        (3, 16, 16),
    ),
    # LeNet-5 on grayscale: same-padded 5x5 convs and two pools
    "lenet": (
        [
            {"type": "conv", "out": 4, "kernel": 5, "padding": 2},
            "relu",
            {"type": "maxpool"},
            {"type": "conv", "out": 6, "kernel": 5, "padding": 2},
            "relu",
            {"type": "maxpool"},
            "flatten",
            {"type": "linear", "out": "classes"},
        ],
        (1, 16, 16),
    ),
    # strided, dilated, unpadded convs, padded max-pool and avg-pool, global pool head (assembly path)
    "odd": (
        [
            {"type": "conv", "out": 3, "kernel": 3, "stride": 2, "padding": 1},
            "relu",
            {"type": "conv", "out": 4, "kernel": 3, "dilation": 2, "padding": 0},
            "leaky_relu",
            {"type": "maxpool", "kernel": 3, "stride": 1, "padding": 1},
            {"type": "avgpool", "kernel": 2, "stride": 1},
            {"type": "globalpool", "mode": "max"},
            {"type": "linear", "out": "classes"},
        ],
        (2, 17, 15),
    ),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    layers, shape = ARCHS[name]
    m = build(layers, shape, 5, [0.4] * shape[0], [0.3] * shape[0])
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    return m.eval()


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize(
    "window,stride,padding,fill", [(4, 2, 0, "gray"), (5, 3, 2, "mean"), (3, 1, 0, [0.1, 0.9, 0.5])]
)
def test_incremental_equals_naive(name, window, stride, padding, fill):
    m = _model(name)
    c = ARCHS[name][1][0]
    fill = fill[:c] if isinstance(fill, list) else fill
    x = torch.rand(2, *ARCHS[name][1], generator=torch.Generator().manual_seed(3))
    inc = Occlusion(m, window, stride, fill=fill, padding=padding, incremental=True)
    naive = Occlusion(m, window, stride, fill=fill, padding=padding, incremental=False)
    a, b = inc.attribute(x, [1, 2]), naive.attribute(x, [1, 2])
    assert inc.details["path"] == "incremental" and naive.details["path"] == "naive"
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(inc.details["probabilities"], naive.details["probabilities"], atol=1e-5, rtol=0)


def test_plans_take_the_intended_paths():
    plan = compile_plan(_model("csci611"), (3, 16, 16))
    assert len(plan.stages) == 3 and plan.linear_at is not None  # conv, conv, pool; then the fc update
    plan = compile_plan(_model("odd"), (2, 17, 15))
    assert len(plan.stages) == 4 and plan.linear_at is None  # global pool: assembled full maps
    rnn = build([{"type": "gru", "hidden": 4}, {"type": "linear", "out": "classes"}], (1, 8, 8), 3)
    assert compile_plan(rnn, (1, 8, 8)) is None
    out = Occlusion(rnn, 3, 1).attribute(torch.rand(1, 1, 8, 8))  # falls back to the naive loop
    assert out.shape == (1, 6, 6)
    with pytest.raises(ExplainError, match="incremental occlusion needs"):
        Occlusion(rnn, 3, 1, incremental=True).attribute(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("incremental", [True, False])
def test_results_do_not_depend_on_chunk_size(incremental):
    m = _model("csci611")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    ref = Occlusion(m, 4, 3, incremental=incremental, chunk=10_000).attribute(x)  # 25 positions per image
    for chunk in (1, 7, 25, 26, 60):
        out = Occlusion(m, 4, 3, incremental=incremental, chunk=chunk).attribute(x)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_chunks_cover_every_item_once():
    for n_img, per, chunk in ((3, 49, 1), (3, 49, 7), (3, 49, 50), (3, 49, 100), (2, 10, 3)):
        ranges = chunks(n_img * per, per, chunk)
        assert all(0 < b - a <= chunk for a, b in ranges)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n_img * per))


def test_agrees_with_captum_occlusion():
    captum = pytest.importorskip("captum.attr")
    m = _model("csci611")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    occ = Occlusion(m, 4, 2, fill="gray")
    maps = occ.attribute(x, [0, 3])
    drop = occ.details["base"][[0, 1], [0, 3]].view(-1, 1, 1) - maps
    ours = spread_to_pixels(drop, 4, 2, (16, 16))
    ref = captum.Occlusion(lambda v: torch.softmax(m(v), 1)).attribute(
        x,
        sliding_window_shapes=(3, 4, 4),
        strides=(3, 2, 2),
        baselines=0.5,
        target=torch.tensor([0, 3]),
        perturbations_per_eval=8,
    )
    torch.testing.assert_close(ours, ref.sum(1) / 3, atol=1e-5, rtol=0)


def test_caller_model_and_inputs_are_unchanged():
    m = _model("csci611").train()
    m.bn1.eval()  # a mixed state must come back as it was
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(2, 3, 16, 16)
    x0 = x.clone()
    Occlusion(m, 4, 2).attribute(x)
    assert m.training and not m.bn1.training and m.bn2.training
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert torch.equal(x, x0) and hook_count(m) == 0


def test_bad_input_names_value_and_range():
    m = _model("csci611")
    with pytest.raises(ExplainError, match=r"window 20 does not fit the 16x16 image; allowed: 1 to 16"):
        Occlusion(m, 20, 2)
    with pytest.raises(ExplainError, match=r"stride 0 is out of range; allowed: 1 to 16"):
        Occlusion(m, 4, 0)
    occ = Occlusion(m, 4, 2)
    with pytest.raises(ExplainError, match=r"expects \(N, 3, 16, 16\): 3 channel\(s\) of 16x16"):
        occ.attribute(torch.rand(1, 1, 16, 16))
    with pytest.raises(ExplainError, match=r"expects \(N, 3, 16, 16\)"):
        occ.attribute(torch.rand(1, 3, 28, 28))
    with pytest.raises(ExplainError, match=r"use images\[None\]"):
        occ.attribute(torch.rand(3, 16, 16))
    with pytest.raises(ExplainError, match=r"target class 5 is out of range; allowed: 0 to 4"):
        occ.attribute(torch.rand(1, 3, 16, 16), 5)
    with pytest.raises(ExplainError, match=r"fill has 2 values; the images have 3 channel"):
        Occlusion(m, 4, 2, fill=[0.1, 0.2]).attribute(torch.rand(1, 3, 16, 16))
