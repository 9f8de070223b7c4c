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
def run96(tmp_path_factory):
    """The tiny model on the digits resized to 96 px, one epoch on 60 images."""
    from convlens.train import train

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("large") / "run"
    cfg = tiny_config(**{"data.resize": 96, "data.train_subset": 60, "data.test_subset": 10, "train.epochs": 1})
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


def test_occlusion_at_96_px_uses_the_scaled_windows_and_stride(run96):
    torch.set_num_threads(1)
    assert main(["explain", str(run96), "--method", "occlusion", "--images", "0"]) == 0
    params = json.loads(Layout(run96).artifact("occlusion").json.read_text())["params"]
    assert params["map_shapes"] == {"12": [15, 15], "24": [13, 13], "36": [11, 11]}
    # a stride given on the command line is kept
    assert (
        main(["explain", str(run96), "--method", "occlusion", "--images", "0", "--window", "12", "--stride", "12"]) == 0
    )
    params = json.loads(Layout(run96).artifact("occlusion").json.read_text())["params"]
    assert params["map_shapes"] == {"12": [8, 8]}


def test_actmax_at_96_px_optimises_64_images_at_a_time(run96, monkeypatch):
    from convlens.explain import actmax

    seen = []
    real = actmax.ActMax.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("chunk"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(actmax.ActMax, "__init__", spy)
    args = ["explain", str(run96), "--method", "actmax", "--steps", "2", "--layers", "conv1", "--filters", "0"]
    assert main(args) == 0
    assert main([*args, "--batch-size", "3"]) == 0
    assert seen == [64, 3]  # 256 images of 96 px at once: twice the pixels of 256 at 64 px


def test_the_colour_covariance_reads_a_bounded_number_of_pixels():
    from convlens.explain.imageparam import colour_covariance

    # 400 one-channel images of 160 px, black and white in turn: 200 of them are read (5 M
    # pixels), every second one, all black; reading all 400 would see the spread
    images = torch.zeros(400, 1, 160, 160, dtype=torch.uint8)
    images[1::2] = 255
    assert colour_covariance(images).abs().max() == 0
    assert colour_covariance(images[:, :, :32, :32]).abs().max() > 0.2  # 32 px: all 400 read
