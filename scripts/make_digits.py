"""Write src/convlens/data/digits.npz, the 8x8 digits convlens ships, from scikit-learn's copy.

Run once (needs scikit-learn, which convlens itself does not):

    python scripts/make_digits.py

The file holds ``images``, uint8 (1797, 8, 8) with the original 0..16 pixel values, and
``target``, uint8 (1797,). The data are the test part of the UCI "Optical Recognition of
Handwritten Digits" set (Alpaydin and Kaynak, 1998), licensed CC BY 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "convlens" / "data" / "digits.npz"


def main() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)
    target = d.target.astype(np.uint8)
    # the float images hold whole numbers 0..16: the uint8 copy is exact
    assert np.array_equal(images, d.images) and np.array_equal(target, d.target)
    np.savez_compressed(OUT, images=images, target=target)
    print(f"{OUT}: {images.shape[0]} images, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
