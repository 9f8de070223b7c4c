"""Per-image explanations on one interface (:class:`Explainer`, one verb: ``attribute``).

Methods (one file each): :class:`Occlusion` (with incremental inference), :class:`ActMax`,
:class:`Deconvnet`, :class:`GuidedBackprop`, :class:`Saliency` (and SmoothGrad), :class:`GradCAM`,
:class:`Concepts` (a layer's filters ranked by their contribution to a class);
:func:`normalize_heatmaps` is the one heat-map normalisation their figures use;
:func:`explain_run` writes a method's results into a run folder.

Names are imported on first use, so that ``convlens --help`` (which registers the ``explain``
command from :mod:`.cli`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ActMax": "actmax",
    "Concepts": "concepts",
    "Deconvnet": "deconv",
    "GradCAM": "gradcam",
    "GuidedBackprop": "guided",
    "Occlusion": "occlusion",
    "spread_to_pixels": "occlusion",
    "Saliency": "saliency",
    "METHODS": "base",
    "ExplainError": "base",
    "Explainer": "base",
    "evaluating": "base",
    "HeatmapScale": "heatmap",
    "normalize_heatmaps": "heatmap",
    "colour_covariance": "imageparam",
    "explain_run": "outputs",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "METHODS":  # the registry is complete once every method's module has run
        from ..jobs import jobs

        for j in jobs("method").values():
            j.load()
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
