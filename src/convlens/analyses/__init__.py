"""Dataset-level analyses of a trained run: one file per analysis on the interface in ``base.py``.

::

    from convlens.analyses import Subject, analyze, TopK

    analyze("runs/a", only=["topk", "classnorms"], layers=["conv1", "conv3"])   # like the CLI
    TopK(k=10)(Subject.from_run("runs/a"))                                      # one analysis

Each writes ``RUN/analysis/<name>[-<key>].json`` and figures under ``RUN/analysis/<name>[-<key>]/``
(the key names non-default layers, as for explanations). An analysis
is a job of :mod:`convlens.jobs`: its options class in ``options.py``, its implementation in one
file. Names are imported on first use, so that ``convlens analyze --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ANALYSES": "base",
    "Analysis": "base",
    "AnalysisError": "base",
    "Block": "base",
    "Streaming": "base",
    "Subject": "base",
    "block": "base",
    "inference": "base",
    "register": "base",
    "Filters": "filters",
    "FeatureMaps": "featuremaps",
    "Stats": "stats",
    "ClassNorms": "classnorms",
    "TopK": "topk",
    "Ablate": "ablate",
    "silenced": "ablate",
    "Errors": "errors",
    "Atlas": "atlas",
    "Faithfulness": "faithfulness",
    "analyze": "pipeline",
}

__all__ = sorted(_WHERE)


def load_all() -> None:
    """Import every analysis' implementation: the registry is complete afterwards."""
    from ..jobs import jobs

    for j in jobs("analysis").values():
        j.load()


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    load_all()
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
