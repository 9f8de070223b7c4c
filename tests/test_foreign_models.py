"""Every analysis and method on networks convlens did not build (``foreign_models``), each compared
with a plain hook loop that follows the data flow by tensor identity."""

import pytest
import torch
from analyses_models import one_thread  # noqa: F401  (fixture)
from foreign_models import CLASSES, MODELS, SHAPE, airbench, reversed_resnet, split
from torch import nn

from convlens.analyses import Ablate, ClassNorms, Errors, FeatureMaps, Filters, Stats, Subject, TopK
from convlens.analyses.ablate import rank_layer, silenced
from convlens.explain.gradcam import GradCAM, default_layer
from convlens.models.summary import summarize, totals
from convlens.trace import conv_layers, hook_count


def _subject(model, n=16):
    return Subject(model, split(n), list(CLASSES), figures=False, progress=False)


def _images(n=16):
    return split(n).images.float() / 255


def _calls(model, x):
    """Every call of every module: (name, input tensor, output tensor), in call order."""
    calls = []
    hooks = [
        m.register_forward_hook(lambda _m, i, o, name=name: calls.append((name, i[0], o)))
        for name, m in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _after(calls, tensor):
    """The call that took ``tensor`` as its input (the data flow, by identity)."""
    return next(c for c in calls if c[1] is tensor)


def _airbench_block(calls, conv):
    """conv -> pool -> norm -> activ, followed tensor by tensor: (pre, post) outputs."""
    out = next(c[2] for c in calls if c[0] == conv)
    pool = _after(calls, out)
    norm = _after(calls, pool[2]) if isinstance(pool[2], torch.Tensor) and "pool" in pool[0] else pool
    act = _after(calls, norm[2])
    return norm[2], act[2], act[0]


CONV2 = "layers.1.conv2"


def test_a_module_called_twice_is_read_at_the_call_the_data_flow_names():
    model = airbench()
    calls = _calls(model, _images())
    pre, post, act = _airbench_block(calls, CONV2)
    first = next(c[2] for c in calls if c[0] == act)
    assert act == "layers.1.activ" and not torch.equal(first.mean((0, 2, 3)), post.mean((0, 2, 3)))
    s = Stats(layers=[CONV2])(_subject(model))["layers"][CONV2]
    assert s["measured_at"] == {"pre": "layers.1.norm2", "post": "layers.1.activ@2"}
    torch.testing.assert_close(
        torch.tensor(s["mean"], dtype=torch.float64), pre.mean((0, 2, 3)).double(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        torch.tensor(s["post_mean"], dtype=torch.float64), post.mean((0, 2, 3)).double(), rtol=1e-5, atol=1e-6
    )
    active = (post > 0).double().mean((0, 2, 3))
    torch.testing.assert_close(torch.tensor(s["active_fraction"], dtype=torch.float64), active)
    # classnorms at the activation: the second call's maps
    c = ClassNorms(layers=[CONV2], at="act")(_subject(model))["layers"][CONV2]
    norms = post.flatten(2).norm(dim=2) / post.shape[2]
    labels = split().labels
    means = torch.stack([norms[labels == k].mean(0) for k in range(4)], 1).double()
    torch.testing.assert_close(torch.tensor(c["class_means"], dtype=torch.float64), means, rtol=1e-5, atol=1e-6)
    # topk at the activation: the same sets, in the same order, and the second call's field
    t = TopK(layers=[CONV2], at="act", k=4)(_subject(model))["layers"][CONV2]
    assert t["measured_at"] == "layers.1.activ@2" and t["receptive_field"]["size"] == 23
    best = post.amax((2, 3)).t().argsort(dim=1, descending=True, stable=True)[:, :4]
    assert [f["positions"] for f in t["filters"]] == best.tolist()
    # featuremaps of image 0: the same two tensors
    fm = FeatureMaps(layers=[CONV2], images=[0])(_subject(model))["layers"][CONV2]
    assert (fm["pre"], fm["post"]) == ("layers.1.norm2", "layers.1.activ@2")
    torch.testing.assert_close(torch.tensor(fm["maps"][0]["post_mean"]), post[0].mean((1, 2)))
    torch.testing.assert_close(torch.tensor(fm["maps"][0]["pre_mean"]), pre[0].mean((1, 2)))


def test_gradcam_reads_the_default_layers_call():
    model = airbench()
    assert default_layer(model, SHAPE) == "layers.2.activ@2"
    x = _images(4)
    cam = GradCAM(model, "layers.2.activ@2", upsample=False)
    maps = cam.attribute(x, [0, 1, 2, 3])
    # by hand: the output of the activation's second call in the last block
    seen = []

    def keep(_m, _i, out):
        seen.append(out)

    h = model.layers[2].activ.register_forward_hook(keep)
    try:
        xg = x.clone().requires_grad_(True)
        logits = model(xg)
    finally:
        h.remove()
    act = seen[1]
    (g,) = torch.autograd.grad(logits[torch.arange(4), torch.tensor([0, 1, 2, 3])].sum(), act)
    want = torch.relu((g.mean((2, 3), keepdim=True) * act).sum(1)).detach()
    torch.testing.assert_close(maps, want)
    assert hook_count(model) == 0


def _zeroed(model, conv, norm, f):
    """conv and batch-norm weights of filter ``f`` zeroed by hand, on a copy."""
    import copy

    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    with torch.no_grad():
        mods[conv].weight[f] = 0
        for t in (mods[norm].weight, mods[norm].bias):
            t[f] = 0
    return m


def test_channel_ablation_with_a_pool_between_conv_and_norm_silences_the_norm_too():
    model = airbench()
    conv, norm = "layers.0.conv1", "layers.0.norm1"
    x = _images()
    with silenced(model, {conv: [1]}, "channel"), torch.no_grad():
        out = [c[2] for c in _calls(model, x) if c[0] == norm][0]
        logits = model(x)
    assert float(out[:, 1].abs().max()) == 0.0
    with torch.no_grad():
        want = _zeroed(model, conv, norm, 1)(x)
    torch.testing.assert_close(logits, want)
    r = rank_layer(_subject(model), conv, "channel")
    assert r["silenced_at"] == norm
    hits = (want.argmax(1) == split().labels).double().mean()
    assert r["accuracy"][1] == pytest.approx(float(hits))


def test_a_shared_conv_is_ranked_as_the_set_silences_it():
    model = reversed_resnet()
    x, labels = _images(64), split(64).labels
    with torch.no_grad():
        base = model(x).argmax(1)
    r = rank_layer(_subject(model, 64), "block1.conv", "channel")
    for f in range(4):
        with silenced(model, {"block1.conv": [f]}, "channel"), torch.no_grad():
            pred = model(x).argmax(1)
        assert r["accuracy"][f] == pytest.approx(float((pred == labels).double().mean()))
        assert r["changed"][f] == int((pred != base).sum())


def test_default_ablation_skips_dead_filters():
    model = airbench()
    layer, norm = "layers.2.conv2", "layers.2.norm2"
    mods = dict(model.named_modules())
    with torch.no_grad():
        for f in (0, 1):
            mods[layer].weight[f] = 0
            mods[norm].weight[f] = 0
            mods[norm].bias[f] = 0
    result = Ablate(layers=[layer], top=3)(_subject(model))
    r = result["rank"][layer]
    assert r["changed"][0] == r["changed"][1] == 0
    chosen = result["set"]["filters"][layer]
    assert 0 not in chosen and 1 not in chosen
    assert all(r["changed"][f] > 0 for f in chosen)
    assert "dead filters skipped" in result["set"]["chosen_by"]


def _macs_by_hand(model):
    total = 0

    def count(m, i, o):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += o[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *SHAPE))
    finally:
        for h in hooks:
            h.remove()
    return total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_macs_count_every_call_of_every_nested_layer(name):
    model = MODELS[name]()
    assert totals(summarize(model, SHAPE))["macs"] == _macs_by_hand(model)
    if name == "airbench":  # nested blocks as the rows of a sequential model
        seq = nn.Sequential(model.whiten, model.act, model.layers)
        assert totals(summarize(seq, SHAPE))["macs"] == _macs_by_hand(seq)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_analysis_runs_on_a_foreign_model(name):
    model = MODELS[name]()
    sub = _subject(model, n=8)
    convs = conv_layers(model, SHAPE)
    for analysis in (Stats(), ClassNorms(), TopK(k=2), FeatureMaps(images=[0]), Filters(), Errors()):
        result = analysis(sub)
        assert result is not None
    t = TopK(k=2, layers=convs)(sub)
    for layer, info in t["layers"].items():
        assert info["receptive_field"] is not None, layer
        assert all(f["windows"] for f in info["filters"]), layer
    assert hook_count(model) == 0


def test_a_call_that_never_happens_is_an_error_naming_the_calls():
    from convlens.errors import LayerError
    from convlens.models.graph import remember_shape
    from convlens.trace import Trace

    model = airbench()
    remember_shape(model, SHAPE)
    with pytest.raises(LayerError, match="its calls: layers.0.activ, layers.0.activ@2"):
        Trace(model, "layers.0.activ@3")
    with Trace(model, "layers.0.activ@2") as t, torch.no_grad():
        model(_images(2))
    assert t.output.shape[2:] == (15, 15) and hook_count(model) == 0
