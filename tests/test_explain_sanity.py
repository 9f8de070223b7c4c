"""The sanity and faithfulness measures: hand-computed answers, and the same numbers as Quantus
(a test-only comparison, skipped where Quantus is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convlens.explain.sanity import area, cascade, orders, perturbation_curves, spearman, ssim, unit, weighted_layers


def _net(channels: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)
    ).eval()


def test_spearman_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, a).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert spearman(a, a**3).item() == pytest.approx(1.0)  # ranks only
    # ties share their mean rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> r = 0.9487
    b = torch.tensor([[0.0, 5.0, 5.0, 9.0]])
    assert spearman(a, b).item() == pytest.approx(3 / np.sqrt(10), abs=1e-6)
    assert spearman(a, torch.zeros(1, 4)).item() == 0.0  # a constant map correlates with nothing


def test_ssim_of_a_map_with_itself_and_unit_scaling():
    m = torch.rand(2, 9, 9)
    assert torch.allclose(ssim(m, m), torch.ones(2), atol=1e-6)
    u = unit(m * 5 + 3)
    assert torch.allclose(u.amin((1, 2)), torch.zeros(2).double()) and torch.allclose(
        u.amax((1, 2)), torch.ones(2).double()
    )
    assert float(ssim(u, 1 - u).mean()) < 0


def test_deletion_and_insertion_curves_by_hand():
    """A 'model' whose class-0 probability is the mean of the image's pixels (through a
    saturating head is hard to state; a linear softmax of two logits, 0 and mean, is exact)."""

    class Mean(nn.Module):
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([m, torch.zeros_like(m)], 1)

    x = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])
    rel = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
    t = torch.tensor([0])
    morf = orders(rel, "morf")
    assert morf.tolist() == [[0, 2, 3, 1]] and orders(rel, "lerf").tolist() == [[1, 3, 2, 0]]
    zero = torch.zeros(1, 1, 1, 1)
    curve = perturbation_curves(Mean(), x, t, morf, zero, steps=4)
    means = torch.tensor([1.75, 0.75, 0.25, 0.0, 0.0]) / 4
    assert torch.allclose(curve[0], torch.sigmoid(means), atol=1e-6)
    ins = perturbation_curves(Mean(), x, t, morf, zero, steps=4, insertion=True)
    assert torch.allclose(ins[0], torch.sigmoid(torch.tensor([0.0, 1.0, 1.5, 1.75, 1.75]) / 4), atol=1e-6)
    # the trapezoid mean over [0, 1]
    assert area(torch.tensor([[1.0, 0.5, 0.0]])).item() == pytest.approx(0.5)
    assert area(torch.tensor([[1.0, 0.0, 0.0]])).item() == pytest.approx(0.25)
    # chunking never changes a curve
    assert torch.equal(perturbation_curves(Mean(), x, t, morf, zero, 4, chunk=1), curve)


def test_cascade_reinitialises_from_the_top_on_a_copy():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert weighted_layers(model) == ["4", "0"]
    seen = []
    for name, copy in cascade(model, seed=3):
        seen.append(name)
        assert copy is not model
        changed = [n for n, v in copy.state_dict().items() if not torch.equal(v, before[n])]
        assert {n.split(".")[0] for n in changed} == set(seen[::-1][: len(seen)])
    assert seen == ["4", "0"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # the global random state is left alone
    a = [c.state_dict()["4.weight"].clone() for _, c in cascade(model, seed=3)][0]
    b = [c.state_dict()["4.weight"].clone() for _, c in cascade(model, seed=3)][0]
    assert torch.equal(a, b)  # seeded


# ----------------------------------------------------------------------------------------------
# Quantus: the same measures on the same maps


def test_similarities_match_quantus():
    quantus = pytest.importorskip("quantus", reason="Quantus is a test-only comparison (pip install quantus)")
    sf = quantus.similarity_func
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 12, 12, generator=g), torch.rand(4, 12, 12, generator=g)
    b[1] = a[1] * 0.7 + 0.3 * b[1]  # one similar pair
    ours = spearman(a, b).numpy()
    theirs = [sf.correlation_spearman(x.flatten().numpy(), y.flatten().numpy()) for x, y in zip(a, b)]
    assert np.allclose(ours, theirs, atol=1e-6)
    ua, ub = unit(a), unit(b)
    ours = ssim(ua, ub).numpy()
    theirs = [sf.ssim(x.numpy(), y.numpy()) for x, y in zip(ua, ub)]  # data range: 1, the maps' span
    assert np.allclose(ours, theirs, atol=1e-6)


def test_deletion_curve_matches_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus", reason="Quantus is a test-only comparison (pip install quantus)")
    model = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 6, 6, generator=g)
    rel = torch.rand(3, 6, 6, generator=g)  # distinct values: no tie for either sort to break
    t = torch.tensor([0, 1, 0])
    steps = 9  # 4 pixels a step; Quantus' "black" is the image minimum, so the baseline is given as 0.0
    ours = perturbation_curves(model, x, t, orders(rel, "morf"), torch.zeros(1, 1, 1, 1), steps)
    metric = quantus.PixelFlipping(
        features_in_step=4, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True
    )
    theirs = metric(
        model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=rel[:, None].numpy(), softmax=True, device="cpu"
    )
    assert np.allclose(ours[:, 1:].numpy(), np.array(theirs), atol=1e-5)


def test_verdicts_read_the_whole_cascade():
    from convlens.analyses.faithfulness import Faithfulness

    f = Faithfulness(similar=0.5)
    random_area = {"deletion_morf": 0.3, "insertion_morf": 0.3}
    # alike while the top layers are random, different once the first conv is: still "no"
    late = {"spearman": [1.0, 0.9, 0.8, 0.1], "deletion_morf": 0.2, "insertion_morf": 0.4}
    f._verdicts(late, random_area, ["fc", "conv2", "conv1"])
    assert late["mean_spearman"] == pytest.approx(0.6) and late["below_from"] == "conv1"
    assert late["changes_with_weights"] is False and late["ordering_beats_random"] is True
    early = {"spearman": [1.0, 0.2, -0.1, 0.0], "deletion_morf": 0.35, "insertion_morf": 0.4}
    f._verdicts(early, random_area, ["fc", "conv2", "conv1"])
    assert early["below_from"] == "fc" and early["changes_with_weights"] is True
    assert early["ordering_beats_random"] is False  # deleting its top pixels hurts less than random


def test_blur_keeps_a_constant_image_and_smooths_an_edge():
    from convlens.explain.sanity import blur

    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(blur(flat), flat)
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    b = blur(edge)
    assert b.shape == edge.shape and 0 < float(b[0, 0, 0, 3]) < 0.5 < float(b[0, 0, 0, 4]) < 1
