"""Concepts: per-filter contributions (activation x gradient) with hand-computed answers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from convlens.explain.concepts import Concepts, lower_layer
from convlens.jobs import ExplainError
from convlens.models.builder import build_model
from convlens.models.graph import remember_shape
from convlens.trace import hook_count

from conftest import tiny_config


def _linear_head() -> nn.Sequential:
    """conv 1x1 (2 filters: x and -x of the one channel) -> ReLU -> mean -> linear without bias:
    logit_c = sum_k W[c, k] * mean(relu(w_k * x)), so filter k contributes W[c, k] * mean(act_k)."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=False)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model[4].weight.copy_(torch.tensor([[2.0, 3.0], [-1.0, 0.5]]))
    return model


def test_contributions_of_a_hand_set_model():
    model = _linear_head()
    x = torch.tensor([[[[0.2, -0.4], [0.6, 0.0]]]])  # relu(x): mean 0.2; relu(-x): mean 0.1
    expl = Concepts(model, "1")
    c = expl.attribute(x, target=[0])
    assert torch.allclose(c, torch.tensor([[2.0 * 0.2, 3.0 * 0.1]]), atol=1e-7)
    assert expl.details["order"][0].tolist() == [0, 1]
    # positively homogeneous above the layer: the share is the whole logit
    assert torch.allclose(expl.details["total"], expl.details["logit"], atol=1e-7)
    assert abs(float(expl.details["remainder"][0])) < 1e-7
    # per-position map of filter 1: relu(-x) * 3 / 4 positions
    assert torch.allclose(expl.details["maps"][0, 1], torch.tensor([[0.0, 0.3], [0.0, 0.0]]), atol=1e-7)
    c1 = expl.attribute(x, target=[1])
    assert torch.allclose(c1, torch.tensor([[-0.2, 0.05]]), atol=1e-7)
    assert expl.details["order"][0].tolist() == [1, 0]


