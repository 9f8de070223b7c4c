"""Relevance-ranked topk and the class atlas on a hand-set model with known contributions.

dot_net: conv1 f0 copies the image, conv2 f0 copies conv1 f0's pooled map, conv2 f1 is never
active; a global max and a class layer set here: logit = W[:, 0] * (brightest pixel value), so
filter f0 of either conv contributes W[c, 0] * v / 255 to class c and f1 contributes nothing.
"""

import pytest
import torch
from analyses_models import VALUES, dot_net, dot_split, one_thread, subject  # noqa: F401

from convlens.analyses import Atlas, TopK, analyze
from convlens.errors import ConvlensError

W = [[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]


def _net():
    model = dot_net()
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor(W))
        model.fc1.bias.zero_()
    return model


def test_topk_by_contribution_ranks_by_the_class_score_share():
    split = dot_split()
    up = TopK(k=4, layers=["conv2"], score="contribution", target="a")(subject(_net(), split))
    down = TopK(k=4, layers=["conv2"], score="contribution", target="1")(subject(_net(), split, batch_size=5))
    f0 = up["layers"]["conv2"]["filters"][0]
    brightest = sorted(range(len(VALUES)), key=lambda n: -VALUES[n])
    assert f0["positions"] == brightest[:4]
    assert f0["scores"] == pytest.approx([2 * VALUES[n] / 255 for n in brightest[:4]], rel=1e-6)
    # class b's weight is negative: the dimmest images lower its score least
    g0 = down["layers"]["conv2"]["filters"][0]
    assert g0["positions"] == brightest[::-1][:4]
    assert g0["scores"] == pytest.approx([-VALUES[n] / 255 for n in brightest[::-1][:4]], rel=1e-6)
    assert up["layers"]["conv2"]["filters"][1]["scores"] == [0.0] * 4  # never active: no share
    assert up["target"] == {"index": 0, "name": "a"} and down["target"] == {"index": 1, "name": "b"}
    # activation-ranked topk is unchanged and keyed apart
    assert TopK(k=4, layers=["conv2"]).key() == "conv2"
    assert TopK(k=4, layers=["conv2"], score="contribution", target="a").key() == "conv2+contribution_a"


def test_topk_contribution_needs_a_known_target():
    with pytest.raises(ConvlensError, match="--target CLASS"):
        TopK(score="contribution")
    with pytest.raises(ConvlensError, match="--target"):
        TopK(target="a")
    with pytest.raises(ConvlensError, match="not a class of this run; allowed: a, b, c"):
        TopK(score="contribution", target="zebra")(subject(_net(), dot_split()))


def test_analyze_runs_contribution_topk_in_its_own_pass_beside_the_shared_one():
    out = analyze(
        subject(_net(), dot_split(), batch_size=5), only=["stats", "topk"], k=3, score="contribution", target="a"
    )
    assert (
        out["topk"]["layers"]["conv1"]["filters"][0]["positions"]
        == sorted(range(len(VALUES)), key=lambda n: -VALUES[n])[:3]
    )
    assert "conv1" in out["stats"]["layers"]


def test_atlas_means_over_correct_images_only():
    out = Atlas(top=2)(subject(_net(), dot_split(), batch_size=5))
    assert list(out["layers"]) == ["relu2"]
    relu2 = out["layers"]["relu2"]
    a, b, c = relu2["classes"]
    # every image is predicted a (logit 2v > 0 > -v): only class a's images (0, 3, 6, 9) are correct
    assert (a["correct"], b["correct"], c["correct"]) == (4, 0, 0)
    mean = 2 * sum(VALUES[n] for n in (0, 3, 6, 9)) / 4 / 255
    assert a["filters"][0]["filter"] == 0 and a["filters"][0]["mean_contribution"] == pytest.approx(mean, rel=1e-6)
    assert a["filters"][1] == {"filter": 1, "mean_contribution": 0.0, "share": 0.0}
    assert a["filters"][0]["share"] == pytest.approx(1.0, rel=1e-6)  # homogeneous head: f0 is all of it
    assert b["filters"] == [] and b["mean_total"] is None
    assert relu2["mean_contribution"][1] == [0.0, 0.0]


def test_atlas_of_several_layers_one_pass_each():
    out = Atlas(top=1, layers=["conv1", "relu2"])(subject(_net(), dot_split(), batch_size=5))
    assert list(out["layers"]) == ["conv1", "relu2"]
    # conv1 f0 copies the image and everything above is homogeneous: the same share as relu2 f0
    one, two = (out["layers"][n]["classes"][0]["filters"][0] for n in ("conv1", "relu2"))
    assert one["filter"] == two["filter"] == 0
    assert one["mean_contribution"] == pytest.approx(two["mean_contribution"], rel=1e-5)
