"""convlens: train convolutional and recurrent image classifiers, sweep them, dissect them.

The package import stays light (no torch); import the parts you use::

    from convlens.config import load_config
    from convlens.train import train
    from convlens.run import Run
"""

import time as _time

__version__ = "0.1.0"
STARTED = _time.perf_counter()  # start-up breakdowns (`--verbose`) count from here
