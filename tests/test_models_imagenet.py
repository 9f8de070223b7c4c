"""ResNet-18/34/50 and VGG-11/16: torchvision's state_dict keys and shapes, its checkpoints load."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision_keys import PUBLISHED_PARAMS, keys, param_count

from convlens import runload
from convlens.analyses.base import resolve_layers
from convlens.cli import main
from convlens.config import load_config
from convlens.errors import ConfigError
from convlens.models import ReceptiveField, build_model
from convlens.models.graph import remember_shape, trace_graph
from convlens.trace import conv_layers

VARIANTS = [
    ("resnet18", {}),
    ("resnet34", {}),
    ("resnet50", {}),
    ("vgg11", {}),
    ("vgg16", {}),
    ("vgg11_bn", {"batch_norm": True}),
    ("vgg16_bn", {"batch_norm": True}),
]


def model(preset, options=None, shape=(3, 64, 64), classes=1000, device=None):
    """``device="meta"``: shapes without storage, so a VGG (133M parameters) builds in no time."""
    cfg = load_config({"model": {"preset": preset, "options": options or {}}}).model
    with torch.device(device or "cpu"):
        return build_model(cfg, shape, classes)


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_the_key_lists_give_the_published_parameter_counts(name):
    assert param_count(keys(name)) == PUBLISHED_PARAMS[name]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,options", VARIANTS)
def test_state_dict_is_torchvision_s(name, options):
    m = model(name.split("_")[0], options, device="meta")
    got = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert got == keys(name)  # same keys, same shapes, same order
    assert sum(p.numel() for p in m.parameters()) == PUBLISHED_PARAMS[name]


def test_key_names_people_write_by_hand():
    r50, v16 = (model(name, device="meta").state_dict() for name in ("resnet50", "vgg16"))
    for k in ("layer1.0.downsample.1.running_mean", "layer4.2.conv3.weight", "fc.weight"):
        assert k in r50
    for k in ("features.0.weight", "features.28.bias", "classifier.6.bias"):
        assert k in v16
    assert not any(k.startswith("input.") for k in (*r50, *v16))  # the normalisation is not saved


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,side", [("resnet18", 80), ("resnet50", 32), ("vgg11", 80), ("vgg16", 32)])
def test_any_input_size_and_class_count(name, side):
    device = "meta" if name.startswith("vgg") else "cpu"  # a VGG's shapes only: 133M parameters
    m = model(name, shape=(3, side, side), classes=7, device=device).eval()
    with torch.no_grad():
        assert m(torch.rand(2, 3, side, side, device=device)).shape == (2, 7)


def test_too_small_an_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"resnet18 needs images of at least 32x32 px .* got 16x16"):
        model("resnet18", shape=(3, 16, 16))


def test_normalisation_comes_from_the_data():
    cfg = load_config({"model": {"preset": "resnet18"}}).model
    m = build_model(cfg, (3, 32, 32), 3, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    x = torch.full((1, 3, 32, 32), 0.75)
    assert torch.equal(m.input(x), torch.ones_like(x))


def _checkpoint(name, classes):
    """A state_dict with torchvision's keys and shapes and no convlens code involved."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for k, shape in keys(name, classes):
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.05
    return out


def _image_tree(root, classes=2, per_class=2, side=32):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.timeout(120)
# timm's training script wraps it in state_dict (slow: the same path, another 15 s)
@pytest.mark.parametrize("wrap", [None, pytest.param("state_dict", marks=pytest.mark.slow)])
def test_a_torchvision_checkpoint_file_loads_through_import(tmp_path, capsys, wrap):
    name = "resnet18"
    state = _checkpoint(name, 2)
    torch.save(state if wrap is None else {wrap: state}, tmp_path / "w.pth")
    data = _image_tree(tmp_path / "imgs")
    args = ["import", name, "--weights", str(tmp_path / "w.pth"), "--data", "imagefolder", "--out", str(tmp_path / "r")]
    assert main([*args, "--set", f"data.root={data}", "--set", "data.val_fraction=0"]) == 0
    capsys.readouterr()
    loaded = runload.load_model(tmp_path / "r")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["n"] == 4


@pytest.mark.parametrize("name,options", VARIANTS[3:])
def test_a_vgg_checkpoint_fits_strictly(name, options):
    """A VGG checkpoint is 0.5 GB: its keys and shapes are loaded on the meta device (strict)."""
    m = model(name.split("_")[0], options, classes=10, device="meta")
    state = {k: torch.empty(shape, device="meta") for k, shape in keys(name, 10)}
    assert not m.load_state_dict(state, strict=True).missing_keys
    with pytest.raises(RuntimeError, match="classifier.6.weight"):
        m.load_state_dict({k: torch.empty(shape, device="meta") for k, shape in keys(name, 1000)})


