"""Data sets: a registry of loaders, a uint8 cache, splits, batch augmentation.

Importing this package registers the built-in data sets (cifar10, mnist, fashion-mnist, digits,
imagefolder).
"""

from . import cifar, digits, idx, imagefolder  # noqa: F401  (register the data sets)
from .augment import Augment
from .bundle import DataBundle, Split, load_arrays, load_data
from .loader import batches, num_batches
from .registry import DATASETS, Arrays, register_dataset

__all__ = [
    "DATASETS",
    "Arrays",
    "Augment",
    "DataBundle",
    "Split",
    "batches",
    "load_arrays",
    "load_data",
    "num_batches",
    "register_dataset",
]
