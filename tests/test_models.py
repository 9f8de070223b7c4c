import pytest
import torch

from convlens.config import load_config
from convlens.errors import ConfigError
from convlens.models import PRESETS, build, build_model, receptive_fields, summarize, totals


def preset(name, shape=(3, 32, 32), **options):
    return build_model(load_config({"model": {"preset": name, "options": options}}).model, shape, 10)


@pytest.mark.parametrize(
    "name,options,params",
    [  # the parameter counts the CS7015 report gives for its best networks
        ("net1", {"width": 18, "multiplier": 2, "kernel": 3, "stride": 1}, 173_026),
        ("net2", {"width": 64, "multiplier": 2, "kernel": 5}, 4_870_654),
        ("net3", {"width": 96, "multiplier": 2, "dropout": 0.1}, 6_819_454),
        ("net4", {"width": 64, "dropout": 0.3}, 4_403_518),
    ],
)
def test_report_parameter_counts(name, options, params):
    m = preset(name, **options)
    assert sum(p.numel() for p in m.parameters()) == params


def test_net2_grid_gives_the_report_mean_parameter_counts():
    # CS7015 Net 2: widths 18, 32, 64 x kernels 3, 5, 7 (multiplier 2); the report gives only the
    # mean parameter count per width and per kernel, which fixes the kernel 7 counts
    counts = {
        (w, k): sum(p.numel() for p in preset("net2", width=w, kernel=k).parameters())
        for w in (18, 32, 64)
        for k in (3, 5, 7)
    }
    assert [counts[w, 7] for w in (18, 32, 64)] == [698_122, 2_154_430, 8_512_510]
    per_width = {w: sum(counts[w, k] for k in (3, 5, 7)) / 3 for w in (18, 32, 64)}
    per_kernel = {k: sum(counts[w, k] for w in (18, 32, 64)) / 3 for k in (3, 5, 7)}
    assert per_width == {18: 654_346, 32: 1_675_198, 64: 5_719_038}
    assert per_kernel == {3: 2_011_954, 5: 2_248_274, 7: 3_788_354}


def test_net4_has_1280_conv_filters():
    m = preset("net4")
    assert sum(mod.out_channels for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)) == 1280


def test_csci611_is_about_0_2_gflop():
    t = totals(summarize(preset("csci611"), (3, 32, 32)))
    assert 0.19e9 < 2 * t["macs"] < 0.22e9


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs(name):
    p = PRESETS[name]
    shape = p.example_input if max(p.example_input) <= 64 else (3, 64, 64)  # the ImageNet nets take any size
    m = build_model(load_config({"model": {"preset": name}}).model, shape, 7)
    out = m(torch.rand(3, *shape))
    assert out.shape == (3, 7)
    names = [n for n, _ in m.named_children()]
    assert names[0] == "input" and len(set(names)) == len(names)


def test_stable_layer_names():
    m = preset("csci611")
    names = [n for n, _ in m.named_children()]
    assert names[:8] == ["input", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3"]
    assert "pool1" in names and "fc1" in names and "fc2" in names and "drop1" in names


def test_normalisation_inside_the_model():
    m = build(["flatten", {"type": "linear", "out": "classes"}], (1, 2, 2), 2, mean=[0.5], std=[0.25])
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
        m.fc1.bias.zero_()
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.75]]]])
    assert m(x).tolist() == [[2.0, 1.0]]  # (1 - 0.5) / 0.25, (0.75 - 0.5) / 0.25


@pytest.mark.parametrize(
    "layers,expected",
    [  # hand-computed receptive fields of the last layer
        ([{"type": "conv", "out": 1, "kernel": 3}], 3),
        ([{"type": "conv", "out": 1, "kernel": 3}] * 2, 5),
        (
            [
                {"type": "conv", "out": 1, "kernel": 3},
                {"type": "maxpool", "kernel": 2},
                {"type": "conv", "out": 1, "kernel": 3},
            ],
            8,
        ),
        ([{"type": "conv", "out": 1, "kernel": 5, "stride": 2}, {"type": "conv", "out": 1, "kernel": 3}], 9),
        ([{"type": "conv", "out": 1, "kernel": 3, "dilation": 2}], 5),
        (
            [
                {"type": "conv", "out": 1, "kernel": 3},
                {"type": "maxpool", "kernel": 2},
                {"type": "conv", "out": 1, "kernel": 3},
                {"type": "maxpool", "kernel": 2},
                {"type": "conv", "out": 1, "kernel": 3},
            ],
            18,
        ),
    ],
)
def test_receptive_fields(layers, expected):
    m = build(layers + ["flatten", {"type": "linear", "out": "classes"}], (1, 40, 40), 2)
    rf = receptive_fields(m)
    last_conv = [n for n in rf if n.startswith("conv")][-1]
    assert rf[last_conv].size == expected


