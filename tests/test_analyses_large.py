"""Analyses of images larger than 32 px: batches sized by the pixels they hold."""

from __future__ import annotations

import torch
from analyses_models import random_net, subject

from convlens.analyses.base import default_batch
from convlens.data.bundle import Split


def test_batches_hold_about_a_million_pixels():
    assert default_batch((3, 8, 8)) == default_batch((3, 32, 32)) == default_batch((3, 64, 64)) == 256
    assert default_batch((3, 128, 128)) == 64 and default_batch((3, 224, 224)) == 16
    assert default_batch((3, 1024, 1024)) == 8  # never fewer
    assert default_batch((3, 224, 160)) == 16  # rectangles count their pixels


def test_a_subject_of_large_images_reads_them_in_smaller_batches():
    images = torch.zeros(40, 3, 128, 128, dtype=torch.uint8)
    split = Split(images, torch.arange(40) % 4, torch.arange(40))
    s = subject(random_net(), split)
    assert s.batch_size == 64
    assert [len(x) for x, _, _ in s.batches("test")] == [40]
    assert subject(random_net(), split, batch_size=16).batch_size == 16  # a given size is kept


def test_faithfulness_occludes_a_share_of_the_side_above_32_px():
    from convlens.analyses.faithfulness import Faithfulness

    torch.manual_seed(0)
    images = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    split = Split(images, torch.arange(4), torch.arange(4))
    out = Faithfulness(methods=["occlusion"], count=1, steps=2)(subject(random_net(), split, figures=False))
    assert out["occlusion_window"] == 16  # 8 pixels per 32 of the side, as at 32 px (was 8 at every size)
