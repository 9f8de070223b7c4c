"""Saliency, guided backprop, deconvnet and Grad-CAM against Captum; hooks; the caller's model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.errors import LayerError
from convlens.explain import Deconvnet, ExplainError, GradCAM, GuidedBackprop, Saliency
from convlens.models import build
from convlens.trace import Trace, hook_count

captum = pytest.importorskip("captum.attr")
# Captum announces that it sets requires_grad on inputs and hooks on ReLUs: expected here
pytestmark = pytest.mark.filterwarnings("ignore:.*(require gradients|backward hooks on ReLU).*:UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    m = build(
        [
            {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
            "bn",
            "relu",
            "maxpool",
            {"type": "conv", "out": 6, "kernel": 3},
            "relu",
            "flatten",
            {"type": "linear", "out": "classes"},
        ],
        (3, 8, 8),
        5,
        [0.4, 0.5, 0.6],
        [0.2, 0.3, 0.25],
    )
    m.bn1.running_mean.uniform_(-0.3, 0.3)
    m.bn1.running_var.uniform_(0.5, 2.0)
    return m.eval()


X = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
T = torch.tensor([0, 3, 4, 1])


@pytest.mark.parametrize(
    "ours,theirs,kw",
    [
        (Saliency, "Saliency", {"abs": False}),
        (GuidedBackprop, "GuidedBackprop", {}),
        (Deconvnet, "Deconvolution", {}),
    ],
)
def test_class_targets_agree_with_captum(ours, theirs, kw):
    m = small_model()
    ref = getattr(captum, theirs)(m).attribute(X.clone(), target=T, **kw)
    out = ours(m).attribute(X, T)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert out.abs().sum() > 0


def test_rules_differ_from_each_other():
    # guards against a rule silently not being applied (all three would then be the plain gradient)
    m = small_model()
    a, b, c = (cls(m).attribute(X, T) for cls in (Saliency, GuidedBackprop, Deconvnet))
    assert not torch.allclose(a, b) and not torch.allclose(a, c) and not torch.allclose(b, c)


def test_deconv_of_a_filter_projects_its_strongest_activation():
    m = small_model()
    d = Deconvnet(m, layer="conv2")
    out = d.attribute(X, [1, 2, 5, 0])
    with torch.no_grad(), Trace(m, "conv2") as tr:
        m(X)
    act = tr.output
    for i, f in enumerate([1, 2, 5, 0]):
        pos = d.details["positions"][i]
        assert act[i, f].max() == act[i, f][pos]  # the strongest activation was chosen
        ref = captum.NeuronDeconvolution(m, m.conv2).attribute(X[i : i + 1], neuron_selector=(f, *pos))
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-6, rtol=1e-5)


def test_gradcam_agrees_with_captum():
    m = small_model()
    ref = captum.LayerGradCam(m, m.relu2).attribute(X, target=T, relu_attributions=True)[:, 0]
    cam = GradCAM(m, "relu2", upsample=False)
    torch.testing.assert_close(cam.attribute(X, T), ref, atol=1e-6, rtol=1e-5)
    up = GradCAM(m).attribute(X, T)  # default layer: relu2, resized to the image
    assert up.shape == (4, 8, 8) and (up >= 0).all()


def test_smoothgrad_is_the_mean_gradient_and_does_not_depend_on_chunking():
    m = small_model()
    a = Saliency(m, samples=6, noise=0.1, chunk=5).attribute(X, T)
    b = Saliency(m, samples=6, noise=0.1, chunk=100).attribute(X, T)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    one = Saliency(m, samples=6, noise=0.1, seed=2).attribute(X[2:3], T[2:3])  # image 2 seeds with seed + 0
    two = Saliency(m, samples=6, noise=0.1, seed=0).attribute(X, T)[2:3]
    torch.testing.assert_close(one, two, atol=1e-6, rtol=0)
    # with no noise every copy is the image itself: SmoothGrad equals the plain gradient
    torch.testing.assert_close(
        Saliency(m, samples=3, noise=0.0).attribute(X, T), Saliency(m).attribute(X, T), atol=1e-6, rtol=0
    )


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: GuidedBackprop(m),
        lambda m: Deconvnet(m, layer="conv2"),
        lambda m: GradCAM(m, "relu1"),
    ],
)
def test_no_hook_survives_an_exception(make):
    m = small_model()
    m.pool1 = Boom()  # fails after relu1 (hooked by all three) has run
    expl = make(m)
    with pytest.raises(RuntimeError, match="boom"):
        expl.attribute(X, [0, 1, 2, 3])
    assert hook_count(m) == 0


def test_caller_model_is_unchanged():
    m = small_model().train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    x0 = X.clone()
    for expl in (Saliency(m), GuidedBackprop(m), Deconvnet(m, "conv2"), GradCAM(m), Saliency(m, samples=2)):
        expl.attribute(X, T if not isinstance(expl, Deconvnet) else 1)
        assert m.training and all(mod.training for mod in m.modules())
        assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert torch.equal(X, x0) and not X.requires_grad and hook_count(m) == 0


def test_bad_input_names_value_and_range():
    m = small_model()
    with pytest.raises(
        ExplainError, match=r"filter 9 is out of range for layer 'conv2', which has 6 channels; allowed: 0 to 5"
    ):
        Deconvnet(m, "conv2").attribute(X, 9)
    with pytest.raises(LayerError, match="no layer 'conv9'"):
        GuidedBackprop(m, "conv9")
    with pytest.raises(ExplainError, match=r"target class 7 is out of range; allowed: 0 to 4"):
        Saliency(m).attribute(X, [0, 1, 7, 2])
    with pytest.raises(ExplainError, match=r"expects \(N, 3, 8, 8\): 3 channel\(s\) of 8x8 pixels"):
        GradCAM(m).attribute(torch.rand(2, 1, 8, 8))
    with pytest.raises(ExplainError, match="give a target filter of layer 'conv2' \\(0 to 5\\)"):
        Deconvnet(m, "conv2").attribute(X)


# -- activations other than nn.ReLU -----------------------------------------------------------


def act_model(act) -> nn.Module:
    """(normalize ->) conv 3x3 (4 filters) -> activation -> flatten -> linear: the rules by hand are short."""
    torch.manual_seed(2)
    return build(
        [{"type": "conv", "out": 4, "kernel": 3, "padding": 1}, act, "flatten", {"type": "linear", "out": "classes"}],
        (3, 5, 5),
        3,
    ).eval()


def by_hand(m: nn.Module, x: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The documented rule written out: g = the class row of the linear layer, then through the
    activation (saliency g*f'(z), guided relu(g)*f'(z), deconv relu(g)), then the transposed conv
    and the input normalisation (x - mean) / std."""
    _, conv, act, _, fc = m.children()
    z = conv(m.input(x)).detach().requires_grad_(True)
    (d,) = torch.autograd.grad(act(z).sum(), z)  # f'(z), element-wise
    g = fc.weight[t].view(z.shape).detach()
    g = {"saliency": g * d, "guided": g.clamp(min=0) * d, "deconv": g.clamp(min=0)}[rule]
    return torch.nn.functional.conv_transpose2d(g, conv.weight.detach(), padding=1) / m.input.std.view(1, -1, 1, 1)


