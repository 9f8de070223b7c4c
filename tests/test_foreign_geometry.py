"""Receptive fields of foreign networks, unit by unit, against the input-gradient support."""

import pytest
import torch
from analyses_models import one_thread  # noqa: F401  (fixture)
from foreign_models import MODELS, SHAPE, flat_net
from torch import nn

from convlens.models.graph import _pass, _positive_copy, trace_graph


def _support(probe: nn.Module, call: str, units: list[tuple[int, int]]) -> list[tuple[int, int, int, int] | None]:
    """The rows [top, bottom) and columns [left, right) of the input pixels whose gradient reaches
    each unit (any channel) of ``call``, on the positive copy (no cancellation, no dead unit)."""
    x = torch.ones(len(units), *SHAPE, requires_grad=True)
    y = _pass(probe, x, {call}, None)[call]
    total = sum(y[n, :, i, j].sum() for n, (i, j) in enumerate(units))
    (g,) = torch.autograd.grad(total, x)
    out = []
    for n in range(len(units)):
        nz = g[n].abs().sum(0).nonzero()
        out.append(
            None
            if len(nz) == 0
            else (int(nz[:, 0].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].min()), int(nz[:, 1].max()) + 1)
        )
    return out


def _max_pooled() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(8),
        nn.Conv2d(4, 4, 3, padding=1, dilation=2),
        nn.AdaptiveMaxPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()


@pytest.mark.parametrize("name", [*sorted(MODELS), "max_pooled"])
def test_every_unit_window_is_its_gradient_support(name):
    model = MODELS[name]() if name in MODELS else _max_pooled()
    graph = trace_graph(model, SHAPE)
    probe = _positive_copy(model)
    checked = 0
    for call in graph.call_order:
        shape = graph.shapes.get(call)
        if shape is None or len(shape) != 3:
            continue
        h, w = shape[1:]
        # the diagonal: every row's span and every column's (the maps are square)
        assert h == w
        units = [(i, i) for i in range(h)]
        want = _support(probe, call, units)
        got = [graph.window(call, i, j) for i, j in units]
        assert got == want, call
        checked += 1
    assert checked >= 5


def test_dilated_first_layer_windows_are_narrower_than_the_clipped_box():
    model = MODELS["flat"]()
    graph = trace_graph(model, SHAPE)
    rf = graph.fields["0"]
    assert (rf.size, rf.jump, rf.start) == (5, 1, -2)
    # unit 1 sees pixels 1 and 3 (its tap at -1 is padding): not the clipped box [0, 4)
    assert graph.window("0", 1, 1) == (1, 4, 1, 4) and rf.window(1, 1, 32, 32) == (0, 4, 0, 4)


def test_adaptive_pool_at_a_fixed_size_has_an_exact_field():
    graph = trace_graph(MODELS["flat"](), SHAPE)
    assert "5" in graph.fields and graph.fields["5"].jump == 4  # the conv after AdaptiveAvgPool2d(8)
    assert graph.fields["4"].to_dict() == {"size": 10, "jump": 4, "start": -3}
    assert graph.fields["5"].to_dict() == {"size": 18, "jump": 4, "start": -7}


def test_adaptive_pool_with_unequal_windows_says_so_and_keeps_exact_windows():
    model = flat_net().eval()
    graph = trace_graph(model, (3, 30, 30))
    assert "4" not in graph.fields
    assert "unequal" in graph.unresolved["4"] and "unequal" in graph.unresolved["5"]
    # 30 -> 8: window 1 pools rows 3 to 7 of a map whose units see 3 more pixels either side
    assert graph.window("4", 1, 1)[:2] == (0, 11)
