"""Data-dependent and identity initialisation of the speed-record network's convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convlens.errors import ConfigError
from convlens.models import build
from convlens.models.whiten import init_whitening, patch_moments, whiten_layers
from convlens.trace import hook_count


def _correlated_images(n: int = 400, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 8, 8) images whose channels and neighbouring pixels are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 9, 9, generator=g)
    smooth = (base[..., 1:, 1:] + base[..., :-1, :-1]) / 2  # neighbours share values
    mix = torch.tensor([[1.0], [0.8], [0.3]]).view(1, 3, 1, 1)
    x = smooth * mix + 0.1 * torch.rand(n, 3, 8, 8, generator=g)
    return (x / x.max() * 255).round().to(torch.uint8)


def _whiten_net(out: int = 24, eps: float = 1e-9, **conv):
    layers = [
        {"type": "conv", "out": out, "kernel": 2, "init": "whiten", "whiten_eps": eps, **conv},
        {"type": "globalpool", "mode": "avg"},
        {"type": "linear", "out": "classes"},
    ]
    return build(layers, (3, 8, 8), 4, mean=[0.4, 0.3, 0.1], std=[0.2, 0.2, 0.1])


def _outputs_as_rows(model, images):
    x = images.float() / 255
    with torch.no_grad():
        y = model.conv1(model.input(x))
    return y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).double()


def test_whitened_patches_have_identity_covariance():
    images = _correlated_images()
    model = _whiten_net()
    assert whiten_layers(model) == ["conv1"]
    assert init_whitening(model, images) == ["conv1"]
    rows = _outputs_as_rows(model, images)
    half = rows[:, :12]
    cov = torch.cov(half.T)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=2e-3)
    assert half.mean(0).abs().max() < 1e-4  # the biases centre the patches
    assert torch.allclose(rows[:, 12:], -half, atol=1e-5)  # the other half are the negatives


def test_raw_patches_are_far_from_white():
    # the check above is not vacuous: before whitening the covariance is nowhere near identity
    images = _correlated_images()
    model = _whiten_net()
    mean, cov = patch_moments(model, "conv1", images)
    assert cov.shape == (12, 12) and mean.shape == (12,)
    evals = torch.linalg.eigvalsh(cov)
    assert evals.max() / evals.min() > 100


def test_fewer_filters_keep_the_largest_components():
    images = _correlated_images()
    model = _whiten_net(out=2)
    init_whitening(model, images)
    _, cov = patch_moments(model, "conv1", images)
    top = torch.linalg.eigh(cov).eigenvectors[:, -1]
    w = model.conv1.weight[0].detach().flatten().double()
    assert abs(float(F.cosine_similarity(w, top, dim=0))) > 0.999
    rows = _outputs_as_rows(model, images)
    assert abs(float(rows[:, 0].var()) - 1) < 1e-2


def test_whitening_is_deterministic_and_restores_mode_and_hooks():
    images = _correlated_images()
    a, b = _whiten_net(), _whiten_net()
    torch.manual_seed(1)
    a.train()
    init_whitening(a, images)
    b.eval()
    init_whitening(b, images)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert a.training and not b.training
    assert hook_count(a) == 0 and hook_count(b) == 0


def test_frozen_whitening_weights_do_not_train():
    from convlens.config import OptimConfig
    from convlens.train.optim import make_optimizer

    images = _correlated_images()
    model = _whiten_net(freeze=True)
    init_whitening(model, images)
    before = model.conv1.weight.detach().clone()
    opt = make_optimizer(model, OptimConfig(lr=0.5))
    assert all(p is not model.conv1.weight for g in opt.param_groups for p in g["params"])
    for _ in range(3):
        loss = model(images[:32].float() / 255).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.conv1.weight, before)
    assert model.conv1.bias.requires_grad  # freeze keeps the weights; the bias still learns


def test_whiten_config_errors():
    with pytest.raises(ConfigError, match="at most 24 filters"):
        _whiten_net(out=26)
    from convlens.config import load_config

    with pytest.raises(ConfigError, match="even `out`"):
        load_config(
            {"model": {"layers": [{"type": "conv", "out": 5, "init": "whiten"}, "flatten", {"type": "linear"}]}}
        )
    with pytest.raises(ConfigError, match="whiten_eps"):
        load_config(
            {
                "model": {
                    "layers": [
                        {"type": "conv", "out": 4, "init": "whiten", "whiten_eps": 0},
                        "flatten",
                        {"type": "linear"},
                    ]
                }
            }
        )


@pytest.mark.parametrize("in_ch,out_ch", [(4, 4), (3, 5)])
def test_identity_init_is_an_identity_map(in_ch, out_ch):
    layers = [
        {"type": "conv", "out": out_ch, "kernel": 3, "padding": 1, "bias": False, "init": "identity"},
        "flatten",
        {"type": "linear", "out": "classes"},
    ]
    model = build(layers, (in_ch, 6, 6), 2)
    x = torch.randn(2, in_ch, 6, 6)
    with torch.no_grad():
        y = model.conv1(x)
    assert torch.equal(y[:, :in_ch], x)
    if out_ch > in_ch:  # the extra filters keep their random initialisation
        assert y[:, in_ch:].abs().sum() > 0


def test_batchnorm_learn_scale_off_keeps_scale_at_one():
    layers = [
        {"type": "conv", "out": 4, "padding": 1},
        {"type": "bn", "learn_scale": False},
        "relu",
        "flatten",
        {"type": "linear", "out": "classes"},
    ]
    model = build(layers, (1, 4, 4), 2)
    assert not model.bn1.weight.requires_grad and model.bn1.bias.requires_grad
    assert torch.equal(model.bn1.weight, torch.ones(4))
