"""Layer order, data flow and receptive fields of any module graph, from one traced pass."""

import pytest
import torch
from handmade_resnet import make
from torch import nn

from convlens.analyses import ClassNorms, TopK
from convlens.analyses.base import Subject, block
from convlens.config import load_config
from convlens.data import Split
from convlens.errors import LayerError
from convlens.models import PRESETS, ReceptiveField, build_model, receptive_fields
from convlens.models.graph import measure_fields, trace_graph
from convlens.models.summary import analytic_receptive_fields, summarize, totals
from convlens.trace import TraceDict, conv_layers, hook_count

SHAPE = (1, 8, 8)


def _subject(model, n=12, shape=SHAPE):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    split = Split(images, torch.arange(n) % 3, torch.arange(n))
    return Subject(model, split, ["a", "b", "c"], figures=False)


def test_execution_order_not_declaration_order():
    model = make()
    convs = conv_layers(model, SHAPE)
    assert convs == ["stem", "body.0.conv1", "body.0.conv2", "body.1.proj", "body.1.conv1", "body.1.conv2"]
    graph = trace_graph(model, SHAPE)
    assert graph.calls["act"] == 2 and graph.order.count("act") == 1
    assert ("body.0", "relu") in graph.functions and ("body.1", "relu") in graph.functions
    assert block(_subject(model).model, "body.0.conv1").bn == "body.0.bn1"


def test_streaming_pass_reads_every_layer_of_a_shortcut_first_block():
    # declaration order ends with body.1.proj, which runs before body.1.conv1/conv2: a pass that
    # stopped after it dropped those two layers from topk without a word
    model = make()
    result = TopK(k=2)(_subject(model))
    assert list(result["layers"]) == conv_layers(model, SHAPE)
    for info in result["layers"].values():
        assert info["receptive_field"] is not None
        assert all(f["windows"] and len(f["positions"]) == 2 for f in info["filters"])
    assert result["layers"]["body.1.conv2"]["receptive_field"] == {"size": 13, "jump": 2, "start": -6}


def test_classnorms_last_conv_is_the_last_to_run():
    result = ClassNorms()(_subject(make()))
    assert list(result["layers"]) == ["stem", "body.1.conv2"]


def test_a_layer_the_pass_never_reaches_is_an_error():
    model = make()
    model.unused = nn.Conv2d(1, 1, 1)
    with pytest.raises(LayerError, match="without reaching layer\\(s\\) unused"):
        with TraceDict(model, ["stem", "unused"], stop=True), torch.no_grad():
            model(torch.zeros(1, *SHAPE))
    assert hook_count(model) == 0


def test_a_module_called_twice_is_read_once_per_batch():
    result = TopK(layers=["act"], k=3)(_subject(make(), n=5))
    assert result["layers"]["act"]["map_size"] == [8, 8]  # the first call: the stem's map
    assert sorted(result["layers"]["act"]["filters"][0]["positions"]) == sorted(
        set(result["layers"]["act"]["filters"][0]["positions"])
    )


def _positive(model):
    model = model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
    return model


def _support(model, layer, i, j, shape):
    x = torch.ones(1, *shape, requires_grad=True)
    with TraceDict(model, [layer], stop=True, detach=False) as td:
        model(x)
    td[layer].output[0, :, i, j].sum().backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    return int(nz[:, 0].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].min()), int(nz[:, 1].max()) + 1


def test_windows_equal_the_gradient_support_on_the_real_model():
    # all-positive weights: every pixel in a unit's field has a nonzero gradient (ReLUs pass all)
    model = _positive(make())
    rfs = receptive_fields(model, SHAPE)
    assert measure_fields(model, SHAPE) == rfs
    assert rfs["body.0.conv2"] == ReceptiveField(7, 1, -3) and rfs["body.1"] == ReceptiveField(13, 2, -6)
    for layer in conv_layers(model, SHAPE) + ["body.0", "body.1"]:
        h = 8 // rfs[layer].jump
        for i, j in [(0, 0), (1, h - 1), (h - 1, h - 1), (h // 2, 1)]:
            assert rfs[layer].window(i, j, 8, 8) == _support(model, layer, i, j, SHAPE), (layer, i, j)


def test_rectangular_kernels_and_functional_pools():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, (1, 3), padding=(0, 1))
            self.b = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.b(torch.nn.functional.max_pool2d(self.a(x), 2)).amax((2, 3))

    rfs = receptive_fields(Net(), (1, 16, 16))
    assert rfs["a"] == ReceptiveField(1, 1, 0, 3, 1, -1)
    assert rfs["b"] == ReceptiveField(6, 2, 0, 8, 2, -1)  # the pool's window counts
    assert measure_fields(Net(), (1, 16, 16)) == rfs


def test_ops_of_unknown_geometry_are_measured():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 1, 5, 5))
            self.after = nn.BatchNorm2d(2)
            self.up = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            x = self.after(torch.nn.functional.conv2d(x, self.w, stride=2, padding=2))  # no module to read
            return self.up(torch.nn.functional.interpolate(x, scale_factor=2)).sum((1, 2, 3))

    model = Net()
    graph = trace_graph(model, (1, 16, 16))
    assert graph.known["after"] is None and graph.fields["after"] == ReceptiveField(5, 2, -2)
    assert "up" not in graph.fields and "fixed step" in graph.unresolved["up"]  # upsampling: not a shifted box


