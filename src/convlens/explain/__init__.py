"""Per-image explanations on one interface (:class:`Explainer`, one verb: ``attribute``).

Methods (one file each): :class:`Occlusion` (with incremental inference), :class:`ActMax`,
:class:`Deconvnet`, :class:`GuidedBackprop`, :class:`Saliency` (and SmoothGrad), :class:`GradCAM`;
:func:`normalize_heatmaps` is the one heat-map normalisation their figures use;
:func:`explain_run` writes a method's results into a run folder.
"""

from .actmax import ActMax
from .base import METHODS, ExplainError, Explainer, evaluating
from .deconv import Deconvnet
from .gradcam import GradCAM
from .guided import GuidedBackprop
from .heatmap import HeatmapScale, normalize_heatmaps
from .imageparam import colour_covariance
from .occlusion import Occlusion, spread_to_pixels
from .outputs import explain_run
from .saliency import Saliency

__all__ = [
    "METHODS", "ActMax", "Deconvnet", "ExplainError", "Explainer", "GradCAM", "GuidedBackprop", "HeatmapScale",
    "Occlusion", "Saliency", "colour_covariance", "evaluating", "explain_run", "normalize_heatmaps",
    "spread_to_pixels",
]  # fmt: skip
