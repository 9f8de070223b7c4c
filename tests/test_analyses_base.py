"""The shared interface: the run-folder contract, the caller's model left as it was, no hook left
behind, bad input explained; featuremaps, filters and errors by hand."""

import json
import re

import numpy as np
import pytest
import torch
from analyses_models import CLASSES, VALUES, dot_net, dot_split, one_thread, random_net, random_split, subject  # noqa: F401

from convlens.analyses import ANALYSES, AnalysisError, Errors, FeatureMaps, Filters, TopK, analyze
from convlens.analyses.perfilter import draw_pending
from convlens.errors import LayerError
from convlens.models import build
from convlens.trace import hook_count


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


SMALL = {
    "topk": {"k": 3},
    "errors": {"examples": 4, "mistakes": 4},
    "ablate": {"changed": 4},
    "atlas": {"patches": 0},  # the patches need a topk of the layer: tests/test_explain_concepts.py
    "faithfulness": {"count": 2, "steps": 4, "methods": ["saliency", "gradcam"]},
}  # fewer tiles to draw, fewer maps to make


@pytest.mark.parametrize("name", list(ANALYSES))
def test_contract_and_the_callers_model_is_left_as_it_was(name, tmp_path):
    model, split = random_net(), random_split(24)
    model.train()
    model.bn2.eval()  # a mixed state must come back as it was, not as all-train
    modes = [m.training for m in model.modules()]
    before, images, labels = state(model), split.images.clone(), split.labels.clone()
    out = ANALYSES[name](**SMALL.get(name, {}))(subject(model, split, root=tmp_path, batch_size=7))

    assert [m.training for m in model.modules()] == modes
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0
    assert torch.equal(split.images, images) and torch.equal(split.labels, labels)

    data = json.loads((tmp_path / "analysis" / f"{name}.json").read_text())
    assert data["analysis"] == name and data["split"] == "test" and isinstance(data["params"], dict)
    assert data["n_images"] == 24 and data == json.loads(json.dumps(out))
    assert data["figures"], "every analysis draws something"
    for fig in data["figures"]:  # listed per-filter figures are drawn when first needed, the others now
        assert (tmp_path / fig["path"]).is_file() != bool(fig.get("pending")) and fig["caption"]
        assert not fig.get("pending") or "filter" in fig
    assert {p.as_posix() for p in draw_pending(tmp_path)} == {
        (tmp_path / f["path"]).as_posix() for f in data["figures"] if f.get("pending")
    }
    for fig in data["figures"]:
        assert (tmp_path / fig["path"]).is_file()
        assert fig["path"].startswith(f"analysis/{name}/") and fig["path"].endswith(".png")
        if "filter" in fig:
            assert re.fullmatch(rf"analysis/{name}/{fig['layer']}/f{fig['filter']}(_[a-z]+)?\.png", fig["path"])
    pngs = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "analysis" / name).rglob("*.png")}
    assert pngs == {f["path"] for f in data["figures"]}  # nothing drawn that the JSON does not list
    if name in ("filters", "classnorms", "topk"):  # per-filter figures of every filter of the default layers
        for layer in ("conv1", "conv2"):
            n = getattr(model, layer).out_channels
            assert all(f"analysis/{name}/{layer}/f{i}.png" in pngs for i in range(n)), layer
    if name == "topk":
        assert "analysis/topk/conv2/f5_patches.png" in pngs
    if name == "filters":
        assert "analysis/filters/conv1_channels.png" in pngs  # an RGB first layer: per channel too


def test_rerun_replaces_the_figures(tmp_path):
    model, split = dot_net(), dot_split()
    TopK(k=2)(subject(model, split, root=tmp_path))
    old = tmp_path / "analysis" / "topk" / "conv1" / "f99.png"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"a figure of an earlier run")
    TopK(k=2)(subject(model, split, root=tmp_path))
    assert not old.exists() and not (tmp_path / "analysis" / "topk" / "conv1" / "f0.png").is_file()
    assert draw_pending(tmp_path) and (tmp_path / "analysis" / "topk" / "conv1" / "f0.png").is_file()
    out = TopK(k=2, layers=["conv2"])(subject(model, split, root=tmp_path))  # other layers: another artifact
    assert {f["layer"] for f in out["figures"]} == {"conv2"}
    assert all(f["path"].startswith("analysis/topk-conv2/") for f in out["figures"])
    assert (tmp_path / "analysis" / "topk" / "conv1" / "f0.png").is_file()


class Failing(TopK):
    def observe(self, probe, output, labels, positions):
        if positions[0] > 0:
            raise RuntimeError("boom in the middle of the pass")
        super().observe(probe, output, labels, positions)


def test_no_hook_survives_an_exception_and_modes_come_back():
    model, split = random_net(), random_split(20)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        Failing()(subject(model, split, batch_size=5))
    assert hook_count(model) == 0
    assert all(m.training for m in model.modules())


def test_unknown_layer_lists_the_layers():
    with pytest.raises(LayerError) as e:
        TopK(layers=["conv3"])(subject(dot_net(), dot_split()))
    assert "no layer 'conv3'" in str(e.value) and "Layers: input, conv1, relu1, pool1, conv2" in str(e.value)
    with pytest.raises(LayerError, match="no layer 'cnov1'. Did you mean conv1"):
        analyze(subject(dot_net(), dot_split()), ["stats"], layers=["cnov1"])


