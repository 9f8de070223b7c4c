"""Incremental occlusion on traced graphs (residual blocks, a conv called twice, functional
activations): equal to whole occluded images and to Captum's Occlusion, on windows that really
are smaller than their maps."""

import pytest
import torch
from foreign_models import MODELS, SHAPE
from test_models_reuse import NETS
from torch import nn

from convlens.explain import ExplainError, Occlusion, spread_to_pixels
from convlens.explain.occlusion import fill_values, positions
from convlens.explain.occlusion_graph import GraphOcclusion
from convlens.models.reuse import trace_fx
from convlens.trace import hook_count


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _images(n=2, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("net", ["resnet8", "reversed_resnet", "airbench", "in_place"])
@pytest.mark.parametrize("window,stride,padding", [(8, 4, 0), (5, 3, 2)])
def test_graph_path_equals_whole_occluded_images(net, window, stride, padding):
    model = NETS[net]()
    x = _images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inc = Occlusion(model, window, stride, padding=padding, fill="gray")
    a = inc.attribute(x)
    naive = Occlusion(model, window, stride, padding=padding, fill="gray", incremental=False)
    b = naive.attribute(x)
    assert inc.details["path"] == "incremental graph" and naive.details["path"] == "naive"
    torch.testing.assert_close(inc.details["probabilities"], naive.details["probabilities"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert float((a - inc.details["base"].max(1).values.view(-1, 1, 1)).abs().max()) > 1e-4  # the patch matters
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and hook_count(model) == 0


@pytest.mark.parametrize("net", ["resnet8", "reversed_resnet"])
def test_the_first_layers_run_on_windows_smaller_than_their_maps(net):
    model = NETS[net]()
    x = _images()
    ys = xs = positions(32, 8, 4)
    engine = GraphOcclusion(model, trace_fx(model), x, fill_values(model, "gray", 3), ys, xs, 8)
    convs = [n for n, r in engine.rule.items() if r == "spatial"]
    first = engine.wins[convs[0]]
    assert engine.windowed >= 2 and first.rh * first.rw < first.hw[0] * first.hw[1] // 4


@pytest.mark.parametrize("net", ["resnet8", "reversed_resnet"])
def test_graph_path_equals_captum(net):
    captum = pytest.importorskip("captum.attr")
    model = NETS[net]()
    x = _images(2, seed=3)
    with torch.no_grad():
        target = model(x).argmax(1)
    ref = captum.Occlusion(lambda i: torch.softmax(model(i), 1)).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.5, target=target, perturbations_per_eval=16
    )
    occ = Occlusion(model, 8, 4, fill="gray")
    maps = occ.attribute(x, target)
    assert occ.details["path"] == "incremental graph"
    drop = occ.details["base"][torch.arange(len(x)), target].view(-1, 1, 1) - maps
    torch.testing.assert_close(spread_to_pixels(drop, 8, 4, (32, 32)), ref.sum(1) / 3, atol=1e-5, rtol=0)
    assert float(ref.abs().max()) > 1e-4


def test_results_do_not_depend_on_chunk_size_on_a_graph():
    model = MODELS["reversed_resnet"]()
    x = _images(2, seed=4)
    ref = Occlusion(model, 6, 5, chunk=10_000).attribute(x)  # 25 positions per image
    for chunk in (1, 7, 25, 26):
        torch.testing.assert_close(Occlusion(model, 6, 5, chunk=chunk).attribute(x), ref, atol=1e-6, rtol=0)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        if h.mean() > 10:  # control flow on a tensor value: torch.fx cannot trace it
            h = -h
        return self.fc(h.mean((2, 3)))


def test_an_untraceable_model_runs_whole_images_and_says_why():
    torch.manual_seed(0)
    model = Branchy().eval()
    x = _images(1)
    occ = Occlusion(model, 8, 8)
    out = occ.attribute(x)
    assert occ.details["path"].startswith("naive (torch.fx cannot trace Branchy")
    torch.testing.assert_close(out, Occlusion(model, 8, 8, incremental=False).attribute(x))
    with pytest.raises(ExplainError, match="incremental occlusion needs a traceable model"):
        Occlusion(model, 8, 8, incremental=True).attribute(x)


def test_images_in_groups_give_the_same_maps(monkeypatch):
    import convlens.explain.occlusion as occlusion

    model = NETS["reversed_resnet"]()
    x = _images(5, seed=6)
    ref = Occlusion(model, 8, 8, incremental=False).attribute(x)
    monkeypatch.setattr(occlusion, "GRAPH_IMAGES", 2)  # groups of 2, 2 and 1 images
    occ = Occlusion(model, 8, 8)
    torch.testing.assert_close(occ.attribute(x), ref, atol=1e-5, rtol=0)
    assert occ.details["path"] == "incremental graph"
