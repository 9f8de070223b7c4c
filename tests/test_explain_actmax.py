"""Activation maximisation: the objective rises, batching changes nothing, parameterisations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.explain import ActMax, ExplainError, colour_covariance
from convlens.explain.imageparam import colour_matrix, make_param, param_shape
from convlens.models import build
from convlens.trace import hook_count


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def lenet_gray() -> nn.Module:
    """LeNet-5's layout on 28x28 grayscale, narrow."""
    torch.manual_seed(0)
    return build(
        [
            {"type": "conv", "out": 4, "kernel": 5, "padding": 2},
            "relu",
            {"type": "maxpool"},
            {"type": "conv", "out": 6, "kernel": 5, "padding": 2},
            "relu",
            {"type": "maxpool"},
            "flatten",
            {"type": "linear", "out": 16},
            "relu",
            {"type": "linear", "out": "classes"},
        ],
        (1, 28, 28),
        10,
        [0.45],
        [0.25],
    ).eval()


def colour_net() -> nn.Module:
    torch.manual_seed(1)
    return build(
        [
            {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
            "bn",
            "relu",
            {"type": "maxpool"},
            {"type": "conv", "out": 8, "kernel": 3, "padding": 1},
            "bn",
            "relu",
            "flatten",
            {"type": "linear", "out": "classes"},
        ],
        (3, 32, 32),
        10,
        [0.49, 0.48, 0.45],
        [0.25, 0.24, 0.26],
    ).eval()


STEPS = 25


@pytest.mark.parametrize(
    "make,layer", [(lenet_gray, "conv2"), (lenet_gray, None), (colour_net, "conv2"), (colour_net, None)]
)
@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_objective_rises_in_a_fixed_number_of_steps(make, layer, param):
    m = make()
    cov = torch.tensor([[0.06, 0.05, 0.04], [0.05, 0.06, 0.05], [0.04, 0.05, 0.07]]) if m.in_shape[0] == 3 else None
    # one small step size for both bases: lenet_gray's conv2 f0 is nearly dead at random init and
    # its objective barely moves; steps of the default size (0.5, measured on trained nets below
    # and in benchmarks/bench_explain_actmax.py) overshoot on it
    am = ActMax(m, layer, steps=STEPS, param=param, colour_cov=cov, tv=0.01, l2=0.01, lr=0.05)
    targets = [0, 2, 3] if layer else [1, 7]
    images = am.attribute(None, targets)
    assert images.shape == (len(targets), *m.in_shape)  # the model's own size: nothing upsampled
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    curve = am.details["objective"]
    assert curve.shape == (STEPS, len(targets))
    # every image's objective: higher at the end than at the start, on the untransformed image
    # and on the per-step record (mean of the last 5 steps against the first)
    rise = am.details["final"] - am.details["initial"]
    assert (rise > 1e-3).all(), (am.details["initial"], am.details["final"])
    assert (curve[-5:].mean(0) > curve[0]).all()


def analytic_optimum(am: ActMax, targets: torch.Tensor) -> torch.Tensor:
    """A first conv's output (at the centre unit, or its mean over the map) is affine in the
    image: its maximum over [0, 1] images, b + sum(relu(gradient)), is at the image that is 1
    where the input gradient is positive, 0 elsewhere."""
    x = torch.full((len(targets), *am.shape), 0.5, requires_grad=True)
    (g,) = torch.autograd.grad(am._objective(x, targets).sum(), x)
    with torch.no_grad():
        return am._objective((g > 0).float(), targets)


class Foreign(nn.Module):
    """Not built by convlens: LeakyReLU, SiLU, a dilated conv and an adaptive pool, no in_shape."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(6, 8, 3, padding=2, dilation=2),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(8 * 16, 5)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


COV = torch.tensor([[0.06, 0.05, 0.04], [0.05, 0.06, 0.05], [0.04, 0.05, 0.07]])


@pytest.mark.parametrize("objective", ["center", "mean"])
@pytest.mark.parametrize("net", ["colour_net", "foreign"])
def test_defaults_reach_the_analytic_optimum_of_first_layer_filters(net, objective):
    # before the polish, Adam's steps shrank with the sigmoid's slope: filters with a small optimum
    # stalled at 0.5-0.8 of it, and the centre unit under 2-pixel jitter at 0.3
    m = colour_net() if net == "colour_net" else Foreign().eval()
    layer, shape = ("conv1", None) if net == "colour_net" else ("features.0", (3, 16, 16))
    t = torch.arange(4)
    am = ActMax(m, layer, colour_cov=COV, objective=objective, image_shape=shape)  # defaults otherwise
    am.attribute(None, t)
    ratio = am.details["final"] / analytic_optimum(am, t)
    assert (ratio > 0.999).all() and (ratio <= 1 + 1e-5).all(), ratio
    assert am.details["converged"].all() and not am.details["dead"].any()
    fourier = ActMax(m, layer, param="fourier", steps=64, image_shape=shape)
    assert fourier.lr == 0.05 and am.lr == 0.5 and am.param == "pixel" and am.steps == 256 and am.polish == 0.25


def test_default_objective_is_the_centre_unit_at_its_receptive_field():
    m = colour_net()  # conv1 3x3, max-pool 2, conv2 3x3: an 8x8 field, 16x16 map
    am = ActMax(m, "conv2", steps=1)
    assert am.objective == "center" and am.unit() == (8, 8) and am.jitter == 0  # field 8: no jitter
    assert am.field_box() == (13, 21, 13, 21) and am.field.size == 8
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = m[:6](x)  # up to conv2
        torch.testing.assert_close(am._objective(x, torch.tensor([1, 3])), out[[0, 1], [1, 3], 8, 8])
    assert ActMax(m, "conv2", objective="mean").jitter == 2  # 1 pixel per 16 of the 32-pixel canvas
    with pytest.raises(ExplainError, match=r"polish 2 is out of range; allowed: 0 to 1"):
        ActMax(m, "conv2", polish=2)


def test_a_dead_filter_is_named_dead():
    m = colour_net()
    with torch.no_grad():
        m.conv2.weight[5] = 0  # a filter that sees nothing: its output is its bias everywhere
    am = ActMax(m, "conv2", steps=8)
    am.attribute(None, [4, 5])
    assert am.details["dead"].tolist() == [False, True] and not bool(am.details["converged"][1])
    assert float(am.details["final"][1]) == pytest.approx(float(m.conv2.bias[5].detach()))


def test_progress_bar_on_stderr_when_asked(capsys):
    ActMax(colour_net(), "conv1", steps=4, progress=True).attribute(None, [0, 1])
    err = capsys.readouterr().err
    assert "actmax conv1 (2)" in err and "/4 [" in err and "step/s" in err
    ActMax(colour_net(), "conv1", steps=4).attribute(None, [0])  # not a terminal: silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("objective", ["center", "mean"])
def test_best_images_is_the_objective_maximised_over_a_data_set(objective):
    m = colour_net()
    am = ActMax(m, "conv2", steps=1, objective=objective)
    imgs = (torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 255).round().to(torch.uint8)
    best, where = am.best_images(imgs, [0, 5, 7], batch_size=3)
    vals, pos, locs = am.dataset_top(imgs, [0, 5, 7], k=3, batch_size=4)
    x = imgs.float() / 255
    with torch.no_grad():
        out = m[:6](x)
    for j, k in enumerate([0, 5, 7]):
        # centre: the filter's best unit anywhere (the centre unit is the same filter shifted)
        ref = out[:, k].amax((1, 2)) if objective == "center" else out[:, k].mean((1, 2))
        assert int(where[j]) == int(ref.argmax()) and float(best[j]) == pytest.approx(float(ref.max()), rel=1e-5)
        order = ref.argsort(descending=True)[:3]
        assert pos[j].tolist() == order.tolist()
        torch.testing.assert_close(vals[j], ref[order])
        if objective == "center":
            for n, p in enumerate(order.tolist()):
                r, c = locs[j, n].tolist()
                assert float(out[p, k, r, c]) == pytest.approx(float(vals[j, n]))
        else:
            assert locs is None


def test_batched_equals_one_by_one():
    m = colour_net()
    am = ActMax(m, "conv2", steps=10, param="pixel")
    together = am.attribute(None, [5, 1, 6])
    alone = torch.cat([am.attribute(None, [k]) for k in (5, 1, 6)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    chunked = ActMax(m, "conv2", steps=10, param="pixel", chunk=2).attribute(None, [5, 1, 6])
    torch.testing.assert_close(together, chunked, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_start_images_are_reproduced_before_the_first_step(kind):
    cov = torch.tensor([[0.06, 0.05, 0.04], [0.05, 0.06, 0.05], [0.04, 0.05, 0.07]])
    colour = colour_matrix(cov, 3)
    start = torch.rand(2, 3, 32, 32) * 0.9 + 0.05
    p = make_param(kind, torch.zeros(2, *param_shape(kind, 3, (32, 32))), colour, (32, 32), start)
    torch.testing.assert_close(p.image(), start, atol=1e-4, rtol=0)


def test_colour_matrix_is_the_square_root_of_the_covariance():
    x = torch.rand(50, 1, 8, 8).expand(50, 3, 8, 8) * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1)
    x = (x + 0.05 * torch.rand(50, 3, 8, 8)).clamp(0, 1)
    cov = colour_covariance((x * 255).to(torch.uint8))
    root = colour_matrix(cov, 3)
    # root @ root.T is the covariance up to the normalising factor (largest column norm 1)
    ratio = (root @ root.T) / cov
    torch.testing.assert_close(ratio, torch.full((3, 3), float(ratio.mean())), atol=0.02 * float(ratio.mean()), rtol=0)
    assert torch.isclose(root.norm(dim=0).max(), torch.tensor(1.0))
    assert torch.equal(colour_matrix(None, 1), torch.eye(1))


def test_caller_model_is_unchanged():
    m = colour_net().train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ActMax(m, "conv1", steps=3).attribute(None, [0, 1])
    assert m.training and all(p.grad is None for p in m.parameters()) and hook_count(m) == 0
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())


def test_bad_input_names_value_and_range():
    m = lenet_gray()
    with pytest.raises(
        ExplainError, match=r"filter 6 is out of range for layer 'conv2', which has 6 channels; allowed: 0 to 5"
    ):
        ActMax(m, "conv2", steps=2).attribute(None, [0, 6])
    with pytest.raises(
        ExplainError, match=r"target class 10 is out of range; the model has 10 classes; allowed: 0 to 9"
    ):
        ActMax(m, None, steps=2).attribute(None, [10])
    with pytest.raises(ExplainError, match="param 'wavelet' is not one of: fourier, pixel"):
        ActMax(m, "conv1", param="wavelet")
    with pytest.raises(ExplainError, match=r"jitter 20 is out of range; allowed: 0 to 14.0 pixels"):
        ActMax(m, "conv1", jitter=20)
    with pytest.raises(ExplainError, match=r"steps 0 is out of range; allowed: 1 or more"):
        ActMax(m, "conv1", steps=0)


def test_no_hook_survives_an_exception():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    m = colour_net()
    m.pool1 = Boom()  # between conv1 and the traced conv2
    with pytest.raises(RuntimeError, match="boom"):
        ActMax(m, "conv2", steps=2).attribute(None, [0])
    assert hook_count(m) == 0 and not m.training