def test_conv_analyses_on_a_recurrent_model_say_which_apply(tmp_path):
    rnn = build([{"type": "gru", "hidden": 8}, {"type": "linear", "out": "classes"}], (1, 6, 6), 3).eval()
    s = subject(rnn, dot_split(), root=tmp_path)
    with pytest.raises(
        AnalysisError,
        match="topk does not apply: the model has no conv layers. Analyses that apply to this model: errors",
    ):
        TopK()(s)
    with pytest.raises(AnalysisError, match="Analyses that apply to this model: errors"):
        analyze(s, ["filters"])
    notes = []
    s.echo = notes.append
    results = analyze(s)
    assert list(results) == ["errors"] and (tmp_path / "analysis" / "errors.json").is_file()
    assert "topk: skipped (the model has no conv layers)" in notes


def test_options_are_checked_before_anything_runs():
    s = subject(dot_net(), dot_split())
    with pytest.raises(AnalysisError, match="k is an option of topk"):
        analyze(s, ["stats"], k=5)
    with pytest.raises(AnalysisError, match="unknown analysis 'tpok'; analyses: filters, featuremaps"):
        analyze(s, ["tpok"])
    with pytest.raises(AnalysisError, match="score='median' is not allowed; allowed: max, mean"):
        TopK(score="median")
    with pytest.raises(AnalysisError, match="with rank off, give the filters"):
        analyze(s, ["ablate"], rank=False)


def test_featuremaps_by_position_class_and_file(tmp_path):
    from PIL import Image

    img = np.zeros((12, 12), np.uint8)
    img[2:4, 8:10] = 255  # a bright square, read back at 6x6 as a bright pixel near (1, 4)
    Image.fromarray(img).save(tmp_path / "dot.png")
    out = FeatureMaps(images=[3], classes=["b"], file=str(tmp_path / "dot.png"), layers=["conv1", "conv2"])(
        subject(dot_net(), dot_split(), root=tmp_path)
    )
    imgs = out["images"]
    assert [i.get("position") for i in imgs] == [3, 1, None] and imgs[2]["file"].endswith("dot.png")
    assert imgs[0]["class"] == "a" and imgs[1]["class"] == "b"
    c1 = out["layers"]["conv1"]
    assert (c1["pre"], c1["post"], c1["channels"], c1["map_size"]) == ("conv1", "relu1", 2, [6, 6])
    assert c1["maps"][0]["pre_max"][0] == pytest.approx(VALUES[3] / 255)
    assert c1["maps"][0]["active_fraction"] == [pytest.approx(1 / 36), 0.0]
    assert c1["maps"][2]["pre_max"][0] > 0.5
    paths = {f["path"] for f in out["figures"]}
    folder = "analysis/featuremaps-conv1+conv2"  # keyed by the layers asked for
    assert f"{folder}/conv1/img3_pre.png" in paths and f"{folder}/conv2/file-dot_act.png" in paths
    with pytest.raises(AnalysisError, match="image 99 is out of range; the test split has 12 images"):
        FeatureMaps(images=[99])(subject(dot_net(), dot_split()))
    with pytest.raises(AnalysisError, match="unknown class 'z'; classes: a, b, c"):
        FeatureMaps(classes=["z"])(subject(dot_net(), dot_split()))


def test_filters_numbers():
    model = random_net()
    out = Filters(layers=["conv2"])(subject(model, random_split(4)))
    w = model.conv2.weight.detach().flatten(1)
    info = out["layers"]["conv2"]
    assert info["shape"] == [6, 4, 3, 3]
    assert info["l2"] == pytest.approx(w.norm(dim=1).tolist()) and info["max_abs"] == pytest.approx(
        float(w.abs().max())
    )
    with pytest.raises(LayerError, match="'relu1' is a ReLU"):
        Filters(layers=["relu1"])(subject(model, random_split(4)))


def test_errors_examples_and_most_confident_mistakes():
    model, split = random_net(seed=2), random_split(40)
    out = Errors(examples=8, mistakes=5)(subject(model, split, batch_size=9))
    with torch.no_grad():
        probs = model(split.images.float() / 255).softmax(1)
    conf, pred = probs.max(1)
    wrong = (pred != split.labels).nonzero().flatten().tolist()
    expected = sorted(wrong, key=lambda p: (-float(conf[p]), p))[:5]
    assert [m["position"] for m in out["mistakes"]] == expected
    assert all(not m["correct"] and m["predicted"] == "wxyz"[int(pred[m["position"]])] for m in out["mistakes"])
    assert [e["position"] for e in out["examples"]] == list(range(8))  # labels cycle 0-3: two of each class
    assert out["n_wrong"] == len(wrong) and out["accuracy"] == pytest.approx(1 - len(wrong) / 40)
    assert sum(p["count"] for p in out["confused_pairs"]) <= len(wrong)
    assert CLASSES  # the hand data's classes are unused here: random_split has four
