"""Models: a spec-driven builder, a registry of presets, summaries with receptive fields.

Names are imported on first use: ``convlens.models.spec`` (which the config reads) and
``convlens --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "PRESETS": "registry",
    "register_preset": "registry",
    "ConvlensNet": "builder",
    "build": "builder",
    "build_model": "builder",
    "ReceptiveField": "summary",
    "receptive_fields": "summary",
    "summarize": "summary",
    "totals": "summary",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(f"{__name__}.presets")  # register the presets
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
