"""The filter browser's data: every per-filter figure of every analysis, by layer and filter.

Figures are found two ways, so the browser works whichever way an analysis announces them: the
entries of an analysis JSON's ``"figures"`` list that carry ``"layer"`` and ``"filter"``, and the
files named by the convention ``analysis/<name>/<layer>/f<index>[_<kind>].png``. The page gets one
JSON block ``{kinds, layers, figures}``; its script swaps the images when a layer or filter is
picked, so an image is fetched only when its filter is looked at. The figures of one layer and kind
are listed once, as a pattern (``"src": "analysis/topk/conv2/f{f}.png"``, the caption likewise)
and the filters that have one, plus those that do not follow it (:func:`pack`): the index of a
network of thousands of filters stays a few bytes a filter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..run.layout import Layout
from .analyses import Analysis, class_name, figure_entries, filter_records, layers_of, per_filter_key
from .html import image_src, fmt

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


# The numbers shown above a filter's panels, in this order: (key, label).
NUMBER_LABELS = [
    ("selectivity", "selectivity"),
    ("top_class", "top class"),
    ("ablation_drop", "accuracy drop when silenced"),
    ("dead", "dead"),
    ("mean", "mean response"),
    ("max", "max response"),
]


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _stats_numbers(doc: dict[str, Any], put) -> None:
    from .diagnose import dead_filters_by_layer

    dead = dead_filters_by_layer(doc)
    for layer, info in layers_of(doc).items():
        d = set(dead.get(layer, ([], None))[0])
        for r in filter_records(info, {"mean": ("mean",), "max": ("max",)}):
            f = r["filter"]
            for key in ("mean", "max"):
                if _number(r[key]) is not None:
                    put(layer, f, key, fmt(float(r[key])))
            if layer in dead:
                put(layer, f, "dead", "yes" if f in d else "no")


def _classnorms_numbers(doc: dict[str, Any], classes: list[str], put) -> None:
    fields = {"selectivity": ("selectivity",), "preferred": ("preferred_class",), "means": ("class_means",)}
    for layer, info in layers_of(doc).items():
        for r in filter_records(info, fields):
            if _number(r["selectivity"]) is not None:
                put(layer, r["filter"], "selectivity", fmt(float(r["selectivity"])))
            pref, means = r["preferred"], r["means"]
            if pref is None and isinstance(means, list) and any(_number(v) is not None for v in means):
                pref = max((i for i, v in enumerate(means) if _number(v) is not None), key=means.__getitem__)
            if pref is not None:
                put(layer, r["filter"], "top_class", class_name(classes, pref))


def _ablate_numbers(doc: dict[str, Any], put) -> None:
    ranks = doc.get("rank") if isinstance(doc.get("rank"), dict) else {}
    for layer, r in ranks.items():
        drops = r.get("drop") if isinstance(r, dict) else None
        for f, v in enumerate(drops if isinstance(drops, list) else []):
            if _number(v) is not None:
                put(str(layer), f, "ablation_drop", f"{100 * v:.2f} points")


def numbers(analyses: list[Analysis], classes: list[str] | None = None) -> dict[str, dict[str, dict[str, str]]]:
    """``{layer: {filter: {key: text}}}``: each filter's selectivity and top class (classnorms),
    accuracy drop when silenced (ablate), dead flag, mean and max response (stats), as text."""
    out: dict[str, dict[str, dict[str, str]]] = {}

    def put(layer: str, f: Any, key: str, text: str) -> None:
        if isinstance(f, int) and not isinstance(f, bool):
            out.setdefault(layer, {}).setdefault(str(f), {})[key] = text

    for a in analyses:
        try:
            if a.name == "stats":
                _stats_numbers(a.doc, put)
            elif a.name == "classnorms":
                _classnorms_numbers(a.doc, classes or [], put)
            elif a.name == "ablate":
                _ablate_numbers(a.doc, put)
        except Exception:  # numbers in another layout: the panels still show
            continue
    return out


def found_figures(run_dir: Path, analyses: list[Analysis], pending: bool = False) -> dict[tuple[str, int, str], Any]:
    """``{(layer, filter, kind): (path, caption, drawn)}``: every per-filter figure of the run
    folder; with ``pending`` also those listed to be drawn when first needed whose file is not
    there yet (``drawn`` False), which the layer pages of a large network name."""
    run_dir = Path(run_dir)
    found: dict[tuple[str, int, str], tuple[Path, str, bool]] = {}
    for a in analyses:
        for e in figure_entries(a.doc):
            key = per_filter_key(e, a.name)
            p = run_dir / e["path"]
            if key is None or key in found:
                continue
            if p.is_file():
                found[key] = (p, str(e.get("caption") or ""), True)
            elif pending and e.get("pending"):
                found[key] = (p, str(e.get("caption") or ""), False)
    folder = Layout(run_dir).analysis_dir
    for p in sorted(folder.glob("*/*/f*.png")) if folder.is_dir() else []:
        key = per_filter_key({"path": p.relative_to(run_dir).as_posix()}, "")
        if key:
            found.setdefault(key, (p, "", True))
    return found


def kinds_of(found: dict[tuple[str, int, str], Any]) -> list[str]:
    """The kinds of panel present, in the order a person reads a filter."""
    return sorted(
        {k for _, _, k in found}, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k)
    )


def layer_names(found: dict[tuple[str, int, str], Any], layer_order: list[str] | None) -> list[str]:
    order = {n: i for i, n in enumerate(layer_order or [])}
    return sorted({layer for layer, _, _ in found}, key=lambda n: _layer_key(n, order))


def collect(
    run_dir: Path, analyses: list[Analysis], layer_order: list[str] | None = None, classes: list[str] | None = None
) -> dict[str, Any] | None:
    """``{"kinds": [{key, label}], "layers": [{name, filters: [...]}], "numbers": [{key, label}],
    "values": {layer: {filter: {key: text}}}, "figures": {layer: {filter: {kind: {src, caption}}}}}``
    or None when the run folder has no per-filter figures."""
    found = found_figures(run_dir, analyses)
    if not found:
        return None
    figures: dict[str, dict[str, dict[str, Any]]] = {}
    for (layer, idx, kind), (path, caption, _) in found.items():
        figures.setdefault(layer, {}).setdefault(str(idx), {})[kind] = {
            "src": image_src(path),
            "caption": caption or f"{layer} filter {idx}: {_label(kind)}",
        }
    layers = [
        {"name": name, "filters": sorted(int(i) for i in figures[name])} for name in layer_names(found, layer_order)
    ]
    values = numbers(analyses, classes)
    return {
        "kinds": [{"key": k, "label": _label(k)} for k in kinds_of(found)],
        "layers": layers,
        "numbers": number_labels(values),
        "values": {layer: values[layer] for layer in figures if layer in values},
        "figures": pack(figures),
    }


def number_labels(values: dict[str, dict[str, dict[str, str]]]) -> list[dict[str, str]]:
    """``[{key, label}]`` of the numbers some filter has, in the order they are shown."""
    present = {k for per in values.values() for rec in per.values() for k in rec}
    return [{"key": k, "label": label} for k, label in NUMBER_LABELS if k in present]


def label(kind: str) -> str:
    """A panel kind as the page names it."""
    return _label(kind)


F = "{f}"  # where a pattern takes the filter's number


def pack(figures: dict[str, dict[str, dict[str, dict[str, str]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{layer: {filter: {kind: {src, caption}}}}`` as ``{layer: {kind: {"src": pattern,
    "caption": pattern, "filters": [...], "other": {filter: {src, caption}}}}}``: the figures that
    follow the first one's pattern (its number in ``f<n>`` of the file and ``filter <n>`` of the
    caption replaced by ``{f}``) are listed by number only; :func:`unpack` undoes it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for layer, per in figures.items():
        for idx in sorted(per, key=int):
            for kind, fig in per[idx].items():
                src, cap = fig["src"], fig["caption"]
                pattern = None
                if F not in src and F not in cap and f"/f{idx}." in src:
                    pattern = (src.replace(f"/f{idx}.", f"/f{F}.", 1), cap.replace(f"filter {idx}", f"filter {F}"))
                entry = out.setdefault(layer, {}).setdefault(kind, {})
                if pattern is not None and "src" not in entry:
                    entry.update(src=pattern[0], caption=pattern[1], filters=[])
                if pattern is not None and (entry["src"], entry["caption"]) == pattern:
                    entry["filters"].append(int(idx))
                else:
                    entry.setdefault("other", {})[idx] = fig
    return out


def unpack(packed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """The figures of :func:`pack` by layer, filter and kind again (what the page's script reads)."""
    out: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for layer, kinds in packed.items():
        for kind, e in kinds.items():
            for f in e.get("filters", []):
                fig = {"src": e["src"].replace(F, str(f)), "caption": e["caption"].replace(F, str(f))}
                out.setdefault(layer, {}).setdefault(str(f), {})[kind] = fig
            for f, fig in e.get("other", {}).items():
                out.setdefault(layer, {}).setdefault(str(f), {})[kind] = fig
    return out
