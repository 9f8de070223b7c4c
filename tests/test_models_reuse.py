"""Graph reuse: re-running only what an edited call changes equals the full forward pass, on
residual presets, foreign nets (a conv called twice, activations as functions) and flat nets;
ranking filters through it equals silencing each filter alone."""

import pytest
import torch
from foreign_models import CLASSES, MODELS, SHAPE, split
from torch import nn

from convlens.analyses import AnalysisError, Subject, silenced
from convlens.analyses.ablate import rank_layer, silence_points
from convlens.config import load_config
from convlens.models import build_model
from convlens.models.graph import remember_shape, trace_graph
from convlens.models.reuse import reuse_graph
from convlens.trace import TraceDict, call_name, conv_layers, split_call


@pytest.fixture(autouse=True)
def _one_thread():
    # many small batches: on a shared 2-core machine one thread avoids waiting at every op's barrier
    torch.set_num_threads(1)


def _calibrated(model: nn.Module) -> nn.Module:
    """Batch-norm statistics measured on noise images, then shifted: outputs stay in a range where
    the softmax is not saturated (so an edit or a patch changes the numbers), and reading the
    wrong point of a block changes them too."""
    g = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.rand(32, *SHAPE, generator=g))
        for m in norms:
            m.momentum = 0.1
            m.running_mean.add_(0.1 * torch.randn(m.num_features, generator=g))
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _preset(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    cfg = load_config({"model": {"preset": name, "options": options}})
    return _calibrated(build_model(cfg.model, SHAPE, 4))


class InPlace(nn.Module):
    """torchvision's habits: ``out += identity`` and ReLU(inplace=True) modules, one called twice."""

    def __init__(self, c: int = 4, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.relu(self.bn0(self.stem(x)))
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        out = self.relu(out)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _in_place() -> nn.Module:
    torch.manual_seed(0)
    return _calibrated(InPlace())


NETS = {
    "resnet8": lambda: _preset("resnet8", width=4),
    "resnet20": lambda: _preset("resnet20", width=4),
    "csci611": lambda: _preset("csci611", width=4),
    "fast": lambda: _preset("fast"),
    **{k: (lambda f=f: _calibrated(f())) for k, f in MODELS.items()},
    "in_place": _in_place,
}


def _calls(model: nn.Module, conv: str) -> list[str]:
    """Every call of a conv (one edit per call: a conv called twice is edited in both)."""
    runs = trace_graph(model, SHAPE).calls[conv]
    return [call_name(conv, k) for k in range(1, runs + 1)]


@pytest.mark.parametrize("net", sorted(NETS))
def test_replay_equals_the_full_forward_pass_with_the_same_edit(net):
    model = NETS[net]()
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(2))
    convs = conv_layers(model, SHAPE)
    for conv in [convs[len(convs) // 3], convs[-1]]:
        calls = _calls(model, conv)
        reuse = reuse_graph(model, calls)
        assert not isinstance(reuse, str), reuse
        with torch.no_grad():
            cut = reuse.cut(x)
            assert cut.batchable
            full = model(x)

            def edit(call, value, k=3):  # copy 0 unchanged, copy 1 channel 0 zeroed, copy 2 channel 1 doubled
                v = value.unflatten(0, (k, -1))
                v[1, :, 0] = 0
                v[2, :, 1] *= 2
                return value

            out = reuse.replay(cut, edit, copies=3).view(3, len(x), -1)
            torch.testing.assert_close(out[0], full, atol=1e-5, rtol=1e-5)
            for k, change in ((1, lambda o: o.index_fill(1, torch.tensor([0]), 0.0)), (2, None)):

                def on(o, _name, k=k, change=change):
                    if change is not None:
                        return change(o)
                    o = o.clone()
                    o[:, 1] *= 2
                    return o

                with TraceDict(model, calls, edit_output=on):
                    want = model(x)
                torch.testing.assert_close(out[k], want, atol=1e-5, rtol=1e-5)
                assert not torch.allclose(want, full)  # the edit matters: the comparison means something


def test_replay_re_runs_only_the_nodes_after_the_edit_and_keeps_the_shortcut():
    model = NETS["resnet8"]()
    reuse = reuse_graph(model, ["layer3.0.bn2"])
    replayed = {n.name for n in reuse.replayed}
    # the block's shortcut (a projection) is computed once, beside the edit: not replayed
    assert not any("shortcut" in n for n in replayed)
    assert any("shortcut" in str(n.target) for n in reuse.frontier)
    assert len(reuse.replayed) < len(list(reuse.graph.nodes)) // 4


def test_a_frontier_batch_size_replays_one_variant_at_a_time():
    class Sized(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 32 * 32, 2)

        def forward(self, x):
            n = x.size(0)  # read before the edit, used after it
            return self.fc(torch.relu(self.bn(self.conv(x))).view(n, -1))

    model = Sized().eval()
    reuse = reuse_graph(model, ["bn"])
    x = torch.rand(2, *SHAPE)
    cut = reuse.cut(x)
    assert not cut.batchable
    with pytest.raises(ValueError, match="one variant at a time"):
        reuse.replay(cut, lambda c, v: v, copies=2)
    with torch.no_grad():
        torch.testing.assert_close(reuse.replay(cut, lambda c, v: v), model(x))


def _subject(model, n):
    return Subject(model, split(n), list(CLASSES), figures=False, progress=False, batch_size=8)


@pytest.mark.parametrize(
    "net,conv",
    [("resnet8", "layer2.0.conv1"), ("resnet8", "conv1"), ("airbench", "whiten"), ("reversed_resnet", "block1.conv")],
)
@pytest.mark.parametrize("mode", ["channel", "weights"])
def test_ranking_through_the_reused_graph_equals_silencing_each_filter(net, conv, mode):
    model = NETS[net]()
    if net == "resnet8":
        conv = next(c for c in conv_layers(model, SHAPE) if c.endswith(conv))
    n = 24
    s = _subject(model, n)
    x, labels = split(n).images.float() / 255, split(n).labels
    r = rank_layer(s, conv, mode)
    assert r["method"].startswith("graph reuse")
    with torch.no_grad():
        base = model(x).argmax(1)
        assert r["baseline"] == pytest.approx(float((base == labels).double().mean()))
        for f in range(model.get_submodule(conv).out_channels):
            with silenced(model, {conv: [f]}, mode):
                pred = model(x).argmax(1)
            assert r["accuracy"][f] == pytest.approx(float((pred == labels).double().mean()))
            assert r["changed"][f] == int((pred != base).sum())
    assert any(r["changed"])  # silencing changes predictions: the comparison means something


def test_a_shared_conv_is_edited_in_every_call():
    model = NETS["reversed_resnet"]()
    remember_shape(model, SHAPE)
    points = silence_points(model, "block1.conv")
    # the first call's batch norm is the block's (zeroed with the filter); the second call feeds
    # another batch norm, so the conv call itself is edited there
    assert list(points) == ["block1.bn1", "block1.conv@2"]
    assert [split_call(p)[0] for p in points] == ["block1.bn1", "block1.conv"]


class ConvBnHead(nn.Module):
    """A conv, its batch norm and a linear head; subclasses write the ``forward`` under test."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)


def test_an_untraceable_model_is_ranked_by_full_passes_and_says_so():
    class Branchy(ConvBnHead):
        def forward(self, x):
            h = torch.relu(self.bn(self.conv(x)))
            if h.mean() > 10:  # control flow on a tensor value: torch.fx cannot trace it
                h = -h
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    model = Branchy().eval()
    assert "torch.fx cannot trace" in reuse_graph(model, ["bn"])
    r = rank_layer(_subject(model, 8), "conv", "channel")
    assert r["method"].startswith("full forward pass per filter") and "torch.fx cannot trace" in r["method"]
    x, labels = split(8).images.float() / 255, split(8).labels
    with torch.no_grad(), silenced(model, {"conv": [1]}):
        hits = (model(x).argmax(1) == labels).double().mean()
    assert r["accuracy"][1] == pytest.approx(float(hits))


class Writes(nn.Module):
    """An in-place op beside the edit that no later op reads by name (``s.mul_(2)``)."""

    def __init__(self, between: bool):
        super().__init__()
        self.between = between
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        s = self.stem(x)
        if not self.between:
            s.mul_(2)  # before every read after the edit
        out = self.bn(self.conv(s)) + s
        if self.between:
            s.mul_(2)  # between two reads after the edit
        return self.fc((out * s).mean((2, 3)))


@pytest.mark.parametrize("between", [False, True])
def test_in_place_writes_beside_the_edit_are_replayed_or_refused(between):
    torch.manual_seed(0)
    model = _calibrated(Writes(between))
    reuse = reuse_graph(model, ["bn"])
    if between:
        assert isinstance(reuse, str) and "writes in place" in reuse
        return
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        out = reuse.replay(reuse.cut(x), lambda c, v: v.index_fill(1, torch.tensor([1]), 0.0))
        with TraceDict(model, ["bn"], edit_output=lambda o, _: o.index_fill(1, torch.tensor([1]), 0.0)):
            want = model(x)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_the_ablate_analysis_ranks_a_resnet_through_the_reused_graph():
    from convlens.analyses import Ablate

    model = NETS["resnet8"]()
    out = Ablate(top=2)(_subject(model, 16))
    ((layer, r),) = out["rank"].items()
    assert r["method"].startswith("graph reuse") and list(out["set"]["filters"]) == [layer]
    assert any("graph reuse" in line for line in Ablate(top=2).lines(out))


def test_a_forward_that_fixes_its_batch_size_is_named():
    class Fixed(ConvBnHead):
        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))[:8]  # at most 8 rows

    torch.manual_seed(0)
    model = _calibrated(Fixed())
    with pytest.raises(AnalysisError, match="fixes its batch size"):
        rank_layer(_subject(model, 8), "conv", "channel")
