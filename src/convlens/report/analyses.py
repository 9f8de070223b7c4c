"""One report section per ``RUN/analysis/<name>.json``, whatever wrote it.

Every analysis following the run-folder contract is shown generically: its parameters, the data
split, its scalar results and every figure in its ``"figures"`` list with its caption. Per-filter
figures (``analysis/<name>/<layer>/f<index>[_<kind>].png``) go to the filter browser instead of
the section. Analyses whose numbers people read as tables (stats, classnorms, topk, ablate) also get
a table renderer, registered by name; renderers read the JSON defensively, and if one cannot read
a file the section still shows everything else with a note saying what failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..utils import read_json
from .html import Figure, Section, Table, data_uri, fmt, pct

# Sections appear in this order; analyses not listed follow alphabetically.
ORDER = ["filters", "featuremaps", "stats", "classnorms", "topk", "ablate", "errors",
         "occlusion", "actmax", "deconv", "guided", "saliency", "gradcam"]  # fmt: skip
TITLES = {
    "filters": ("Filters", "The learned weights of the convolution filters."),
    "featuremaps": ("Feature maps", "Chosen images seen inside the network: each filter's output, before and after the activation."),
    "stats": ("Activation statistics", "Per filter over a data split: mean, spread, how often it is active, its maximum. A dead filter never activates."),
    "classnorms": ("Class-wise norms", "The average norm of each filter's feature map for every class. A filter whose norms vary a lot across classes is an \u201cexpert\u201d for the class it prefers."),
    "topk": ("Top-k images and patches", "The images that excite each filter most, the input patch (receptive field) behind the strongest response, and the classes of those images."),
    "ablate": ("Ablation", "Filters silenced and the model evaluated again: which classes lose accuracy, and how the confusion matrix changes."),
    "errors": ("Example classifications", "Test images with their predictions, and the mistakes the model made most confidently."),
    "occlusion": ("Occlusion", "A patch slid over each image: where covering it lowers the probability of the class is where the model looks."),
    "actmax": ("Activation maximisation", "Synthetic images optimised to excite one filter or class as much as possible."),
    "deconv": ("Deconvnet", "The strongest activation of a filter projected back to pixels (Zeiler & Fergus)."),
    "guided": ("Guided backpropagation", "The input gradient with negative signals stopped at every ReLU."),
    "saliency": ("Saliency", "The gradient of the class score with respect to the input pixels (and its SmoothGrad average)."),
    "gradcam": ("Grad-CAM", "Class-weighted feature maps of a convolution layer, upsampled onto the image."),
}  # fmt: skip

PER_FILTER = re.compile(r"^analysis/(?P<name>[^/]+)/(?P<layer>[^/]+)/f(?P<filter>\d+)(?:_(?P<kind>[A-Za-z0-9]+))?\.png$")
SKIP_KEYS = {"analysis", "params", "figures", "split", "layers", "version"}


@dataclass
class Analysis:
    name: str
    doc: dict[str, Any]
    path: Path


def load_analyses(run_dir: Path) -> tuple[list[Analysis], list[str]]:
    """Every readable ``analysis/*.json`` (in report order) and notes about unreadable ones."""
    found, notes = [], []
    folder = Path(run_dir) / "analysis"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = read_json(p)
        except (ValueError, OSError) as exc:
            notes.append(f"{p.name} could not be read: {exc}")
            continue
        if not isinstance(doc, dict):
            notes.append(f"{p.name} is not a JSON object; skipped")
            continue
        found.append(Analysis(str(doc.get("analysis") or p.stem), doc, p))
    rank = {n: i for i, n in enumerate(ORDER)}
    found.sort(key=lambda a: (rank.get(a.name, len(ORDER)), a.name))
    return found, notes


def figure_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    figs = doc.get("figures")
    out = []
    for f in figs if isinstance(figs, list) else []:
        if isinstance(f, str):
            f = {"path": f}
        if isinstance(f, dict) and isinstance(f.get("path"), str):
            out.append(f)
    return out


def per_filter_key(entry: dict[str, Any], name: str) -> tuple[str, int, str] | None:
    """``(layer, filter, kind)`` of a per-filter figure, or None for a figure of the section."""
    m = PER_FILTER.match(entry["path"].replace("\\", "/"))
    if "layer" in entry and "filter" in entry and entry["filter"] is not None:
        try:
            idx = int(entry["filter"])
        except (TypeError, ValueError):
            return None
        kind = entry.get("kind") or (m.group("kind") if m else None)
        return str(entry["layer"]), idx, f"{name}_{kind}" if kind else name
    if m:
        kind = m.group("kind")
        return m.group("layer"), int(m.group("filter")), f"{m.group('name')}_{kind}" if kind else m.group("name")
    return None


def embed(run_dir: Path, entries: list[dict[str, Any]], notes: list[str]) -> list[Figure]:
    figs = []
    for e in entries:
        p = Path(run_dir) / e["path"]
        if not p.is_file():
            notes.append(f"figure {e['path']} is listed but missing")
            continue
        figs.append(Figure(data_uri(p), str(e.get("caption") or Path(e["path"]).stem), e["path"]))
    return figs


# ----------------------------------------------------------------------------------------------
# reading per-layer / per-filter numbers whatever their layout


def layers_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    layers = doc.get("layers")
    if isinstance(layers, list):
        return {str(r.get("layer", r.get("name", i))): r for i, r in enumerate(layers) if isinstance(r, dict)}
    if isinstance(layers, dict):
        return {str(k): v for k, v in layers.items() if isinstance(v, dict)}
    return {}


def _first(d: dict[str, Any], names: tuple[str, ...], i: int | None = None) -> Any:
    for n in names:
        if n in d:
            v = d[n]
            if i is None:
                return v
            if isinstance(v, list) and i < len(v):
                return v[i]
    return None


def filter_records(info: dict[str, Any], fields: dict[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """Per-filter records ``{"filter": i, field: value}`` from a layer's info: either a list of
    per-filter dicts under ``filters``, or parallel per-filter lists (``mean: [...]``)."""
    recs = info.get("filters")
    if isinstance(recs, list) and recs and all(isinstance(r, dict) for r in recs):
        return [{"filter": int(r.get("filter", r.get("index", i))), **{k: _first(r, a) for k, a in fields.items()}}
                for i, r in enumerate(recs)]  # fmt: skip
    lengths = [len(info[a]) for alts in fields.values() for a in alts if isinstance(info.get(a), list)]
    if not lengths:
        return []
    return [{"filter": i, **{k: _first(info, a, i) for k, a in fields.items()}} for i in range(max(lengths))]


def class_name(classes: list[str], v: Any) -> str:
    if isinstance(v, int) and 0 <= v < len(classes):
        return classes[v]
    return "" if v is None else str(v)


def histogram(v: Any, classes: list[str]) -> list[tuple[str, float]]:
    """A class histogram as (class, count) pairs, largest first, from a list or a mapping."""
    if isinstance(v, dict):
        pairs = [(str(k), float(c)) for k, c in v.items()]
    elif isinstance(v, list):
        pairs = [(class_name(classes, i), float(c)) for i, c in enumerate(v)]
    else:
        return []
    return sorted([p for p in pairs if p[1] > 0], key=lambda p: -p[1])


def filter_link(layer: str, idx: int) -> dict[str, Any]:
    """A table cell that opens the filter in the browser."""
    return {"text": idx, "href": f"#fb={layer}/{idx}"}


# ----------------------------------------------------------------------------------------------
# table renderers for the analyses people read as tables

Renderer = Callable[[dict[str, Any], list[str]], list[Table]]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str) -> Callable[[Renderer], Renderer]:
    def add(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn

    return add


@renderer("stats")
def stats_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    from .diagnose import dead_filters_by_layer

    dead = dead_filters_by_layer(doc)
    fields = {"mean": ("mean",), "std": ("std",), "active": ("active", "active_fraction", "frac_active", "fraction_active"),
              "max": ("max",), "dead": ("dead",)}  # fmt: skip
    summary, detail = [], []
    for layer, info in layers_of(doc).items():
        recs = filter_records(info, fields)
        d, n = dead.get(layer, ([], None))
        n = n or len(recs) or None
        actives = [r["active"] for r in recs if isinstance(r["active"], (int, float))]
        summary.append([layer, n, {"text": len(d), "cls": "bad" if d else "num"}, ", ".join(map(str, d)) or "none",
                        pct(sum(actives) / len(actives)) if actives else ""])  # fmt: skip
        for r in recs:
            is_dead = r["filter"] in d
            detail.append([layer, filter_link(layer, r["filter"]), r["mean"], r["std"],
                           pct(r["active"]) if isinstance(r["active"], (int, float)) else r["active"], r["max"],
                           {"text": "dead", "cls": "bad"} if is_dead else ""])  # fmt: skip
    tables = []
    if summary:
        tables.append(Table(["layer", "filters", "dead", "dead filters", "mean active fraction"], summary, "Dead filters per layer"))
    if detail:
        tables.append(Table(["layer", "filter", "mean", "std", "active", "max", ""], detail,
                            "Per-filter statistics", collapsed=True))  # fmt: skip
    return tables


@renderer("classnorms")
def classnorms_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    ranking = next((doc[k] for k in ("experts", "ranking", "selective", "top") if isinstance(doc.get(k), list)), [])
    tables = []
    rows = []
    for r in ranking[:25]:
        if not isinstance(r, dict):
            continue
        layer = str(r.get("layer", ""))
        idx = r.get("filter", r.get("index"))
        cls = class_name(classes, _first(r, ("class", "preferred", "preferred_class", "best_class", "top_class")))
        rows.append([layer, filter_link(layer, idx) if isinstance(idx, int) else idx, cls,
                     _first(r, ("selectivity", "selectivity_index")), _first(r, ("variance", "var"))])  # fmt: skip
    if rows:
        tables.append(Table(["layer", "filter", "preferred class", "selectivity", "variance across classes"], rows,
                            "The most class-selective (\u201cexpert\u201d) filters"))  # fmt: skip
    fields = {"norms": ("norms", "class_norms", "mean_norms"), "variance": ("variance", "var"),
              "selectivity": ("selectivity", "selectivity_index"), "preferred": ("preferred", "preferred_class", "best_class")}  # fmt: skip
    detail = []
    for layer, info in layers_of(doc).items():
        for r in filter_records(info, fields):
            pref = r["preferred"]
            if pref is None and isinstance(r["norms"], list) and r["norms"]:
                pref = max(range(len(r["norms"])), key=r["norms"].__getitem__)
            detail.append([layer, filter_link(layer, r["filter"]), class_name(classes, pref), r["variance"], r["selectivity"]])
    if detail:
        tables.append(Table(["layer", "filter", "preferred class", "variance", "selectivity"], detail,
                            "Every filter", collapsed=True))  # fmt: skip
    return tables


@renderer("topk")
def topk_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    fields = {"hist": ("class_histogram", "class_hist", "histogram", "classes", "hist"), "mean": ("mean", "mean_response"),
              "max": ("max", "max_response")}  # fmt: skip
    rows = []
    k = (doc.get("params") or {}).get("k") if isinstance(doc.get("params"), dict) else None
    rfs = []
    for layer, info in layers_of(doc).items():
        rf = info.get("receptive_field", info.get("rf"))
        rf = rf.get("size") if isinstance(rf, dict) else rf
        if rf is not None:
            rfs.append([layer, rf])
        for r in filter_records(info, fields):
            hist = histogram(r["hist"], classes)
            total = sum(c for _, c in hist)
            top = f"{hist[0][0]} ({hist[0][1]:.0f}/{total:.0f})" if hist else ""
            rest = ", ".join(f"{c} {n:.0f}" for c, n in hist[1:5])
            rows.append([layer, filter_link(layer, r["filter"]), top, rest, r["mean"], r["max"]])
    tables = []
    if rows:
        cap = f"Classes of each filter's top-{k} images" if k else "Classes of each filter's top images"
        tables.append(Table(["layer", "filter", "most frequent class", "next classes", "mean response", "max response"],
                            rows, cap, collapsed=len(rows) > 40))  # fmt: skip
    if rfs:
        tables.append(Table(["layer", "receptive field (pixels)"], rfs, "Receptive fields"))
    return tables


def _per_class(v: Any) -> list[float] | None:
    if isinstance(v, dict):
        v = _first(v, ("per_class_accuracy", "per_class", "accuracy_per_class"))
    return [float(x) for x in v] if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) else None


def _overall(v: Any) -> float | None:
    if isinstance(v, dict):
        v = v.get("accuracy")
    return float(v) if isinstance(v, (int, float)) else None


@renderer("ablate")
def ablate_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    before = doc.get("before", doc.get("baseline"))
    after = doc.get("after", doc.get("ablated"))
    pb = _per_class(before) or _per_class(doc.get("per_class_before"))
    pa = _per_class(after) or _per_class(doc.get("per_class_after"))
    tables = []
    which = _first(doc, ("filters", "ablated_filters"))
    if isinstance(which, (dict, list)) and which:
        items = which.items() if isinstance(which, dict) else [(str(w.get("layer", "")), w.get("filter", w.get("filters")))
                                                                for w in which if isinstance(w, dict)]  # fmt: skip
        tables.append(Table(["layer", "filters silenced"], [[k, fmt(v)] for k, v in items], "What was ablated"))
    if pb and pa and len(pb) == len(pa):
        rows = []
        for i, (b, a) in enumerate(zip(pb, pa)):
            d = a - b
            rows.append([class_name(classes, i), pct(b), pct(a),
                         {"text": f"{100 * d:+.2f}", "cls": "bad" if d < -0.005 else ("good" if d > 0.005 else "num")}])  # fmt: skip
        ob, oa = _overall(before), _overall(after)
        if ob is not None and oa is not None:
            rows.append([{"text": "all classes", "cls": "strong"}, pct(ob), pct(oa),
                         {"text": f"{100 * (oa - ob):+.2f}", "cls": "bad" if oa < ob - 0.005 else "num"}])  # fmt: skip
        tables.append(Table(["class", "accuracy before", "after", "difference (points)"], rows, "Per-class accuracy before and after"))
    changed = doc.get("changed", doc.get("changed_images"))
    if isinstance(changed, list):
        tables.append(Table(["images whose prediction changed"], [[len(changed)]]))
    elif isinstance(changed, int):
        tables.append(Table(["images whose prediction changed"], [[changed]]))
    ranking = next((doc[k] for k in ("ranking", "single", "per_filter") if isinstance(doc.get(k), list)), None)
    if ranking:
        rows = []
        for r in ranking:
            if not isinstance(r, dict):
                continue
            layer = str(r.get("layer", ""))
            idx = r.get("filter")
            drop = _first(r, ("drop", "accuracy_drop", "delta"))
            rows.append([layer, filter_link(layer, idx) if isinstance(idx, int) else idx, _first(r, ("accuracy", "acc")),
                         f"{100 * drop:+.2f}" if isinstance(drop, (int, float)) else drop])  # fmt: skip
        tables.append(Table(["layer", "filter", "accuracy without it", "drop (points)"], rows,
                            "Filters ranked by the accuracy they carry", collapsed=len(rows) > 20))  # fmt: skip
    return tables


# ----------------------------------------------------------------------------------------------


def scalar_items(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, fmt(v)) for k, v in doc.items()
            if k not in SKIP_KEYS and isinstance(v, (str, int, float, bool)) and v is not None]  # fmt: skip


def analysis_section(run_dir: Path, a: Analysis, classes: list[str]) -> Section:
    title, intro = TITLES.get(a.name, (a.name, ""))
    sec = Section(id=f"analysis-{a.name}", title=title, intro=intro, cls="analysis")
    params = a.doc.get("params")
    if isinstance(params, dict):
        sec.params = [(str(k), fmt(v)) for k, v in params.items()]
    if a.doc.get("split"):
        sec.params.insert(0, ("split", fmt(a.doc["split"])))
    sec.params += scalar_items(a.doc)
    fn = RENDERERS.get(a.name)
    if fn is not None:
        try:
            sec.tables = fn(a.doc, classes)
        except Exception as exc:  # a changed layout must not take the report down; say what failed
            sec.notes.append(f"the tables of {a.path.name} could not be read ({type(exc).__name__}: {exc}); "
                             "its figures are shown below")  # fmt: skip
    entries = figure_entries(a.doc)
    own = [e for e in entries if per_filter_key(e, a.name) is None]
    n_filter = len(entries) - len(own)
    sec.figures = embed(run_dir, own, sec.notes)
    if n_filter:
        sec.notes.append(f"{n_filter} per-filter figures: see the filter browser")
    if not sec.figures and not sec.tables and not n_filter:
        sec.notes.append(f"{a.path.name} lists no figures")
    return sec
