"""scikit-learn's bundled 8x8 handwritten digits: small, offline, the default for demos and tests."""

from __future__ import annotations

import numpy as np

from .registry import Arrays, register_dataset, stratified_holdout

TEST_SHARE = 0.2


@register_dataset(
    "digits",
    "8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes); offline",
    "Always available: it ships inside scikit-learn.",
)
def load_digits(root: str | None, download_ok: bool, size: int | None) -> Arrays:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    # pixel values are 0..16; stretch to 0..255 so they look like any other uint8 image
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    # the set has no official test split: hold out a fixed, class-stratified 20%
    test = stratified_holdout(y, TEST_SHARE, seed=1797)
    return Arrays(x[~test], y[~test], x[test], y[test], [str(i) for i in range(10)], "sklearn.datasets.load_digits")
