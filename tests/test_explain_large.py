"""Explanations of images larger than 32 px: defaults that scale with the image, figures whose
tiles stay legible."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from convlens.cli import main
from convlens.explain.occlusion import map_size
from convlens.explain.outputs import default_stride, default_windows
from convlens.run import Layout


@pytest.fixture(scope="module")
def run64(tmp_path_factory):
    """The tiny model on the digits resized to 64 px, one epoch on 200 images."""
    from convlens.train import train

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("large") / "run"
    cfg = tiny_config(**{"data.resize": 64, "data.train_subset": 200, "data.test_subset": 20, "train.epochs": 1})
    train(cfg, path, echo=lambda s: None)
    return path


def test_occlusion_defaults_keep_the_shares_of_the_side_above_32_px():
    assert default_windows(32) == [4, 8, 12] and default_stride(32) == 2 and default_stride(8) == 2
    assert default_windows(64) == [8, 16, 24] and default_stride(64) == 4
    assert default_windows(224) == [28, 56, 84] and default_stride(224) == 14
    # the maps keep their 32 px shapes: 15x15, 13x13, 11x11 (not 99x99 ... 71x71 at 224 px)
    for side in (32, 64, 224):
        shapes = [map_size(side, k, default_stride(side)) for k in default_windows(side)]
        assert shapes == [15, 13, 11]


def test_occlusion_at_64_px_uses_the_scaled_windows_and_stride(run64):
    torch.set_num_threads(1)
    assert main(["explain", str(run64), "--method", "occlusion", "--images", "0"]) == 0
    params = json.loads(Layout(run64).artifact("occlusion").json.read_text())["params"]
    assert params["map_shapes"] == {"8": [15, 15], "16": [13, 13], "24": [11, 11]}
    # a stride given on the command line is kept
    assert (
        main(["explain", str(run64), "--method", "occlusion", "--images", "0", "--window", "8", "--stride", "8"]) == 0
    )
    params = json.loads(Layout(run64).artifact("occlusion").json.read_text())["params"]
    assert params["map_shapes"] == {"8": [8, 8]}