def test_receptive_field_window_matches_gradient():
    # the input patch a unit sees is exactly where its gradient is non-zero (average pooling and
    # positive weights, so every pixel of the field contributes)
    m = build(
        [
            {"type": "conv", "out": 1, "kernel": 3, "padding": 1},
            {"type": "avgpool", "kernel": 2},
            {"type": "conv", "out": 1, "kernel": 3, "stride": 2},
            "flatten",
            {"type": "linear", "out": "classes"},
        ],
        (1, 16, 16),
        2,
    )
    for p in m.parameters():
        torch.nn.init.constant_(p, 0.1)
    rf = receptive_fields(m)["conv2"]
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    act = m[:4](x)  # input, conv1, pool1, conv2
    i, j = 1, 2
    act[0, 0, i, j].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    top, bottom, left, right = rf.window(i, j, 16, 16)
    seen = (rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1)
    assert seen == (top, bottom, left, right)


def test_stage_widths():
    layers = [
        {"type": "conv", "stage": 0},
        {"type": "conv", "stage": 2},
        "flatten",
        {"type": "linear", "out": "classes"},
    ]
    m = build(layers, (1, 8, 8), 3, options={"width": 6, "multiplier": 1.5})
    assert m.conv1.out_channels == 6 and m.conv2.out_channels == round(6 * 1.5**2)


def test_builder_errors_name_the_layer():
    with pytest.raises(ConfigError, match="put a `flatten`"):
        build([{"type": "conv", "out": 2}, {"type": "linear", "out": "classes"}], (1, 8, 8), 2)
    with pytest.raises(ConfigError, match=r"model.layers.0 \(conv\) cannot take input of shape \[1, 8, 8\]"):
        build([{"type": "conv", "out": 2, "kernel": 9}, "flatten", {"type": "linear", "out": "classes"}], (1, 8, 8), 2)
    with pytest.raises(ConfigError, match="10 classes"):
        build(["flatten", {"type": "linear", "out": 4}], (1, 8, 8), 10)


def test_recurrent_reads_rows():
    m = preset("gru", (1, 28, 28), hidden=16)
    x = torch.rand(2, 1, 28, 28)
    seq = x.permute(0, 2, 1, 3).reshape(2, 28, 28)
    out, _ = m.gru1.rnn((seq - m.input.mean.view(1, 1, 1)) / m.input.std.view(1, 1, 1))
    torch.testing.assert_close(m(x), m.fc1(out[:, -1]))


def test_one_table_of_layer_kinds():
    """Spec, config and builder derive from models/spec.py's LAYER_CLASSES: every tag validates,
    has a default name prefix and a maker."""
    from convlens.models import builder
    from convlens.models import spec as S

    assert set(S.KINDS) == set(S.LAYER_TYPES) and set(builder.MAKERS) == set(S.LAYER_CLASSES)
    assert set(builder.PREFIX) == set(S.LAYER_TYPES) and builder.PREFIX["linear"] == "fc"
    assert S.layer_fields("leaky_relu") == ["name", "type", "slope"] and S.layer_fields("nope") == []
    layers = [
        {"type": "conv", "out": 2, "padding": 1},
        "bn",
        "leaky_relu",
        "gelu",
        "dropout2d",
        "maxpool",
        {"type": "scale", "factor": 2.0},
        "globalpool",
        {"type": "linear", "out": 3},
    ]
    model = builder.build(layers, (1, 8, 8), 3)
    assert [n for n, _ in model.named_children()] == [
        "input",
        "conv1",
        "bn1",
        "leaky_relu1",
        "gelu1",
        "drop1",
        "pool1",
        "scale1",
        "gpool1",
        "fc1",
    ]


def test_models_shows_a_preset_with_options(capsys):
    from convlens.cli import main

    assert main(["models", "net2", "--set", "options.kernel=7", "--set", "model.options.width=64"]) == 0
    out = capsys.readouterr().out
    assert "'width': 64" in out and "'kernel': 7" in out
    total = [line for line in out.splitlines() if line.startswith("total")][0].split()
    assert total[1] == "8,512,510"  # the report's kernel 7, width 64 network
    conv1 = [line for line in out.splitlines() if line.startswith("conv1 ")][0].split()
    assert conv1[2:] == ["64x28x28", "9,472", "7,375,872", "7"]  # shape, params, MACs, receptive field
    for bad, says in (
        (["--set", "options.kernl=7"], "has no option 'kernl'"),
        (["--set", "train.epochs=3"], "preset options only"),
    ):
        assert main(["models", "net2", *bad]) == 2 and says in capsys.readouterr().err
