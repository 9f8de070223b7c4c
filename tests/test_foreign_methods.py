"""Per-image methods on networks convlens did not build (``foreign_models``), against Captum or
an independent backward-hook implementation of the documented rules."""

import pytest
import torch
from analyses_models import one_thread  # noqa: F401  (fixture)
from foreign_models import MODELS, SHAPE
from torch import nn

from convlens.explain import Deconvnet, ExplainError, GradCAM, GuidedBackprop, Occlusion, Saliency
from convlens.explain.occlusion import spread_to_pixels
from convlens.trace import hook_count, split_call

captum = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore:.*(require gradients|backward hooks on ReLU).*:UserWarning")

CLOSE = dict(atol=1e-6, rtol=1e-5)
ACTS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU)


def _inputs():
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(4))
    return x, torch.tensor([0, 3, 1])


def _rule_by_hooks(model: nn.Module, x: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """Guided backprop passes relu(g) * f'(z) back through every activation module (every call),
    deconvnet relu(g): written as plain full backward hooks."""

    def hook(_m, grad_in, grad_out):
        g = grad_out[0]
        return ((grad_in[0] * (g > 0)) if rule == "guided" else g.clamp(min=0),)

    handles = [m.register_full_backward_hook(hook) for m in model.modules() if isinstance(m, ACTS)]
    try:
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), xg)
    finally:
        for h in handles:
            h.remove()
    return g


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saliency_and_occlusion_match_captum(name):
    model = MODELS[name]()
    x, t = _inputs()
    ref = captum.Saliency(model).attribute(x.clone(), target=t, abs=False)
    torch.testing.assert_close(Saliency(model).attribute(x, t), ref, **CLOSE)
    win, stride = 8, 8
    occ = Occlusion(model, win, stride, fill="gray")
    maps = occ.attribute(x, t)
    drop = occ.details["base"][torch.arange(len(t)), t].view(-1, 1, 1) - maps
    ref = captum.Occlusion(lambda v: torch.softmax(model(v), 1)).attribute(
        x.clone(), sliding_window_shapes=(3, win, win), strides=(3, stride, stride), baselines=0.5, target=t
    )
    torch.testing.assert_close(spread_to_pixels(drop, win, stride, SHAPE[1:]), ref.sum(1) / 3, atol=1e-5, rtol=0)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["airbench", "flat"])
def test_guided_and_deconv_follow_the_rule_through_every_call(name):
    model = MODELS[name]()
    x, t = _inputs()
    for method, rule in ((GuidedBackprop, "guided"), (Deconvnet, "deconv")):
        got = method(model).attribute(x, t)
        torch.testing.assert_close(got, _rule_by_hooks(model, x, t, rule), **CLOSE)
        assert got.abs().sum() > 0


def test_guided_backprop_refuses_functional_activations_by_name():
    model = MODELS["reversed_resnet"]()
    x, t = _inputs()
    with pytest.raises(ExplainError, match="relu"):
        GuidedBackprop(model).attribute(x, t)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["reversed_resnet", "flat"])
def test_gradcam_matches_captum(name):
    model = MODELS[name]()
    x, t = _inputs()
    gc = GradCAM(model, upsample=False)
    cam = gc.attribute(x, t)
    ref = captum.LayerGradCam(model, model.get_submodule(split_call(gc.layer)[0]))
    torch.testing.assert_close(cam, ref.attribute(x.clone(), target=t, relu_attributions=True)[:, 0], **CLOSE)
