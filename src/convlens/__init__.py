"""convlens: train convolutional and recurrent image classifiers, sweep them, dissect them.

The package import stays light (no torch); import the parts you use::

    from convlens.config import load_config
    from convlens.train import train
    from convlens.run import Run

``convlens.show(images, maps)`` draws heat maps over their images (imported on first use).
"""

import time as _time

__version__ = "0.1.0"
STARTED = _time.perf_counter()  # start-up breakdowns (`--verbose`) count from here


def __getattr__(name: str):
    if name == "show":  # imported on first use: the package import stays free of torch and matplotlib
        from .overlay import show

        globals()["show"] = show
        return show
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
