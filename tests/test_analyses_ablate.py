"""ablate: silencing is complete and exactly undone; the batched ranking equals one-by-one silencing."""

import pytest
import torch
from analyses_models import fit_head, one_thread, random_net, random_split, subject  # noqa: F401
from torch import nn

from convlens.analyses import Ablate, AnalysisError, inference, silenced
from convlens.analyses.ablate import parse_filters, rank_layer, silent_value
from convlens.errors import LayerError
from convlens.trace import Trace, hook_count


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_silenced_channel_is_zero_after_the_batch_norm_and_weights_come_back_exactly():
    model, split = random_net(), random_split(20)
    x = split.images.float() / 255
    before, params = snapshot(model), dict(model.named_parameters())
    with torch.no_grad(), silenced(model, {"conv1": [1, 3], "conv2": [0]}):
        with Trace(model, "bn1") as t1, Trace(model, "bn2") as t2:
            model(x)
        assert (t1.output[:, [1, 3]] == 0).all() and (t1.output[:, [0, 2]] != 0).any()
        assert (t2.output[:, 0] == 0).all()
    assert same(before, snapshot(model))
    assert all(p is params[n] for n, p in model.named_parameters())  # the same Parameter objects


@pytest.mark.parametrize("mode,expected", [("channel", 0.0), ("weights", 2 * (0.5 - 0.1) / 0.4 + 0.3)])
def test_both_modes_against_a_hand_computation(mode, expected):
    # conv1 filter 1 has bias 0.5; bn1 channel 1: running mean 0.1, std 0.4, weight 2, bias 0.3. Zeroing
    # the conv weights leaves 0.5 everywhere, which the batch norm maps to 2 * (0.5 - 0.1) / 0.4 + 0.3
    # = 2.3; silencing the channel leaves 0
    model, split = random_net(), random_split(6)
    with torch.no_grad():
        model.conv1.bias[1], model.bn1.running_mean[1] = 0.5, 0.1
        model.bn1.running_var[1] = 0.4**2 - model.bn1.eps
        model.bn1.weight[1], model.bn1.bias[1] = 2.0, 0.3
    before = snapshot(model)
    with torch.no_grad(), silenced(model, {"conv1": [1]}, mode):
        assert float(model.conv1.weight[1].abs().sum()) == 0.0
        assert float(model.conv1.bias[1]) == (0.5 if mode == "weights" else 0.0)
        assert float(model.bn1.weight[1]) == (2.0 if mode == "weights" else 0.0)
        with Trace(model, "bn1") as t:
            model(split.images.float() / 255)
        assert torch.allclose(t.output[:, 1], torch.full_like(t.output[:, 1], expected), atol=1e-5)
        assert (t.output[:, 0] != t.output[0, 0, 0, 0]).any()  # the other channels still see the image
    assert same(before, snapshot(model))
    assert float(silent_value(model, "conv1", mode)[1]) == pytest.approx(expected, abs=1e-5)


def test_set_mode_names_its_mode_in_the_json_and_every_caption(tmp_path):
    model, split = random_net(seed=5), random_split(24, seed=2)
    fit_head(model, split)
    for mode in ("weights", "channel"):
        out = Ablate(filters="conv2:0,1", rank=False, mode=mode)(subject(model, split))
        assert out["mode"] == mode
        with torch.no_grad(), silenced(model, {"conv2": [0, 1]}, mode):
            pa = model(split.images.float() / 255).argmax(1)
        assert out["set"]["after"]["accuracy"] == pytest.approx(float((pa == split.labels).double().mean()))
    with pytest.raises(AnalysisError, match="mode='both' is not allowed; allowed: channel, weights"):
        Ablate(filters="conv2:0", rank=False, mode="both")
    out = Ablate(top=1, mode="weights")(subject(model, split, root=tmp_path))
    assert out["rank"]["conv2"]["mode"] == "weights"
    captions = [f["caption"] for f in out["figures"]]
    assert captions and all("conv weights zeroed" in c for c in captions)
    assert all("weights" in line for line in Ablate(mode="weights").lines(out))


def test_silenced_restores_after_an_exception():
    model = random_net()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with silenced(model, {"conv2": [2]}):
            assert float(model.conv2.weight[2].detach().abs().sum()) == 0.0
            raise RuntimeError("boom")
    assert same(before, snapshot(model))


def test_bad_filters_name_the_layer_and_its_channel_count():
    model = random_net()
    with pytest.raises(LayerError, match=r"filter 9 is out of range for layer 'conv1', which has 4 channels"):
        with silenced(model, {"conv1": [9]}):
            pass
    with pytest.raises(LayerError, match="conv layers; 'bn1' is a BatchNorm2d. Conv layers: conv1, conv2"):
        Ablate(filters="bn1:0", rank=False)(subject(model, random_split(8)))
    with pytest.raises(LayerError, match="no layer 'conv9'.*Layers: input, conv1"):
        Ablate(filters={"conv9": [0]}, rank=False)(subject(model, random_split(8)))


