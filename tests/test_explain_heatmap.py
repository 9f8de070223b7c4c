"""The shared heat-map normalisation: signs, outlier clipping, shared or per-image scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.explain import ExplainError, normalize_heatmaps


def maps() -> np.ndarray:
    a = np.zeros((2, 4, 4), np.float32)
    a[0, 0, 0], a[0, 1, 1] = 2.0, -1.0
    a[1, 0, 0], a[1, 2, 2] = 0.5, -4.0
    return a


def test_absolute_shared_scale_keeps_images_comparable():
    out, scale = normalize_heatmaps(maps(), sign="absolute", percentile=100, scale="shared")
    assert out[1, 2, 2] == 1.0 and out[0, 0, 0] == pytest.approx(0.5) and out[0, 1, 1] == pytest.approx(0.25)
    assert scale.limits == [(0.0, 4.0), (0.0, 4.0)]
    assert "one scale for all 2 maps" in scale.label and "|attribution|" in scale.label


def test_each_scale_stretches_each_map():
    out, scale = normalize_heatmaps(maps(), sign="absolute", percentile=100, scale="each")
    assert out[0, 0, 0] == 1.0 and out[1, 2, 2] == 1.0 and out[0, 1, 1] == pytest.approx(0.5)
    assert "each map on its own scale" in scale.label and scale.scale == "each"
    old, old_scale = normalize_heatmaps(maps(), sign="absolute", percentile=100, scale="each")  # older name
    assert (old == out).all() and old_scale.scale == "each"


def test_signs():
    pos, _ = normalize_heatmaps(maps(), sign="positive", percentile=100, scale="each")
    assert pos[0, 1, 1] == 0 and pos[0, 0, 0] == 1 and pos[1, 2, 2] == 0
    neg, _ = normalize_heatmaps(maps(), sign="negative", percentile=100, scale="each")
    assert neg[0, 0, 0] == 0 and neg[0, 1, 1] == 1
    signed, s = normalize_heatmaps(maps(), sign="signed", percentile=100, scale="shared")
    assert signed[1, 2, 2] == -1 and signed[0, 0, 0] == pytest.approx(0.5) and signed[0, 3, 3] == 0
    assert s.limits[0] == (-4.0, 4.0) and "signed" in s.label
    raw, s = normalize_heatmaps(maps(), sign="none", scale="fixed", vmin=-4, vmax=4)
    assert raw[0, 3, 3] == pytest.approx(0.5) and "fixed scale -4 to 4" in s.label


def test_percentile_clips_outliers():
    a = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    a[0, 9, 9] = 100.0  # one outlier
    out, scale = normalize_heatmaps(a, percentile=98, scale="shared")
    assert scale.limits[0][1] < 2  # the outlier does not set the scale
    assert out[0, 9, 9] == 1.0 and out[0, 5, 0] > 0.4
    assert "98th percentile" in scale.label


def test_channels_are_reduced_as_stated():
    g = torch.zeros(1, 3, 2, 2)
    g[0, :, 0, 0] = torch.tensor([0.5, -2.0, 1.0])
    out, s = normalize_heatmaps(g, reduce="max_abs", percentile=100)
    assert out.shape == (1, 2, 2) and out[0, 0, 0] == 1.0 and "max |.| over channels" in s.label
    out, s = normalize_heatmaps(g, reduce="sum", sign="signed", percentile=100)
    assert out[0, 0, 0] == -1.0 and "summed over channels" in s.label
    out, _ = normalize_heatmaps(g, reduce="none", sign="signed", percentile=100)
    assert out.shape == (1, 3, 2, 2) and out[0, 1, 0, 0] == -1.0


def test_bad_options_name_the_allowed_values():
    with pytest.raises(ExplainError, match="heat-map sign 'abs' is not one of: absolute, positive"):
        normalize_heatmaps(maps(), sign="abs")
    with pytest.raises(ExplainError, match="percentile 0 is out of range; allowed: above 0 up to 100"):
        normalize_heatmaps(maps(), percentile=0)
    with pytest.raises(ExplainError, match="scale 'fixed' needs vmin < vmax"):
        normalize_heatmaps(maps(), scale="fixed")
