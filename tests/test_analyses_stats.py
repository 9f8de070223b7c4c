"""stats and classnorms: hand-computed numbers, dead filters, batch-size independence."""

import math

import pytest
import torch
from analyses_models import VALUES, dot_net, dot_split, one_thread, random_net, random_split, subject  # noqa: F401

from convlens.analyses import ClassNorms, Stats
from convlens.analyses.classnorms import selectivity

N = len(VALUES)


def test_stats_numbers_and_dead_filters():
    out = Stats()(subject(dot_net(), dot_split(), batch_size=5))
    c1, c2 = out["layers"]["conv1"], out["layers"]["conv2"]
    assert c1["measured_at"] == {"pre": "conv1", "post": "relu1"}
    x = torch.tensor(VALUES, dtype=torch.float64) / 255
    # conv1 f0 is the image: one lit pixel of 36 per image
    assert c1["mean"][0] == pytest.approx(float(x.sum()) / (N * 36))
    full = torch.zeros(N, 36, dtype=torch.float64)
    full[:, 0] = x
    assert c1["std"][0] == pytest.approx(float(full.std(correction=0)))
    assert c1["max"][0] == pytest.approx(1.0) and c1["min"][0] == 0.0
    assert c1["active_fraction"][0] == pytest.approx(1 / 36) and c1["images_active"][0] == 1.0
    # conv1 f1 is the negated image: never above 0 after the ReLU -> dead, though its weights are fine
    assert c1["active_fraction"][1] == 0.0 and c1["post_max"][1] == 0.0
    assert c1["dead"] == [1] and c1["dead_reasons"] == {"1": ["never active"]}
    # conv2 f1 has zero weights and bias -1: dead for both reasons
    assert c2["dead"] == [1] and c2["dead_reasons"] == {"1": ["never active", "weights near zero"]}
    assert c2["mean"][1] == -1.0 and c2["std"][1] == 0.0
    assert c2["thresholds"] == {"active": 0.0, "weight_relative": 1e-3, "weight_norm": pytest.approx(0.5e-3)}
    assert c1["weight_norm"] == [1.0, 1.0]


def test_stats_thresholds_are_options():
    out = Stats(active_threshold=0.5, weight_threshold=2.0, layers=["conv1"])(subject(dot_net(), dot_split()))
    c1 = out["layers"]["conv1"]
    lit = sum(v / 255 > 0.5 for v in VALUES)
    assert c1["active_fraction"][0] == pytest.approx(lit / (N * 36))
    assert c1["dead_reasons"] == {"0": ["weights near zero"], "1": ["never active", "weights near zero"]}


def test_stats_do_not_depend_on_the_batch_size():
    model, split = random_net(), random_split(45)
    a = Stats()(subject(model, split, batch_size=45))["layers"]
    for bs in (1, 7):
        b = Stats()(subject(model, split, batch_size=bs))["layers"]
        for layer in a:
            for key in (
                "mean",
                "std",
                "min",
                "max",
                "active_fraction",
                "images_active",
                "post_mean",
                "post_std",
                "post_max",
            ):
                assert b[layer][key] == pytest.approx(a[layer][key], rel=1e-6, abs=1e-6), (layer, key)
            assert b[layer]["dead"] == a[layer]["dead"]


def test_post_activation_mean_and_std_equal_a_plain_loop():
    from convlens.trace import Trace

    model, split = random_net(seed=2), random_split(23)
    out = Stats(layers=["conv1", "conv2"])(subject(model, split, batch_size=4))["layers"]
    x = split.images.float() / 255
    for layer, post in (("conv1", "relu1"), ("conv2", "relu2")):
        with torch.no_grad(), Trace(model, post) as t:
            model(x)
        a = t.output.double()
        for c in range(a.shape[1]):
            values = [float(v) for img in a[:, c] for v in img.flatten()]  # every image and position
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            assert out[layer]["measured_at"]["post"] == post
            assert out[layer]["post_mean"][c] == pytest.approx(mean, rel=1e-6, abs=1e-9)  # float32 sums per image
            assert out[layer]["post_std"][c] == pytest.approx(std, rel=1e-6, abs=1e-9)
        assert any(s > 0 for s in out[layer]["post_std"])


def test_class_norms_by_hand():
    x = torch.tensor(VALUES, dtype=torch.float64) / 255
    labels = torch.arange(N) % 3
    for norm, per_image in (("l1", x / 36), ("l2", x / 6)):
        out = ClassNorms(norm=norm, layers=["conv1"])(subject(dot_net(), dot_split(), batch_size=5))
        info = out["layers"]["conv1"]
        assert info["measured_at"] == "relu1"
        means = torch.stack([per_image[labels == c].mean() for c in range(3)])
        assert info["class_means"][0] == pytest.approx(means.tolist())
        assert info["variance"][0] == pytest.approx(float(means.var(correction=0)))
        assert info["cv"][0] == pytest.approx(float(means.std(correction=0) / means.mean()))
        top, rest = means.max(), (means.sum() - means.max()) / 2
        assert info["selectivity"][0] == pytest.approx(float((top - rest) / (top + rest)))
        assert info["preferred_class"][0] == "abc"[int(means.argmax())]
        # the negating filter is silent after its ReLU: no preference at all
        assert info["class_means"][1] == [0.0, 0.0, 0.0] and info["selectivity"][1] == 0.0 and info["cv"][1] == 0.0
        assert info["quiet"] == [1] and info["experts"] == [0]  # silent filters are not experts
        assert out["class_counts"] == [4, 4, 4]
        assert out["experts"][0] == {
            "layer": "conv1",
            "filter": 0,
            "selectivity": pytest.approx(info["selectivity"][0]),
            "class": info["preferred_class"][0],
            "cv": pytest.approx(info["cv"][0]),
        }


def test_selectivity_index():
    m = torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert selectivity(m).tolist() == pytest.approx([0.0, 1.0, (2 - 0.5) / 2.5, 0.0])


def test_class_norms_default_layers_and_absent_classes():
    split = dot_split().take(torch.tensor([0, 1, 3, 4]))  # no image of class "c"
    out = ClassNorms()(subject(dot_net(), split))
    assert list(out["layers"]) == ["conv1", "conv2"]  # first and last conv layer
    means = out["layers"]["conv1"]["class_means"][0]
    assert means[2] is None or math.isnan(means[2])
    assert out["layers"]["conv1"]["preferred_class"][0] in ("a", "b")


def test_class_norms_do_not_depend_on_the_batch_size():
    model, split = random_net(), random_split(45)
    a = ClassNorms(layers=["conv1", "conv2"])(subject(model, split, batch_size=45))["layers"]
    b = ClassNorms(layers=["conv1", "conv2"])(subject(model, split, batch_size=4))["layers"]
    for layer in a:
        for key in ("class_means", "variance", "selectivity"):
            assert torch.tensor(b[layer][key]) == pytest.approx(torch.tensor(a[layer][key]), rel=1e-6, abs=1e-9)
        assert b[layer]["preferred_class"] == a[layer]["preferred_class"]
