"""The filter browser's data: every per-filter figure of every analysis, by layer and filter.

Figures are found two ways, so the browser works whichever way an analysis announces them: the
entries of an analysis JSON's ``"figures"`` list that carry ``"layer"`` and ``"filter"``, and the
files named by the convention ``analysis/<name>/<layer>/f<index>[_<kind>].png``. The page gets one
JSON block ``{kinds, layers, figures}``; its script swaps the images when a layer or filter is
picked, so nothing is drawn or fetched at viewing time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..run.layout import Layout
from .analyses import Analysis, figure_entries, per_filter_key
from .html import data_uri

# Panels in the order a person reads a filter: what it is, what it prefers, what excites it.
KIND_ORDER = [
    "filters",
    "classnorms",
    "topk",
    "topk_patches",
    "actmax",
    "deconv",
    "guided",
    "saliency",
    "featuremaps",
    "stats",
    "ablate",
]
KIND_LABELS = {
    "filters": "weights",
    "classnorms": "class-wise norms",
    "topk": "top-k images",
    "topk_patches": "top-k patches",
    "actmax": "activation maximisation",
    "deconv": "deconvnet",
    "guided": "guided backprop",
    "saliency": "saliency",
    "featuremaps": "feature maps",
    "stats": "statistics",
    "ablate": "ablation",
}


def _label(kind: str) -> str:
    if kind in KIND_LABELS:
        return KIND_LABELS[kind]
    base, _, variant = kind.partition("_")
    return f"{KIND_LABELS.get(base, base)} ({variant})" if variant else kind


def _layer_key(name: str, order: dict[str, int]) -> tuple[int, str]:
    return (order.get(name, len(order)), name)


def collect(run_dir: Path, analyses: list[Analysis], layer_order: list[str] | None = None) -> dict[str, Any] | None:
    """``{"kinds": [{key, label}], "layers": [{name, filters: [...]}],
    "figures": {layer: {filter: {kind: {src, caption}}}}}`` or None when the run folder has no
    per-filter figures."""
    run_dir = Path(run_dir)
    found: dict[tuple[str, int, str], tuple[Path, str]] = {}
    for a in analyses:
        for e in figure_entries(a.doc):
            key = per_filter_key(e, a.name)
            p = run_dir / e["path"]
            if key and p.is_file():
                found.setdefault(key, (p, str(e.get("caption") or "")))
    folder = Layout(run_dir).analysis_dir
    for p in sorted(folder.glob("*/*/f*.png")) if folder.is_dir() else []:
        key = per_filter_key({"path": p.relative_to(run_dir).as_posix()}, "")
        if key:
            found.setdefault(key, (p, ""))
    if not found:
        return None
    order = {n: i for i, n in enumerate(layer_order or [])}
    kinds = sorted(
        {k for _, _, k in found}, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k)
    )
    figures: dict[str, dict[str, dict[str, Any]]] = {}
    for (layer, idx, kind), (path, caption) in found.items():
        figures.setdefault(layer, {}).setdefault(str(idx), {})[kind] = {
            "src": data_uri(path),
            "caption": caption or f"{layer} filter {idx}: {_label(kind)}",
        }
    layers = [
        {"name": name, "filters": sorted(int(i) for i in figures[name])}
        for name in sorted(figures, key=lambda n: _layer_key(n, order))
    ]
    return {"kinds": [{"key": k, "label": _label(k)} for k in kinds], "layers": layers, "figures": figures}
