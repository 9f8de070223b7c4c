"""Muon for conv filters, progressive resizing: small exact checks on hand-set tensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from convlens.config import load_config
from convlens.errors import ConfigError
from convlens.models import build_model
from convlens.models.builder import Scale
from convlens.train import train
from convlens.train.muon import MuonSGD, make_muon_sgd, newton_schulz
from convlens.train.resize import epoch_size, resize_batch

from conftest import tiny_config


@pytest.mark.parametrize("shape", [(8, 72), (72, 8), (16, 16)])
def test_newton_schulz_is_near_orthogonal(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = newton_schulz(g, steps=5)
    assert x.shape == g.shape
    s = torch.linalg.svdvals(x)
    # the quintic trades exactness for speed: every singular value lands in about [0.7, 1.2]
    assert s.min() > 0.65 and s.max() < 1.25
    # and the singular vectors are g's: x = U f(S) V^T, so U^T x V is diagonal
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    core = u.T @ x @ vh.T
    assert torch.allclose(core, torch.diag(torch.diagonal(core)), atol=1e-5)  # computed in float32


def test_newton_schulz_of_a_scaled_orthogonal_matrix_stays_near_it():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    x = newton_schulz(0.01 * q, steps=5)  # the scale is normalised away
    s = torch.linalg.svdvals(x)
    assert torch.allclose(s, s[0].expand(6), atol=1e-9)  # all singular values move together
    assert torch.allclose(x / s[0], q, atol=1e-5)  # computed in float32


@pytest.mark.parametrize("shape", [(64, 576), (256, 2304), (96, 24)])
def test_newton_schulz_in_bf16_stays_within_the_iterations_spread(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    x = newton_schulz(g, steps=3, dtype=torch.bfloat16)
    assert x.dtype == torch.float32 and x.shape == g.shape  # handed back in the gradient's dtype
    y = newton_schulz(g, steps=3)  # float32, the reference
    s = torch.linalg.svdvals(x.double())
    ref = torch.linalg.svdvals(y.double())
    # three steps leave the singular values in about [0.65, 1.2] in either precision
    assert s.min() > 0.6 and s.max() < 1.25
    # bf16's 8-bit mantissa moves each by a few hundredths, far less than that spread
    assert (s - ref).abs().max() < 0.05
    # and the step points where float32's does
    assert (x * y).sum() / (x.norm() * y.norm()) > 0.999


def test_muon_ns_precision_is_not_part_of_the_saved_state():
    # a run saved where bf16 is native and resumed where it is emulated decides afresh
    conv = nn.Conv2d(3, 8, 3, bias=False)
    cfg = load_config(
        tiny_config(**{"train.optimizer": {"name": "sgd", "lr": 0.5, "muon": {"ns_precision": "auto"}}})
    ).train.optimizer
    saved = make_muon_sgd(conv, cfg, bf16=True)
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    saved.step()
    state = saved.state_dict()
    assert all("ns_bf16" not in g for g in state["param_groups"])
    resumed = make_muon_sgd(conv, cfg, bf16=False)
    resumed.load_state_dict(state)
    assert saved.ns_bf16 is True and resumed.ns_bf16 is False
    assert torch.equal(resumed.state[conv.weight]["momentum_buffer"], saved.state[conv.weight]["momentum_buffer"])


def test_muon_ns_precision_reaches_the_optimiser():
    conv = nn.Conv2d(3, 8, 3, bias=False)
    # auto follows the training precision: bf16 iterations only where autocast runs in bf16
    cases = [("fp32", False, False), ("fp32", True, False), ("bf16", False, True), ("bf16", True, True)]
    cases += [("auto", False, False), ("auto", True, True)]
    for prec, train_bf16, flag in cases:
        cfg = load_config(
            tiny_config(**{"train.optimizer": {"name": "sgd", "lr": 0.5, "muon": {"ns_precision": prec}}})
        ).train.optimizer
        opt = make_muon_sgd(conv, cfg, bf16=train_bf16)
        assert opt.param_groups[0]["muon"] and opt.ns_bf16 is flag, (prec, train_bf16)
    with pytest.raises(ConfigError, match="ns_precision"):
        load_config(tiny_config(**{"train.optimizer": {"name": "sgd", "muon": {"ns_precision": "fp16"}}}))


def test_newton_schulz_needs_a_matrix():
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.ones(2, 2, 2))


def test_sgd_groups_step_exactly_like_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    kw = {"lr": 0.1, "momentum": 0.85, "nesterov": True, "weight_decay": 0.01}
    mine = MuonSGD([{"params": list(a.parameters())}], **kw)
    ref = torch.optim.SGD(list(b.parameters()), **kw)
    x = torch.randn(4, 5)
    for _ in range(3):
        for m, opt in ((a, mine), (b, ref)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-7)


def test_muon_step_keeps_the_filter_norm_and_moves_by_lr():
    conv = nn.Conv2d(2, 4, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(72, dtype=torch.float32).view(4, 2, 3, 3) / 72)
    opt = MuonSGD([{"params": [conv.weight], "muon": True, "ns_steps": 5}], lr=0.1, momentum=0.0)
    conv.weight.grad = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    before = conv.weight.detach().clone()
    opt.step()
    rescaled = before * (2.0 / before.norm())  # sqrt(out_channels) = 2
    step = (rescaled - conv.weight.detach()).reshape(4, -1) / 0.1
    s = torch.linalg.svdvals(step)
    assert s.min() > 0.65 and s.max() < 1.25  # the orthogonalised gradient, times lr


def test_make_muon_sgd_splits_filters_from_the_rest():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))
    cfg = load_config(
        tiny_config(
            **{"train.optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9, "bias_lr_scale": 4, "muon": {"lr": 0.2}}}
        )
    ).train.optimizer
    opt = make_muon_sgd(model, cfg)
    muon, main, bias = opt.param_groups
    assert muon["muon"] and muon["params"] == [model[0].weight] and muon["lr"] == 0.2
    assert not main["muon"] and main["params"] == [model[3].weight] and main["lr"] == 0.5
    assert bias["lr"] == 2.0 and len(bias["params"]) == 3  # BN weight, BN bias, linear bias


def test_muon_needs_sgd():
    with pytest.raises(ConfigError, match="muon needs name=sgd"):
        load_config(tiny_config(**{"train.optimizer": {"name": "adam", "muon": {}}}))


def test_epoch_sizes_follow_the_schedule():
    assert [epoch_size([16, 24], 0.5, e, 4) for e in range(4)] == [16, 24, None, None]
    assert [epoch_size([16, 24], 0.5, e, 8) for e in range(8)] == [16, 16, 24, 24, None, None, None, None]
    assert [epoch_size([24], 0.25, e, 4) for e in range(4)] == [24, None, None, None]
    assert [epoch_size([24], 0.25, e, 1) for e in range(1)] == [None]  # round(0.25) = 0 epochs small
    assert [epoch_size([16, 20, 24], 1.0, e, 4) for e in range(4)] == [16, 20, 24, None]
    # the last epoch is always at full size
    assert [epoch_size([16, 20, 24], 1.0, e, 3) for e in range(3)] == [16, 20, None]
    assert [epoch_size([16], 0.9, e, 1) for e in range(1)] == [None]


def test_resize_batch_averages_areas_and_keeps_the_memory_format():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(2, 3, 1, 1)
    x = x.contiguous(memory_format=torch.channels_last)
    y = resize_batch(x, 2)
    assert y.shape == (2, 3, 2, 2) and y.is_contiguous(memory_format=torch.channels_last)
    # halving with antialiasing: each output pixel is the mean of its 2x2 block
    assert torch.allclose(y[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert resize_batch(x, None) is x and resize_batch(x, 4) is x


def test_a_run_with_muon_and_progressive_resizing_trains(tmp_path):
    cfg = tiny_config(
        **{
            "train.epochs": 2,
            "train.resize_schedule": {"sizes": [6], "fraction": 0.5},
            "train.optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "muon": {"lr": 0.1}},
        }
    )
    run = train(cfg, tmp_path / "r", echo=lambda s: None)
    assert run.status["status"] == "finished"
    acc = run.metrics()[-1]["val_acc"]
    assert acc > 0.3  # 10 classes: well above chance after two epochs


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example_diff(base: str, new: str) -> tuple[dict, dict, set[str]]:
    """Two example configs, flattened to dotted keys, and the keys whose values differ."""
    a, b = (_flat(load_config(EXAMPLES / name).to_dict()) for name in (base, new))
    return a, b, {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_fast_cpu_plus_is_fast_cpu_with_the_measured_switches():
    a, b, changed = _example_diff("fast-cpu.yaml", "fast-cpu-plus.yaml")
    # (a switch that is off is None in fast-cpu.yaml; switched on, its fields appear)
    assert changed == {
        "name",
        "train.epochs",
        "train.batch_size",
        "train.optimizer.lr",
        "train.optimizer.muon.lr",
        "train.optimizer.muon.momentum",
        "train.optimizer.muon.nesterov",
        "train.optimizer.muon.ns_steps",
        "train.optimizer.muon.ns_precision",
        "train.resize_schedule.sizes",
        "train.resize_schedule.fraction",
        "train.frozen_bias_epochs",
        "eval.tta",
    }
    assert b["train.optimizer.lr"] / b["train.batch_size"] == a["train.optimizer.lr"] / a["train.batch_size"]


def test_fast_cpu_full_is_fast_gpu_with_the_measured_switches():
    """The full-width CPU recipe keeps airbench94's (fast-gpu.yaml) network, data, augmentation,
    momentum and TTA; it trains as airbench94_muon (budget, batch, Muon for the filters, its rates
    for the head and the biases, a linear decay without averaging, the whitening bias for 3
    epochs) and adds resizing, bf16 Newton-Schulz and bf16 test views."""
    a, b, changed = _example_diff("fast-gpu.yaml", "fast-cpu-full.yaml")
    assert changed == {
        "name",
        "train.epochs",
        "train.batch_size",
        "train.optimizer.lr",
        "train.optimizer.weight_decay",
        "train.optimizer.bias_lr_scale",
        "train.optimizer.bias_weight_decay",
        "train.optimizer.muon.lr",
        "train.optimizer.muon.momentum",
        "train.optimizer.muon.nesterov",
        "train.optimizer.muon.ns_steps",
        "train.optimizer.muon.ns_precision",
        "train.schedule.start_factor",
        "train.schedule.pct_start",
        "train.schedule.final_factor",
        "train.average.kind",
        "train.average.decay",
        "train.average.every",
        "train.average.power",
        "train.resize_schedule.sizes",
        "train.resize_schedule.fraction",
        "train.frozen_bias_epochs",
        "eval.precision",
    }
    assert b["model.preset"] == "fast_full" and b["train.epochs"] < a["train.epochs"]
    assert (b["train.epochs"], b["train.batch_size"], b["train.frozen_bias_epochs"]) == (8, 2000, 3)
    # airbench94_muon's rates (a loss summed over its batch of 2000, logits / 256, the head's weight
    # rescaled to unit std) in the terms of the network this example builds (a mean loss, its
    # logit scale, torch's default head init: std 1 / sqrt(3 fan_in)): the same relative step of
    # the head and the same step of the biases at the first step
    net = build_model(load_config(EXAMPLES / "fast-cpu-full.yaml").model, (3, 32, 32), 10)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    (logit_scale,) = [m.factor for m in net.modules() if isinstance(m, Scale)]
    init_std = 1 / math.sqrt(3 * head.in_features)
    record = {"batch": 2000, "head_lr": 0.67, "bias_lr": 0.053, "logit_scale": 1 / head.in_features}
    ours, theirs = logit_scale * init_std, record["logit_scale"]  # logit scale times the head's init std
    head_step = record["head_lr"] * record["batch"] * theirs  # summed loss: 2000 times a mean loss's gradient
    assert b["train.optimizer.lr"] * logit_scale / init_std == pytest.approx(head_step, rel=1e-2)
    bias_lr = b["train.optimizer.lr"] * b["train.optimizer.bias_lr_scale"]
    assert bias_lr * ours == pytest.approx(record["bias_lr"] * record["batch"] * theirs, rel=1e-2)
    # weight decay per step: airbench94_muon's 2e-6 per image of the batch for the head and the
    # biases alike (airbench94's is 1.95e-6), the rate times the coupled decay
    for scale, wd in ((1, "weight_decay"), (b["train.optimizer.bias_lr_scale"], "bias_weight_decay")):
        per_step = b["train.optimizer.lr"] * scale * b[f"train.optimizer.{wd}"]
        assert per_step / b["train.batch_size"] == pytest.approx(2e-6, rel=1e-2)
    assert a["train.optimizer.lr"] * a["train.optimizer.weight_decay"] / a["train.batch_size"] == pytest.approx(
        2e-6, rel=3e-2
    )
    # no averaging; the rate falls in a straight line from its peak at the first step to zero
    assert b["train.average"] is None and a["train.average.kind"] == "lookahead"
    assert b["train.schedule.name"] == "onecycle" and b["train.schedule.start_factor"] == 1.0
    assert b["train.schedule.final_factor"] == 0.0 and b["train.schedule.pct_start"] < 0.01
    assert b["train.optimizer.muon.ns_precision"] == "auto" and b["eval.precision"] == "train"
    assert b["eval.tta"] == a["eval.tta"] == "flip_shift"


def test_frozen_bias_epochs_stops_the_whitening_bias_after_its_epochs(tmp_path):
    """The frozen first conv's bias moves in its epochs only; the layers above keep training."""
    layers = [
        {"type": "conv", "out": 8, "kernel": 2, "padding": 0, "init": "whiten", "freeze": True},
        {"type": "gelu"},
        {"type": "conv", "out": 8, "kernel": 3, "padding": 1},
        {"type": "flatten"},
        {"type": "linear", "out": "classes"},
    ]
    from convlens.run import Layout

    def states(frozen_bias_epochs):
        seen = []

        def keep(row):
            model = torch.load(Layout(out).checkpoint_file("last"), weights_only=True)["model"]
            seen.append({k: v.clone() for k, v in model.items()})

        out = tmp_path / f"r{frozen_bias_epochs}"
        cfg = tiny_config(
            **{"model": {"layers": layers}, "train.epochs": 2, "train.frozen_bias_epochs": frozen_bias_epochs}
        )
        assert train(cfg, out, echo=lambda s: None, callback=keep).status["status"] == "finished"
        return seen

    on = states(1)
    assert torch.equal(on[0]["conv1.weight"], on[1]["conv1.weight"])  # `freeze: true`
    assert torch.equal(on[0]["conv1.bias"], on[1]["conv1.bias"])  # frozen after epoch 1
    assert not torch.equal(on[0]["conv2.weight"], on[1]["conv2.weight"])  # the rest trains on
    always = states(None)
    assert torch.equal(always[0]["conv1.bias"], on[0]["conv1.bias"])  # epoch 1 is the same in both
    assert not torch.equal(always[0]["conv1.bias"], always[1]["conv1.bias"])


def test_frozen_bias_epochs_is_validated():
    with pytest.raises(ConfigError, match="frozen_bias_epochs"):
        load_config(tiny_config(**{"train.frozen_bias_epochs": -1}))
