"""The fast presets, their recipe switches, flip-and-shift TTA and derandomised flips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from convlens import runload
from convlens.config import load_config
from convlens.data.augment import Augment, flip_phase
from convlens.errors import ConfigError
from convlens.models import build_model, summarize, totals
from convlens.train.evaluate import _views

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def fast_params(width: int, wide: int, classes: int = 10, channels: int = 3, k: int = 2) -> int:
    """Parameter count of the fast network, written out layer by layer."""
    first = 2 * channels * k * k
    n = first * channels * k * k + first  # whitening conv with bias
    c_in = first
    for c in (width, wide, wide):
        n += c * c_in * 9 + 2 * c  # conv (no bias) + bn scale and shift
        n += c * c * 9 + 2 * c
        c_in = c
    return n + wide * classes  # linear without bias


@pytest.mark.parametrize(
    "preset,options,width,wide",
    [
        ("fast", {}, 16, 64),
        ("fast_full", {}, 64, 256),
        ("fast", {"width": 24, "multiplier": 4}, 24, 96),
    ],
)
def test_fast_presets_build_with_expected_parameter_count(preset, options, width, wide):
    cfg = load_config({"model": {"preset": preset, "options": options}})
    model = build_model(cfg.model, (3, 32, 32), 10, [0.5] * 3, [0.25] * 3)
    assert totals(summarize(model, (3, 32, 32)))["params"] == fast_params(width, wide)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_fast_full_is_airbench94_sized():
    cfg = load_config({"model": {"preset": "fast_full"}})
    model = build_model(cfg.model, (3, 32, 32), 10)
    assert totals(summarize(model, (3, 32, 32)))["params"] == 1_972_792
    names = [n for n, _ in model.named_children()]
    assert names[:3] == ["input", "conv1", "gelu1"] and names[-1] == "scale1"
    assert not model.conv1.weight.requires_grad  # frozen whitening
    assert not model.bn1.weight.requires_grad and model.bn1.bias.requires_grad
    assert model.bn1.momentum == pytest.approx(0.4) and model.bn1.eps == 1e-12
    w = model.conv2.weight  # identity init: filter i passes input channel i through
    assert w[3, 3, 1, 1] == 1 and w[3].abs().sum() == 1


def test_every_trick_is_a_model_option():
    base = {
        "whiten": False,
        "freeze_whiten": False,
        "identity": False,
        "act": "relu",
        "logit_scale": 1,
        "bn_momentum": 0.1,
        "bn_eps": 1e-5,
        "bn_learn_scale": True,
    }
    cfg = load_config({"model": {"preset": "fast", "options": base}})
    model = build_model(cfg.model, (3, 32, 32), 10)
    names = [n for n, _ in model.named_children()]
    assert "scale1" not in names and "relu1" in names and "gelu1" not in names
    assert model.conv1.weight.requires_grad and model.bn1.weight.requires_grad
    assert model.spec[0]["init"] == "default" and model.spec[2]["init"] == "default"


@pytest.mark.parametrize(
    "options,match",
    [
        ({"act": "tanh"}, "act='tanh' is not allowed"),
        ({"width": 0}, "width=0 is out of range"),
        ({"whiten_kernel": 9}, "whiten_kernel=9 is out of range"),
        ({"widht": 8}, "no option 'widht'"),
        ({"whiten": "maybe"}, "whiten"),
    ],
)
def test_fast_options_are_validated(options, match):
    with pytest.raises(ConfigError, match=match):
        load_config({"model": {"preset": "fast", "options": options}})


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.optimizer.bias_weight_decay=-1", "bias_weight_decay"),
        ("model.layers=[{type: conv, out: 4, freeze: maybe}, flatten, {type: linear}]", "freeze"),
        ("model.layers=[{type: bn, learn_scale: 3}, flatten, {type: linear}]", "learn_scale"),
        ("data.augment.flip.alternate=often", "alternate"),
        ("eval.tta=flip_crop", "flip_shift"),
    ],
)
def test_new_switches_validate(override, match):
    overrides = [override] + (["model.preset=null"] if override.startswith("model.layers") else [])
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_bias_group_gets_its_own_lr_and_decay():
    from convlens.train.optim import make_optimizer

    optimizer = {"lr": 0.5, "weight_decay": 0.01, "bias_lr_scale": 64, "bias_weight_decay": 0.01 / 64, "nesterov": True}
    cfg = load_config({"model": {"preset": "fast"}, "train": {"optimizer": optimizer}})
    model = build_model(cfg.model, (3, 32, 32), 10)
    opt = make_optimizer(model, cfg.train.optimizer)
    main, bias = opt.param_groups
    assert (main["lr"], main["weight_decay"]) == (0.5, 0.01)
    assert bias["lr"] == 32 and bias["weight_decay"] == pytest.approx(0.01 / 64)
    assert main["lr"] * main["weight_decay"] == pytest.approx(bias["lr"] * bias["weight_decay"])
    assert opt.defaults["nesterov"]


def test_example_configs_validate():
    for name in ("fast-cpu.yaml", "fast-gpu.yaml", "fast-cpu-20min.yaml", "fast-cpu-plus.yaml", "fast-cpu-full.yaml"):
        cfg = load_config(EXAMPLES / name)
        assert cfg.model.preset in ("fast", "fast_full")


def test_flip_shift_views_are_the_image_its_mirror_and_one_pixel_shifts():
    x = torch.rand(2, 3, 6, 6)
    views = _views(x, "flip_shift")
    assert sum(w for w, _ in views) == pytest.approx(1.0)
    assert torch.equal(views[0][1], x) and torch.equal(views[1][1], x.flip(3))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifts = [padded[..., 0:6, 0:6], padded[..., 2:8, 2:8]]
    got = [v for _, v in views[2:]]
    # each shift appears as is and mirrored; the mirrored ones are the mirror image shifted
    for s in shifts:
        assert any(torch.equal(g, s) for g in got)
    mirrored = F.pad(x.flip(3), (1, 1, 1, 1), mode="reflect")
    for s in (mirrored[..., 0:6, 0:6], mirrored[..., 2:8, 2:8]):
        assert any(torch.equal(g, s) for g in got)
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]


def test_flip_shift_tta_of_a_mirror_symmetric_model_is_its_shift_average():
    # a model that ignores left/right (sums over the width) sees each shifted view twice
    class Sym(torch.nn.Module):
        def forward(self, x):
            return x.sum(3).flatten(1)[:, :4]

    x = torch.rand(3, 1, 5, 5)
    tta = sum(w * Sym()(v) for w, v in _views(x, "flip_shift"))
    flip = sum(w * Sym()(v) for w, v in _views(x, "flip"))
    assert torch.allclose(flip, Sym()(x))
    assert not torch.allclose(tta, Sym()(x))  # the shifts do change it


def test_alternating_flips_mirror_each_image_on_every_other_epoch():
    cfg = load_config(None, ["data.augment.flip={alternate: true}"]).data.augment
    aug = Augment(cfg, [0.5], seed=3)
    n = 400
    x = torch.rand(n, 1, 4, 4)
    idx = torch.arange(1000, 1000 + n)
    g = torch.Generator().manual_seed(0)
    e0, e1, e2 = (aug(x, g, epoch, idx) for epoch in (0, 1, 2))
    flipped0 = (e0 == x.flip(3)).flatten(1).all(1)
    flipped1 = (e1 == x.flip(3)).flatten(1).all(1)
    assert torch.equal(flipped0, ~flipped1)  # every image is seen both ways over two epochs
    assert torch.equal(e0, e2)
    assert 0.4 < flipped0.float().mean() < 0.6
    other = Augment(cfg, [0.5], seed=4)(x, g, 0, idx)
    assert not torch.equal(other, e0)  # the seed picks the half


def test_flip_phase_is_not_the_index_parity():
    i = torch.arange(10000)
    bit = flip_phase(i)
    assert 0.45 < bit.float().mean() < 0.55
    assert 0.45 < (bit == (i % 2 == 1)).float().mean() < 0.55


def test_fast_preset_trains_a_few_steps(tmp_path):
    from convlens.train import train

    cfg = load_config(
        EXAMPLES / "fast-cpu.yaml",
        [
            "data.name=digits",
            "data.root=null",
            "data.resize=32",
            "data.val_fraction=0.25",
            "data.train_subset=600",
            "data.test_subset=100",
            "model.options.channels=1",
            "model.options.width=8",
            "train.epochs=2",
            "train.batch_size=32",
            "train.optimizer.lr=0.2",
            # one thread: on a shared, busy 2-core machine tiny batches run ~15x faster without the
            # second thread's barriers (measured 39 s vs 2.3 s per epoch here); results are identical
            "train.threads=1",
        ],
    )
    run = train(cfg, tmp_path / "run", echo=lambda s: None)
    rows = run.metrics()
    assert run.status["status"] == "finished"
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_acc"] > 0.5  # ten digits: far above chance after two epochs
    assert run.eval["tta"] == "flip_shift"
    model = runload.load_model(run, "last")
    assert not model.conv1.weight.requires_grad