ACTS = ["gelu", "silu", "elu", "tanh", {"type": "leaky_relu", "slope": 0.1}, "relu"]
X5 = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(3))
T5 = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("act", ACTS, ids=lambda a: a if isinstance(a, str) else a["type"])
def test_each_rule_follows_its_documented_formula_for_any_elementwise_activation(act):
    m = act_model(act)
    for cls, rule in ((Saliency, "saliency"), (GuidedBackprop, "guided"), (Deconvnet, "deconv")):
        torch.testing.assert_close(cls(m).attribute(X5, T5), by_hand(m, X5, T5, rule), atol=1e-6, rtol=1e-5)


def test_guided_deconv_and_saliency_differ_on_a_gelu_net():
    m = act_model("gelu")
    a, b, c = (cls(m).attribute(X5, T5) for cls in (Saliency, GuidedBackprop, Deconvnet))
    assert not torch.allclose(a, b) and not torch.allclose(a, c) and not torch.allclose(b, c)


class FunctionalNet(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))
        self.fc = nn.Linear(4 * 25, 3)
        self.fn = fn

    def forward(self, x):
        x = self.fn(self.conv1(x))
        return self.fc(self.block(x).flatten(1))


@pytest.mark.parametrize(
    "fn,name",
    [
        (torch.nn.functional.relu, "relu"),
        (lambda x: x.relu(), "relu"),
        (torch.nn.functional.gelu, "gelu"),
        (torch.sigmoid, "sigmoid"),
    ],
)
def test_functional_activations_are_refused_by_name(fn, name):
    m = FunctionalNet(fn).eval()
    for cls in (GuidedBackprop, Deconvnet):
        with pytest.raises(
            ExplainError,
            match=rf"cannot rewrite the activation {name}\(\) called as a function in "
            r"the model's own forward",
        ):
            cls(m).attribute(X5, T5)
        assert hook_count(m) == 0
    assert Saliency(m).attribute(X5, T5).abs().sum() > 0  # the plain gradient needs no rule


def test_functional_activation_inside_a_block_names_the_block():
    class Act(nn.Module):  # a custom module (not an activation module) calling F.gelu
        def forward(self, x):
            return torch.nn.functional.gelu(x)

    m = FunctionalNet(nn.Identity()).eval()
    m.block.append(Act())
    with pytest.raises(ExplainError, match=r"gelu\(\) called as a function in layer 'block.1'"):
        GuidedBackprop(m).attribute(X5, T5)


def test_activations_without_a_rule_are_refused_by_name():
    m = act_model("relu")
    m.fc1 = nn.Sequential(m.fc1, nn.Softmax(1))
    with pytest.raises(ExplainError, match=r"no rule for the Softmax at layer 'fc1.1'"):
        GuidedBackprop(m).attribute(X5, T5)
    m = act_model("relu")
    m.relu1 = nn.ReLU(inplace=True)
    with pytest.raises(ExplainError, match=r"in-place ReLU at layer 'relu1'"):
        Deconvnet(m).attribute(X5, T5)
    torch.testing.assert_close(GuidedBackprop(m).attribute(X5, T5), GuidedBackprop(act_model("relu")).attribute(X5, T5))
