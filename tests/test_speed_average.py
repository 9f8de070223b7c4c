"""Weight averaging (EMA and lookahead): exact arithmetic on a one-number model, then in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlens.config import AverageConfig, load_config
from convlens.errors import ConfigError
from convlens.train.averaging import WeightAverage

from conftest import tiny_config


class One(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("stat", torch.zeros(1))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # not averaged: not float


def _set(m: One, v: float) -> None:
    with torch.no_grad():
        m.w.fill_(v)
        m.stat.fill_(2 * v)
        m.count.fill_(int(v))


def test_ema_is_the_exponential_average_every_k_steps():
    m = One()
    avg = WeightAverage(m, AverageConfig(kind="ema", decay=0.5, every=2, power=0), total_steps=100)
    expected = 0.0
    for step, v in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], start=1):
        _set(m, v)
        avg.update()
        if step % 2 == 0:
            expected = 0.5 * expected + 0.5 * v
    assert avg.average["w"].item() == pytest.approx(expected)  # 0.5*(0.5*(0.5*0+0.5*2)+0.5*4)... = 4.25
    assert expected == pytest.approx(4.25)
    assert avg.average["stat"].item() == pytest.approx(2 * expected)  # float buffers are averaged too
    assert "count" not in avg.average
    assert m.w.item() == 6.0  # an EMA never touches the weights being trained


def test_lookahead_pulls_the_weights_back_to_the_average():
    m = One()
    avg = WeightAverage(m, AverageConfig(kind="lookahead", decay=0.75, every=1, power=0), total_steps=10)
    _set(m, 4.0)
    avg.update()  # average: 0.75 * 0 + 0.25 * 4 = 1, and the weights jump back to it
    assert avg.average["w"].item() == pytest.approx(1.0)
    assert m.w.item() == pytest.approx(1.0)
    with torch.no_grad():
        m.w.add_(4.0)  # "training" moves the fast weights to 5
    avg.update()  # 0.75 * 1 + 0.25 * 5 = 2
    assert m.w.item() == pytest.approx(2.0) and avg.average["w"].item() == pytest.approx(2.0)


def test_decay_ramps_with_power():
    avg = WeightAverage(One(), AverageConfig(decay=0.8, power=3), total_steps=100)
    assert avg.decay_at(0) == 0.0
    assert avg.decay_at(50) == pytest.approx(0.8 * 0.125)
    assert avg.decay_at(100) == pytest.approx(0.8)
    assert avg.decay_at(150) == pytest.approx(0.8)


def test_applied_swaps_in_and_out_and_finish_keeps_it():
    m = One()
    avg = WeightAverage(m, AverageConfig(kind="ema", decay=0.5, every=1, power=0), total_steps=10)
    _set(m, 2.0)
    avg.update()  # average 1.0
    with avg.applied():
        assert m.w.item() == 1.0
    assert m.w.item() == 2.0
    with pytest.raises(RuntimeError):
        with avg.applied():
            raise RuntimeError("inside")
    assert m.w.item() == 2.0  # restored after an exception as well
    assert avg.averaged_state()["w"].item() == 1.0 and m.w.item() == 2.0
    avg.finish()
    assert m.w.item() == 1.0


def test_state_dict_round_trip():
    m = One()
    a = WeightAverage(m, AverageConfig(kind="ema", decay=0.5, every=1, power=0), total_steps=10)
    _set(m, 2.0)
    a.update()
    b = WeightAverage(One(), AverageConfig(kind="ema", decay=0.5, every=1, power=0), total_steps=10)
    b.load_state_dict(a.state_dict())
    assert b.step == 1 and b.average["w"].item() == 1.0


def test_averaging_smooths_noisy_sgd_on_a_quadratic():
    # minimise (w - 3)^2 with very noisy gradients: the EMA ends closer to 3 than the raw weights
    torch.manual_seed(0)
    m = One()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    avg = WeightAverage(m, AverageConfig(kind="ema", decay=0.9, every=1, power=0), total_steps=400)
    raw_err, avg_err = 0.0, 0.0
    for step in range(400):
        opt.zero_grad()
        loss = (m.w - 3).pow(2).sum() + 2.0 * torch.randn(()) * m.w.sum()
        loss.backward()
        opt.step()
        avg.update()
        if step >= 200:
            raw_err += (m.w.item() - 3) ** 2
            avg_err += (avg.average["w"].item() - 3) ** 2
    assert avg_err < 0.5 * raw_err


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"kind": "swa"}, "train.average.kind"),
        ({"decay": 1.0}, "train.average.decay"),
        ({"every": 0}, "train.average.every"),
        ({"power": -1}, "train.average.power"),
    ],
)
def test_average_config_is_validated(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config({"train": {"average": bad}})


@pytest.mark.parametrize("kind", ["ema", "lookahead"])
def test_training_with_averaging_resumes_exactly(tmp_path, kind):
    from convlens.train import train
    from convlens.checkpoint import load

    cfg = tiny_config(
        **{
            "train.epochs": 3,
            "train.threads": 1,  # see test_fast_preset_trains_a_few_steps
            "train.average": {"kind": kind, "decay": 0.8, "every": 2, "power": 1},
        }
    )
    whole = train(cfg, tmp_path / "whole", echo=lambda s: None)

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", echo=lambda s: None, callback=interrupt)
    assert "average" in load(tmp_path / "cut" / "checkpoints" / "last.pt")
    cont = train(resume=tmp_path / "cut", echo=lambda s: None)

    def strip(run):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in run.metrics()]

    assert strip(cont) == strip(whole)
    a = load(whole.path / "checkpoints" / "last.pt")["model"]
    b = load(cont.path / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the best checkpoint holds averaged weights: its validation accuracy is theirs
    best = load(whole.path / "checkpoints" / "best.pt")
    assert best["val_acc"] == max(r["val_acc"] for r in whole.metrics())
