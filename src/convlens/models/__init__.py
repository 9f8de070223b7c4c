"""Models: a spec-driven builder, a registry of presets, summaries with receptive fields."""

from . import presets  # noqa: F401  (register the presets)
from .builder import ConvlensNet, build, build_model
from .registry import PRESETS, register_preset
from .summary import ReceptiveField, receptive_fields, summarize, totals

__all__ = [
    "PRESETS", "ConvlensNet", "ReceptiveField", "build", "build_model", "receptive_fields",
    "register_preset", "summarize", "totals",
]  # fmt: skip
