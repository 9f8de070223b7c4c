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
    m = build([{"type": "conv", "out": 4, "kernel": 3, "padding": 1}, "bn", "relu", "maxpool",
               {"type": "conv", "out": 6, "kernel": 3}, "relu", "flatten", {"type": "linear", "out": "classes"}],
              (3, 8, 8), 5, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25])  # fmt: skip
    m.bn1.running_mean.uniform_(-0.3, 0.3)
    m.bn1.running_var.uniform_(0.5, 2.0)
    return m.eval()


X = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
T = torch.tensor([0, 3, 4, 1])


@pytest.mark.parametrize("ours,theirs,kw", [
    (Saliency, "Saliency", {"abs": False}), (GuidedBackprop, "GuidedBackprop", {}), (Deconvnet, "Deconvolution", {}),
])  # fmt: skip
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
    torch.testing.assert_close(Saliency(m, samples=3, noise=0.0).attribute(X, T), Saliency(m).attribute(X, T), atol=1e-6, rtol=0)


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("make", [
    lambda m: GuidedBackprop(m), lambda m: Deconvnet(m, layer="conv2"), lambda m: GradCAM(m, "relu1"),
])  # fmt: skip
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
    with pytest.raises(ExplainError, match=r"filter 9 is out of range for layer 'conv2', which has 6 channels; allowed: 0 to 5"):
        Deconvnet(m, "conv2").attribute(X, 9)
    with pytest.raises(LayerError, match="no layer 'conv9'"):
        GuidedBackprop(m, "conv9")
    with pytest.raises(ExplainError, match=r"target class 7 is out of range; allowed: 0 to 4"):
        Saliency(m).attribute(X, [0, 1, 7, 2])
    with pytest.raises(ExplainError, match=r"expects \(N, 3, 8, 8\): 3 channel\(s\) of 8x8 pixels"):
        GradCAM(m).attribute(torch.rand(2, 1, 8, 8))
    with pytest.raises(ExplainError, match="give a target filter of layer 'conv2' \\(0 to 5\\)"):
        Deconvnet(m, "conv2").attribute(X)