def test_tracing_leaves_the_callers_model_alone():
    model = make().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace_graph(model, SHAPE)
    assert model.training and hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _resnet_fields(depth: int) -> dict[str, ReceptiveField]:
    """The analytic table of a CIFAR ResNet: every 3x3 conv adds 2 x the current step."""
    n, size, jump, start = (depth - 2) // 6, 3, 1, -1
    out = {"conv1": ReceptiveField(size, jump, start)}
    for stage in range(3):
        for i in range(n):
            name = f"layer{stage + 1}.{i}"
            if stage and i == 0:
                out[f"{name}.shortcut.0"] = ReceptiveField(size, 2 * jump, start)
                size, start, jump = size + 2 * jump, start - jump, 2 * jump
            else:
                size, start = size + 2 * jump, start - jump
            out[f"{name}.conv1"] = ReceptiveField(size, jump, start)
            size, start = size + 2 * jump, start - jump
            out[f"{name}.conv2"] = out[name] = ReceptiveField(size, jump, start)
    return out


@pytest.fixture(scope="module")
def resnet20():
    return build_model(load_config({"model": {"preset": "resnet20"}}).model, (3, 32, 32), 10)


# the torchvision-layout presets: probing every layer at 224 px takes minutes (test_models_imagenet.py)
@pytest.mark.parametrize(
    "name", [n for n in PRESETS if n not in ("resnet18", "resnet34", "resnet50", "vgg11", "vgg16")]
)
def test_every_preset_traced_field_equals_the_analytic_one(name, request):
    preset = PRESETS[name]
    if name == "resnet20":
        model = request.getfixturevalue("resnet20")
    else:
        options = {"width": 2} if "width" in preset.defaults() else {}
        model = build_model(
            load_config({"model": {"preset": name, "options": options}}).model, preset.example_input, 10
        )
    traced = trace_graph(model, preset.example_input).fields  # followed through each op's geometry
    if name != "resnet20":  # measured by gradient probes alone (resnet20: test below)
        assert measure_fields(model, preset.example_input) == traced
    if isinstance(model, nn.Sequential):
        assert traced == analytic_receptive_fields(model) == receptive_fields(model, preset.example_input)
    else:
        expected = _resnet_fields(preset.defaults()["depth"])
        assert {k: traced[k] for k in expected} == expected


def test_resnet20_fields_measured_by_probes_alone():
    model = build_model(load_config({"model": {"preset": "resnet20", "options": {"width": 1}}}).model, (3, 32, 32), 10)
    assert measure_fields(model, (3, 32, 32)) == trace_graph(model, (3, 32, 32)).fields


def test_resnet20_size_and_summary(resnet20):
    rows = summarize(resnet20, (3, 32, 32))
    assert totals(rows)["params"] == sum(p.numel() for p in resnet20.parameters()) == 272_474
    convs = conv_layers(resnet20, (3, 32, 32))
    assert len(convs) == 21 and convs[-1] == "layer3.2.conv2"  # 19 3x3 convs and 2 projections
    last = [r for r in rows if r.name == "layer3.2.relu2"][0]
    assert last.output_shape == [64, 8, 8] and last.receptive_field == 81


def test_no_hook_survives_an_exception():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken()
    for fn in (lambda: summarize(model, SHAPE), lambda: trace_graph(model, SHAPE)):
        with pytest.raises(RuntimeError, match="boom"):
            fn()
        assert hook_count(model) == 0