def _preset(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(SimpleNamespace(preset=name, options={}, factory=None), (3, 32, 32), 10)
    remember_shape(model, (3, 32, 32))
    for m in model.modules():  # batch norms with non-trivial statistics, so biases matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("preset", ["csci611", "resnet8"])
def test_contributions_sum_to_the_first_order_share_within_float32_rounding(preset):
    model = _preset(preset)
    x = torch.rand(3, 3, 32, 32)
    expl = Concepts(model)
    c = expl.attribute(x, target=[0, 4, 9])
    layer = expl.details["layer"]
    assert layer == {"csci611": "relu3", "resnet8": "layer3.0.relu2"}[preset]
    # the first-order share, computed independently: sum over every element of act * dlogit/dact
    acts = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        logits = model.eval()(x)
    finally:
        h.remove()
    (g,) = torch.autograd.grad(logits[[0, 1, 2], [0, 4, 9]].sum(), acts["a"])
    share = (acts["a"] * g).flatten(1).sum(1).detach()
    scale = (acts["a"] * g).abs().flatten(1).sum(1).detach()
    # float32 rounding of a sum of n terms: n * eps * sum |terms| bounds it; we ask for far less
    assert torch.all((c.sum(1) - share).abs() <= 1e-5 * scale)
    assert torch.allclose(expl.details["total"], c.sum(1), rtol=1e-6, atol=1e-6 * float(scale.max()))
    # with biases above the layer the share is not the logit; the remainder says by how much
    assert torch.allclose(expl.details["logit"] - expl.details["total"], expl.details["remainder"])


def test_lower_layer_contributions_make_up_the_concept():
    """conv1 -> relu -> conv2 (no biases) -> relu -> mean -> linear: homogeneous between the two
    layers, so the lower filters' contributions to a concept add up to that concept's."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2, bias=False),
    )
    remember_shape(model, (1, 6, 6))
    assert lower_layer(model, "3") == "1"
    x = torch.rand(2, 1, 6, 6)
    expl = Concepts(model, "3")
    c = expl.attribute(x, [1, 0])
    order = expl.details["order"][:, :2]
    low = expl.lower(x, [1, 0], order)
    assert expl.details["lower_layer"] == "1" and low.shape == (2, 2, 3)
    for n in range(2):
        for k in range(2):
            assert torch.allclose(low[n, k].sum(), c[n, order[n, k]], atol=1e-5)


def test_lower_layer_of_presets():
    assert lower_layer(_preset("csci611"), "relu3") == "relu2"
    assert lower_layer(_preset("resnet8"), "layer3.0.relu2") == "layer3.0.relu1"
    assert lower_layer(_preset("resnet8"), "layer3.0") == "layer2"


def test_borrows_the_model():
    model = _preset("csci611").train()
    x = torch.rand(2, 3, 32, 32)
    before = x.clone()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    Concepts(model).attribute(x)
    assert model.training and hook_count(model) == 0 and torch.equal(x, before)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with pytest.raises(ExplainError, match="concept channel 999 is out of range"):
        Concepts(model).lower(x, None, [[999], [0]])
    with pytest.raises(ExplainError, match="one per image"):
        Concepts(model).lower(x, None, [[1]])
    assert hook_count(model) == 0 and model.training


@pytest.mark.slow  # the whole path on a trained run: training, topk, concepts, atlas and the report
def test_explain_run_writes_concepts_with_patches(tmp_path):
    from convlens.explain import explain_run
    from convlens.run import Layout
    from convlens.train import train

    torch.set_num_threads(1)
    path = tmp_path / "run"
    train(tiny_config(**{"train.threads": 1}), path, echo=lambda s: None)
    said = []
    doc = explain_run(
        path, "concepts", images=[0, 1], options={"top": 3, "patches": 2, "lower": True}, echo=said.append
    )
    assert doc["patches_from"]["layer"]["computed_now"] is True  # no topk in the run: computed
    assert any("computing it" in s for s in said)
    img = doc["images"][0]
    assert len(img["concepts"]) == 3 and len(img["lower"]) == 3
    arrays = Layout(path).artifact("concepts").npz
    import numpy as np

    with np.load(arrays) as z:
        assert np.allclose(z["contributions"].sum(1), z["total"], atol=1e-5)
    for f in doc["figures"]:
        assert (path / f["path"]).is_file()
    assert json.loads(Layout(path).artifact("concepts").json.read_text())["params"]["layer"] == doc["params"]["layer"]
    with pytest.raises(ExplainError, match="--top 0 must be 1 or more"):
        explain_run(path, "concepts", options={"top": 0}, echo=lambda s: None)
    with pytest.raises(ExplainError, match="leave out --filters"):
        explain_run(path, "concepts", layer=doc["params"]["layer"], filters=[0], echo=lambda s: None)
    # a notebook shows one line per image above the first figure
    assert doc.lines()[0].startswith(f"#{img['index']} ") and f"f{img['concepts'][0]['filter']} " in doc.lines()[0]
    assert "<img" in doc._repr_html_() and "sum " in doc._repr_html_()
    # a second run finds the topk it computed
    doc2 = explain_run(path, "concepts", images=[0], echo=lambda s: None)
    assert doc2["patches_from"]["computed_now"] is False
    # the class atlas of the same layer reads the same patches and draws them
    from convlens.analyses import analyze

    atlas = analyze(path, only=["atlas"], echo=lambda s: None)["atlas"]
    (layer,) = atlas["layers"]
    assert layer == doc["params"]["layer"] and atlas["layers"][layer]["patches_from"]["computed_now"] is False
    assert [f["path"].rsplit("/", 1)[1] for f in atlas["figures"]] == [f"{layer}_matrix.png", f"{layer}.png"]
    assert all((path / f["path"]).is_file() for f in atlas["figures"])
    # and the report shows all three with their tables
    from convlens.report import build_report

    page = build_report(path).read_text()
    assert "Concepts" in page and "Class atlas" in page and "The filters that carry each class" in page


def test_concept_figure_shows_each_map_beside_its_patches_without_overlaps():
    import numpy as np

    from convlens import plots
    from convlens.explain.concept_outputs import concept_rows

    rng = np.random.default_rng(0)
    image, maps = rng.random((3, 8, 8)), rng.normal(size=(3, 8, 8))
    labels = ["f4 +1.2 (40%)", "f0 +0.5", "f7 -0.3"]
    patches = [[rng.random((3, 3, 3))] * 2, [rng.random((3, 3, 3))], []]  # fewer patches: blank tiles
    tiles, layouts, lim = concept_rows(image, maps, labels, patches, 2)
    assert lim == float(np.abs(maps).max()) and len(tiles) == 3 * (1 + 2)
    assert layouts[::3] == ["hwc"] * 3 and tiles[0].shape == (8, 8, 3)
    assert all(np.all(t == 1) for t in (tiles[5], tiles[7], tiles[8]))  # the missing patches stay blank
    layout = plots.mosaic_boxes(tiles, layout=layouts, cols=3, row_labels=labels, suptitle="t", tile_inches=0.7)
    assert plots.overlaps(layout) == []
    assert [b.text for b in layout if b.kind == "text" and b.text in labels] == labels
    # three rows of three tiles, each centred in its cell: the map, then its two patches
    shown = [b for b in layout if b.kind == "tile"]
    rows = [shown[3 * r : 3 * r + 3] for r in range(3)]
    assert len(shown) == 9 and all(a.right < b.left for row in rows for a, b in zip(row, row[1:]))
    assert all(max(b.bottom for b in up) < min(b.top for b in down) for up, down in zip(rows, rows[1:]))