def test_a_checkpoint_for_another_class_count_is_one_clear_line(tmp_path, capsys):
    torch.save(_checkpoint("resnet18", 1000), tmp_path / "w.pth")
    data = _image_tree(tmp_path / "imgs")
    args = ["import", "resnet18", "--weights", str(tmp_path / "w.pth"), "--data", "imagefolder"]
    assert (
        main([*args, "--out", str(tmp_path / "r"), "--set", f"data.root={data}", "--set", "data.val_fraction=0"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: weights ") and "do not fit resnet18" in err and "fc.weight" in err


# -- receptive fields and default layers ------------------------------------------------------------


def _analytic(name):
    """Receptive field of every conv of a torchvision ResNet or VGG: a k x k conv or pool with
    padding p and stride s grows the field by (k - 1) x the current step and moves its start by p
    steps; the step then grows s times."""
    out, size, jump, start = {}, 1, 1, 0

    def grow(k, s, p):
        nonlocal size, jump, start
        size, start, jump = size + (k - 1) * jump, start - p * jump, jump * s

    if name.startswith("vgg"):
        i = 0
        for v in {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}[name]:
            if v == "M":
                grow(2, 2, 0)
                i += 1
            else:
                grow(3, 1, 1)
                out[f"features.{i}"] = ReceptiveField(size, jump, start)
                i += 2
        return out
    grow(7, 2, 3)
    out["conv1"] = ReceptiveField(size, jump, start)
    grow(3, 2, 1)
    bottleneck = name == "resnet50"
    for stage, n in enumerate({"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}[name], start=1):
        for i in range(n):
            p, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            if stride == 2 or (bottleneck and i == 0):
                out[f"{p}.downsample.0"] = ReceptiveField(size, jump * stride, start)
            if bottleneck:
                out[f"{p}.conv1"] = ReceptiveField(size, jump, start)
                grow(3, stride, 1)
                out[f"{p}.conv2"] = out[f"{p}.conv3"] = ReceptiveField(size, jump, start)
            else:
                grow(3, stride, 1)
                out[f"{p}.conv1"] = ReceptiveField(size, jump, start)
                grow(3, 1, 1)
                out[f"{p}.conv2"] = ReceptiveField(size, jump, start)
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["resnet18", "resnet50", pytest.param("vgg11", marks=pytest.mark.slow)])  # 20 s
def test_traced_receptive_fields_are_the_analytic_ones(name):
    m = model(name, shape=(3, 64, 64), classes=10)
    expected = _analytic(name)
    traced = trace_graph(m, (3, 64, 64)).fields
    assert {k: traced[k] for k in expected} == expected
    assert set(expected) == set(conv_layers(m, (3, 64, 64)))
    if name == "resnet18":
        assert expected["layer4.1.conv2"].size == 435  # the published figure for ResNet-18


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "name,stages",
    [
        ("resnet18", ["conv1", "layer1.1.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2"]),
        ("resnet50", ["conv1", "layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3", "layer4.2.conv3"]),
        ("vgg16", ["features.2", "features.7", "features.14", "features.21", "features.28"]),
    ],
)
def test_deep_nets_default_to_the_output_of_each_stage(name, stages):
    m = model(name, classes=10)
    remember_shape(m, (3, 64, 64))
    assert resolve_layers(m, None, "all", "topk") == stages
    assert resolve_layers(m, None, "first_last", "classnorms") == [conv_layers(m)[0], conv_layers(m)[-1]]
    assert resolve_layers(m, ["layer1.0.conv1" if name != "vgg16" else "features.5"], "all", "topk") != stages


def test_any_network_with_many_convs_defaults_to_its_stages():
    """ResNet-20 (21 convs) keeps every conv; ResNet-38 (39 convs, no stage names) gets the last
    conv before each halving of the map, traced."""
    r20, r38 = (model("resnet20", {"depth": d}, shape=(3, 32, 32), classes=10) for d in (20, 38))
    for m in (r20, r38):
        remember_shape(m, (3, 32, 32))
    assert resolve_layers(r20, None, "all", "topk") == conv_layers(r20)
    assert resolve_layers(r38, None, "all", "topk") == ["layer1.5.conv2", "layer2.5.conv2", "layer3.5.conv2"]