def test_parse_filters():
    assert parse_filters("conv1:0,3-5 conv2:1;conv1:3") == {"conv1": [0, 3, 4, 5], "conv2": [1]}
    for bad in ("conv1", "conv1:a", "conv1:"):
        with pytest.raises(AnalysisError, match="LAYER:I,J|not a filter index"):
            parse_filters(bad)


class Count(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize(
    "layer,head,groups,method",
    [
        ("conv1", "globalpool", 1, "effects added at conv2"),  # relu1 and pool1 act per channel
        ("conv1", "globalpool", 2, "rest of the network per filter"),
        ("conv2", "globalpool", 1, "effects added at fc1"),
        ("conv2", "flatten", 1, "effects added at fc1"),
    ],
)
@pytest.mark.parametrize("mode", ["channel", "weights"])
def test_batched_ranking_equals_silencing_each_filter_alone(layer, head, groups, method, mode):
    model, split = random_net(seed=3, head=head, groups=groups), random_split(40, seed=1)
    fit_head(model, split)
    counter = Count()
    model.input = nn.Sequential(counter, model.input)
    s = subject(model, split, batch_size=16)
    with inference(model):
        r = rank_layer(s, layer, mode)
        assert (
            counter.calls == 3 and r["mode"] == mode
        )  # the layers before the silenced one ran once per batch, not per filter
        labels = split.labels
        x = split.images.float() / 255
        base = (model(x).argmax(1) == labels).double().mean()
        changed = 0
        assert r["baseline"] == pytest.approx(float(base))
        for f in range(model.get_submodule(layer).out_channels):
            with silenced(model, {layer: [f]}, mode):
                pred = model(x).argmax(1)
            assert r["accuracy"][f] == pytest.approx(float((pred == labels).double().mean()))
            changed += int((pred != model(x).argmax(1)).sum())
            for c in range(4):
                acc_c = float((pred[labels == c] == c).double().mean())
                base_c = float((model(x[labels == c]).argmax(1) == c).double().mean())
                assert r["per_class_drop"][f][c] == pytest.approx(base_c - acc_c)
    assert changed > 0  # silencing filters does change predictions of this model: the comparison means something
    assert r["silenced_at"] == {"conv1": "bn1", "conv2": "bn2"}[layer] and r["method"] == method
    assert r["order"] == sorted(range(len(r["drop"])), key=lambda f: (-r["drop"][f], f))


def test_set_mode_before_after_and_changed_images():
    model, split = random_net(seed=5), random_split(48, seed=2)
    fit_head(model, split)
    out = Ablate(filters="conv2:0,1,2", rank=False)(subject(model, split, batch_size=10))
    s = out["set"]
    x, labels = split.images.float() / 255, split.labels
    with torch.no_grad():
        pb = model(x).argmax(1)
        with silenced(model, {"conv2": [0, 1, 2]}):
            pa = model(x).argmax(1)
    assert s["filters"] == {"conv2": [0, 1, 2]} and s["chosen_by"] == "given"
    assert s["before"]["accuracy"] == pytest.approx(float((pb == labels).double().mean()))
    assert s["after"]["accuracy"] == pytest.approx(float((pa == labels).double().mean()))
    assert (
        s["diff"]["confusion"]
        == (torch.tensor(s["after"]["confusion"]) - torch.tensor(s["before"]["confusion"])).tolist()
    )
    broken = ((pb == labels) & (pa != labels)).nonzero().flatten().tolist()
    fixed = ((pb != labels) & (pa == labels)).nonzero().flatten().tolist()
    assert s["changed"]["broken"] == broken and s["changed"]["fixed"] == fixed
    assert len(broken) + len(fixed) > 0  # the three filters matter for this model
    assert out["rank"] == {}


def test_default_silences_the_top_ranked_filters():
    model, split = random_net(seed=5), random_split(48, seed=2)
    fit_head(model, split)
    out = Ablate(top=2)(subject(model, split))
    r = out["rank"]["conv2"]  # the last conv layer by default
    assert out["set"]["filters"] == {"conv2": sorted(r["order"][:2])}
    assert "carrying most accuracy" in out["set"]["chosen_by"]
    assert hook_count(model) == 0


@pytest.mark.parametrize("mode", ["channel", "weights"])
def test_ranking_without_a_flat_sequence_reuses_the_traced_graph(mode):
    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, x):
            return self.net(x)

    model, split = random_net(seed=3), random_split(24)
    fit_head(model, split)
    with inference(model):
        wrapped = rank_layer(subject(Wrapped(model), split), "net.conv2", mode)
        flat = rank_layer(subject(model, split), "conv2", mode)
    assert wrapped["accuracy"] == pytest.approx(flat["accuracy"]) and wrapped["silenced_at"] == "net.bn2"
    assert wrapped["method"].startswith("graph reuse") and len(set(flat["accuracy"])) > 1
