"""The 8x8 handwritten digits shipped with convlens: small, offline, the default for demos and tests.

``digits.npz`` beside this module is the UCI "Optical Recognition of Handwritten Digits" test set
(1,797 images, CC BY 4.0) as scikit-learn bundles it, written once by ``scripts/make_digits.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .registry import Arrays, register_dataset, stratified_holdout

TEST_SHARE = 0.2
FILE = Path(__file__).with_name("digits.npz")


@register_dataset(
    "digits",
    "8x8 handwritten digits shipped with convlens (1,797 images, 10 classes); offline",
    "Always available: it ships inside convlens.",
)
def load_digits(root: str | None, download_ok: bool, size: int | None) -> Arrays:
    with np.load(FILE) as d:
        images, target = d["images"], d["target"]
    # pixel values are 0..16; stretch to 0..255 so they look like any other uint8 image
    x = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = target.astype(np.int64)
    # the set has no official test split: hold out a fixed, class-stratified 20%
    test = stratified_holdout(y, TEST_SHARE, seed=1797)
    return Arrays(x[~test], y[~test], x[test], y[test], [str(i) for i in range(10)], "convlens/data/digits.npz")
