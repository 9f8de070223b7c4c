"""Dataset-level analyses of a trained run: one file per analysis on the interface in ``base.py``.

::

    from convlens.analyses import Subject, analyze, TopK

    analyze("runs/a", only=["topk", "classnorms"], layers=["conv1", "conv3"])   # like the CLI
    TopK(k=10)(Subject.from_run("runs/a"))                                      # one analysis

Each writes ``RUN/analysis/<name>.json`` and figures under ``RUN/analysis/<name>/``.
"""

from .base import ANALYSES, Analysis, AnalysisError, Block, Streaming, Subject, block, inference, register

# The registry: importing a module registers its analysis (in this order on the command line).
from .filters import Filters
from .featuremaps import FeatureMaps
from .stats import Stats
from .classnorms import ClassNorms
from .topk import TopK
from .ablate import Ablate, silenced
from .errors import Errors

from .analyze import analyze  # noqa: E402  (after the registry is filled)

__all__ = [
    "ANALYSES", "Ablate", "Analysis", "AnalysisError", "Block", "ClassNorms", "Errors", "FeatureMaps", "Filters",
    "Stats", "Streaming", "Subject", "TopK", "analyze", "block", "inference", "register", "silenced",
]  # fmt: skip
