"""One report section per artifact ``RUN/analysis/<name>[-<key>].json``, whatever wrote it.

Every analysis and explanation following the run-folder contract is shown generically: its
parameters (an option left at its default shows as "default"), the data split, its scalar results
and every figure in its ``"figures"`` list with its caption. Per-filter figures (entries with a
``"filter"``, or files named ``analysis/<name>/<layer>/f<index>[_<kind>].png``) go to the filter
browser; an analysis whose figures are all per filter (a deconvnet projection of chosen filters)
shows them in its section too. The analyses whose numbers people read as tables (filters, stats,
classnorms, topk, ablate, errors, the per-image explanations, actmax) also get a table renderer,
registered by name and written against the layout the analysis writes; renderers read the JSON
defensively, and if one cannot read a file the section still shows everything else with a note
saying what failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..run.layout import ANALYSIS_DIR, Layout
from ..run.schema import ArtifactDoc
from ..utils import read_json
from .html import Figure, Section, Table, figure, fmt, pct

# Sections appear in this order; analyses not listed follow alphabetically.
ORDER = [
    "filters",
    "featuremaps",
    "stats",
    "classnorms",
    "topk",
    "ablate",
    "errors",
    "occlusion",
    "actmax",
    "deconv",
    "guided",
    "saliency",
    "gradcam",
]
TITLES = {
    "filters": ("Filters", "The learned weights of the convolution filters."),
    "featuremaps": (
        "Feature maps",
        "Chosen images seen inside the network: each filter's output, before and after the activation.",
    ),
    "stats": (
        "Activation statistics",
        "Per filter over a data split: mean, spread, how often it is active, its maximum. "
        "A dead filter never activates.",
    ),
    "classnorms": (
        "Class-wise norms",
        "The average norm of each filter's feature map for every class. A filter whose norms vary a lot "
        "across classes is an \u201cexpert\u201d for the class it prefers.",
    ),
    "topk": (
        "Top-k images and patches",
        "The images that excite each filter most, the input patch (receptive field) behind the strongest "
        "response, and the classes of those images.",
    ),
    "ablate": (
        "Ablation",
        "Filters silenced and the model evaluated again: which classes lose accuracy, "
        "and how the confusion matrix changes.",
    ),
    "errors": (
        "Example classifications",
        "Test images with their predictions, and the mistakes the model made most confidently.",
    ),
    "occlusion": (
        "Occlusion",
        "A patch slid over each image: where covering it lowers the probability of the class is where the model looks.",
    ),
    "actmax": (
        "Activation maximisation",
        "Synthetic images optimised to excite one filter (its centre unit, shown at its receptive field) or "
        "class as much as possible, beside the top data-set patches of the same objective and their mean.",
    ),
    "deconv": ("Deconvnet", "The strongest activation of a filter projected back to pixels (Zeiler & Fergus)."),
    "guided": ("Guided backpropagation", "The input gradient with negative signals stopped at every ReLU."),
    "saliency": (
        "Saliency",
        "The gradient of the class score with respect to the input pixels (and its SmoothGrad average).",
    ),
    "gradcam": ("Grad-CAM", "Class-weighted feature maps of a convolution layer, upsampled onto the image."),
}

PER_FILTER = re.compile(
    rf"^{ANALYSIS_DIR}/(?P<name>[^/-]+)(?:-[^/]*)?/(?P<layer>[^/]+)/f(?P<filter>\d+)"
    r"(?:_(?P<kind>[A-Za-z0-9]+))?\.png$"
)
SKIP_KEYS = {
    "analysis",
    "params",
    "figures",
    "split",
    "layers",
    "version",
    "checkpoint",
    "checkpoint_epoch",
    "checkpoint_sha256",
}


@dataclass
class Analysis:
    name: str
    doc: ArtifactDoc
    path: Path

    @property
    def stem(self) -> str:
        """``<name>`` or ``<name>-<key>``: which artifact of the analysis this is."""
        return self.path.stem


def load_analyses(run_dir: Path) -> tuple[list[Analysis], list[str]]:
    """Every readable artifact JSON (in report order) and notes about unreadable ones."""
    found, notes = [], []
    for p in Layout(run_dir).artifacts():
        try:
            doc = read_json(p)
        except (ValueError, OSError) as exc:
            notes.append(f"{p.name} could not be read: {exc}")
            continue
        if not isinstance(doc, dict):
            notes.append(f"{p.name} is not a JSON object; skipped")
            continue
        found.append(Analysis(str(doc.get("analysis") or p.stem), doc, p))
    found, notes = _test_split_first(found, notes)
    rank = {n: i for i, n in enumerate(ORDER)}
    found.sort(key=lambda a: (rank.get(a.name, len(ORDER)), a.name, a.stem))
    return found, notes


def _test_split_first(found: list[Analysis], notes: list[str]) -> tuple[list[Analysis], list[str]]:
    """The report is about the test split: an analysis also run on another split (``analyze --split
    val``, keyed ``-split_val``) is listed in a note, not shown beside the test split's; one run on
    another split only is shown (its section says which split)."""
    on_test = {a.name for a in found if (a.doc.get("split") or "test") == "test"}
    shown, other = [], []
    for a in found:
        split = a.doc.get("split") or "test"
        (other if split != "test" and a.name in on_test else shown).append(a)
    for a in other:
        notes.append(
            f"{a.path.name} holds {a.name} on the {a.doc.get('split')} split; this report shows the test split's "
            f"(analysis/{a.name}.json and the keyed ones)"
        )
    return shown, notes


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
        group = str(e["layer"]) if isinstance(e.get("layer"), str) else ""
        figs.append(figure(p, str(e.get("caption") or Path(e["path"]).stem), e["path"], group))
    return figs


# ----------------------------------------------------------------------------------------------
# reading per-layer / per-filter numbers


def layers_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{layer: info}`` from an analysis' ``layers`` mapping (a list of records with ``layer`` is read too)."""
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
    """Per-filter records ``{"filter": i, field: value}`` from a layer's info: a list of per-filter
    dicts under ``filters`` (topk), or per-filter lists side by side (``mean: [...]``: stats,
    classnorms, filters). ``fields`` maps a record key to the JSON names it is read from."""
    recs = info.get("filters")
    if isinstance(recs, list) and recs and all(isinstance(r, dict) for r in recs):
        return [
            {"filter": int(r.get("filter", r.get("index", i))), **{k: _first(r, a) for k, a in fields.items()}}
            for i, r in enumerate(recs)
        ]
    n = info.get("channels")
    if not isinstance(n, int):
        lengths = [len(info[a]) for alts in fields.values() for a in alts if isinstance(info.get(a), list)]
        n = max(lengths) if lengths else 0
    return [{"filter": i, **{k: _first(info, a, i) for k, a in fields.items()}} for i in range(n)]


def class_name(classes: list[str], v: Any) -> str:
    """A class given by index (into the run's classes) or by name (as most analyses write it)."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(classes):
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


def filter_link(layer: str, idx: Any) -> Any:
    """A table cell that opens the filter in the browser."""
    return {"text": idx, "href": f"#fb={layer}/{idx}"} if isinstance(idx, int) and not isinstance(idx, bool) else idx


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def _pct(v: Any) -> Any:
    return pct(v) if _num(v) is not None else v


def _points(v: Any, bad_below: float | None = -0.005) -> Any:
    """A change of an accuracy as signed percentage points, red when it falls."""
    if _num(v) is None:
        return v
    v = round(v, 9) + 0.0  # no "-0.00" for a change that is zero up to rounding
    cls = (
        "num bad"
        if bad_below is not None and v < bad_below
        else ("num good" if bad_below is not None and v > -bad_below else "num")
    )
    return {"text": f"{100 * v:+.2f}", "cls": cls}


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if _num(x) is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


# ----------------------------------------------------------------------------------------------
# table renderers, one per analysis whose numbers people read as tables; each reads the layout
# its analysis writes (src/convlens/analyses/<name>.py, src/convlens/explain/outputs.py)

Renderer = Callable[[dict[str, Any], list[str]], list[Table]]
RENDERERS: dict[str, Renderer] = {}


def renderer(*names: str) -> Callable[[Renderer], Renderer]:
    def add(fn: Renderer) -> Renderer:
        for name in names:
            RENDERERS[name] = fn
        return fn

    return add


@renderer("filters")
def filters_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    summary, detail = [], []
    for layer, info in layers_of(doc).items():
        shape = info.get("shape")
        l2 = [v for v in info.get("l2") or [] if _num(v) is not None]
        summary.append(
            [
                layer,
                "\u00d7".join(map(str, shape)) if isinstance(shape, list) else shape,
                len(l2) or None,
                min(l2) if l2 else None,
                _median(l2),
                max(l2) if l2 else None,
                info.get("max_abs"),
            ]
        )
        for r in filter_records(
            info, {"l2": ("l2",), "l1": ("l1",), "min": ("min",), "max": ("max",), "bias": ("bias",)}
        ):
            detail.append([layer, filter_link(layer, r["filter"]), r["l2"], r["l1"], r["min"], r["max"], r["bias"]])
    tables = []
    if summary:
        tables.append(
            Table(
                [
                    "layer",
                    "weights (out \u00d7 in \u00d7 h \u00d7 w)",
                    "filters",
                    "smallest L2 norm",
                    "median",
                    "largest",
                    "largest |weight|",
                ],
                summary,
                "Weight norms per layer",
            )
        )
    if detail:
        tables.append(
            Table(
                ["layer", "filter", "L2 norm", "L1 norm", "min weight", "max weight", "bias"],
                detail,
                "Every filter",
                collapsed=True,
            )
        )
    return tables


@renderer("stats")
def stats_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    from .diagnose import dead_filters_by_layer

    dead = dead_filters_by_layer(doc)
    fields = {
        "mean": ("mean",),
        "std": ("std",),
        "max": ("max",),
        "active": ("active_fraction", "active"),
        "images": ("images_active",),
        "post_max": ("post_max",),
        "weight": ("weight_norm",),
    }
    summary, detail = [], []
    for layer, info in layers_of(doc).items():
        recs = filter_records(info, fields)
        d, n = dead.get(layer, ([], None))
        n = n or len(recs) or None
        reasons = info.get("dead_reasons") if isinstance(info.get("dead_reasons"), dict) else {}

        def why(i: int) -> str:
            r = reasons.get(str(i))
            return " and ".join(map(str, r)) if isinstance(r, list) else "dead"

        actives = [r["active"] for r in recs if _num(r["active"]) is not None]
        where = info.get("measured_at")
        where = f"{where.get('pre', '')} / {where.get('post', '')}" if isinstance(where, dict) else where
        summary.append(
            [
                layer,
                where,
                n,
                {"text": len(d), "cls": "bad" if d else "num"},
                ", ".join(f"{i} ({why(i)})" for i in d) or "none",
                pct(sum(actives) / len(actives)) if actives else "",
            ]
        )
        for r in recs:
            detail.append(
                [
                    layer,
                    filter_link(layer, r["filter"]),
                    r["mean"],
                    r["std"],
                    r["max"],
                    _pct(r["active"]),
                    _pct(r["images"]),
                    r["post_max"],
                    r["weight"],
                    {"text": why(r["filter"]), "cls": "bad"} if r["filter"] in d else "",
                ]
            )
    tables = []
    if summary:
        tables.append(
            Table(
                [
                    "layer",
                    "read at (before / after the activation)",
                    "filters",
                    "dead",
                    "dead filters",
                    "mean active fraction",
                ],
                summary,
                "Dead filters per layer",
            )
        )
    if detail:
        tables.append(
            Table(
                [
                    "layer",
                    "filter",
                    "mean",
                    "std",
                    "max",
                    "positions active",
                    "images active",
                    "max after activation",
                    "weight norm",
                    "dead",
                ],
                detail,
                "Per-filter statistics",
                collapsed=True,
            )
        )
    return tables


@renderer("classnorms")
def classnorms_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    layers = layers_of(doc)
    rows = []
    for r in doc.get("experts") if isinstance(doc.get("experts"), list) else []:
        if not isinstance(r, dict):
            continue
        layer, idx = str(r.get("layer", "")), r.get("filter")
        var = _first(layers.get(layer, {}), ("variance",), idx) if isinstance(idx, int) else None
        rows.append(
            [
                layer,
                filter_link(layer, idx),
                class_name(classes, r.get("class")),
                r.get("selectivity"),
                r.get("cv"),
                var,
            ]
        )
    tables = []
    if rows:
        tables.append(
            Table(
                [
                    "layer",
                    "filter",
                    "preferred class",
                    "selectivity index",
                    "coefficient of variation",
                    "variance across classes",
                ],
                rows,
                "The most class-selective (\u201cexpert\u201d) filters",
            )
        )
    fields = {
        "means": ("class_means",),
        "mean": ("mean",),
        "variance": ("variance",),
        "cv": ("cv",),
        "selectivity": ("selectivity",),
        "preferred": ("preferred_class",),
    }
    detail = []
    for layer, info in layers.items():
        quiet = set(info.get("quiet") or [])
        for r in filter_records(info, fields):
            pref = r["preferred"]
            if pref is None and isinstance(r["means"], list) and any(_num(v) is not None for v in r["means"]):
                pref = max((i for i, v in enumerate(r["means"]) if _num(v) is not None), key=r["means"].__getitem__)
            detail.append(
                [
                    layer,
                    filter_link(layer, r["filter"]),
                    class_name(classes, pref),
                    r["mean"],
                    r["variance"],
                    r["cv"],
                    r["selectivity"],
                    "nearly silent" if r["filter"] in quiet else "",
                ]
            )
    if detail:
        tables.append(
            Table(
                [
                    "layer",
                    "filter",
                    "preferred class",
                    "mean norm",
                    "variance across classes",
                    "coefficient of variation",
                    "selectivity index",
                    "",
                ],
                detail,
                "Every filter",
                collapsed=True,
            )
        )
    return tables


@renderer("topk")
def topk_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    fields = {"hist": ("class_histogram",), "mean": ("mean",), "max": ("max",)}
    rows, rfs = [], []
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    k = params.get("k")
    for layer, info in layers_of(doc).items():
        rf = info.get("receptive_field")
        if isinstance(rf, dict):
            rfs.append(
                [
                    layer,
                    info.get("measured_at"),
                    rf.get("size"),
                    rf.get("jump"),
                    "\u00d7".join(map(str, info.get("map_size") or [])),
                ]
            )
        for r in filter_records(info, fields):
            hist = histogram(r["hist"], classes)
            total = sum(c for _, c in hist)
            top = f"{hist[0][0]} ({hist[0][1]:.0f}/{total:.0f})" if hist else ""
            rest = ", ".join(f"{c} {n:.0f}" for c, n in hist[1:5])
            rows.append([layer, filter_link(layer, r["filter"]), top, rest, r["mean"], r["max"]])
    tables = []
    if rows:
        cap = f"Classes of each filter's top-{k} images" if k else "Classes of each filter's top images"
        tables.append(
            Table(
                ["layer", "filter", "most frequent class", "next classes", "mean response", "max response"],
                rows,
                cap,
                collapsed=len(rows) > 40,
            )
        )
    if rfs:
        tables.append(
            Table(
                ["layer", "read at", "receptive field (pixels)", "step between positions (pixels)", "map size"],
                rfs,
                "Receptive fields",
            )
        )
    return tables


@renderer("ablate")
def ablate_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    names = doc.get("classes") if isinstance(doc.get("classes"), list) else classes
    names = classes if len(classes) == len(names) else names  # the run's names win (they may have been renamed)
    s = doc.get("set") if isinstance(doc.get("set"), dict) else {}
    tables = [*_ablated_set_table(s), *_before_after_table(s, names), *_changed_table(s)]
    ranks = doc.get("rank") if isinstance(doc.get("rank"), dict) else {}
    for layer, r in ranks.items():
        if isinstance(r, dict) and isinstance(r.get("drop"), list):
            tables.append(_rank_table(layer, r, names))
    return tables


def _ablated_set_table(s: dict[str, Any]) -> list[Table]:
    """Which filters of which layers were silenced together (none or one table)."""
    which = s.get("filters")
    if not (isinstance(which, dict) and which):
        return []
    return [
        Table(
            ["layer", "filters silenced together", "chosen"],
            [[k, fmt(v), s.get("chosen_by", "")] for k, v in which.items()],
            "What was ablated",
        )
    ]


def _before_after_table(s: dict[str, Any], names: list[str]) -> list[Table]:
    """Per-class accuracy and prediction counts with the set silenced and without (none or one table)."""
    before, after = s.get("before"), s.get("after")
    pb = before.get("per_class_accuracy") if isinstance(before, dict) else None
    pa = after.get("per_class_accuracy") if isinstance(after, dict) else None
    if not (isinstance(pb, list) and isinstance(pa, list) and len(pb) == len(pa)):
        return []
    cb = before.get("prediction_counts") if isinstance(before.get("prediction_counts"), list) else []
    ca = after.get("prediction_counts") if isinstance(after.get("prediction_counts"), list) else []
    rows = []
    for i, (b, a) in enumerate(zip(pb, pa)):
        rows.append(
            [
                class_name(names, i),
                _pct(b),
                _pct(a),
                _points(a - b) if _num(a) is not None and _num(b) is not None else "",
                cb[i] if i < len(cb) else "",
                ca[i] if i < len(ca) else "",
            ]
        )
    ob, oa = before.get("accuracy"), after.get("accuracy")
    if _num(ob) is not None and _num(oa) is not None:
        rows.append([{"text": "all classes", "cls": "strong"}, pct(ob), pct(oa), _points(oa - ob), "", ""])
    return [
        Table(
            ["class", "accuracy before", "after", "difference (points)", "predicted before", "predicted after"],
            rows,
            "Per-class accuracy before and after",
        )
    ]


def _changed_table(s: dict[str, Any]) -> list[Table]:
    """How many images' predictions broke, got fixed or switched (none or one table)."""
    changed = s.get("changed")
    if not isinstance(changed, dict):
        return []
    counts = [
        [what, len(changed[key])]
        for key, what in (
            ("broken", "right before, wrong after"),
            ("fixed", "wrong before, right after"),
            ("switched", "wrong before and after, another class"),
        )
        if isinstance(changed.get(key), list)
    ]
    return [Table(["images whose prediction changed", "images"], counts)] if counts else []


def _worst_class(pcd: list[Any], f: int, names: list[str]) -> str:
    """The class that loses most accuracy without filter ``f``, with its loss in points; "" if none loses."""
    if not (f < len(pcd) and isinstance(pcd[f], list) and pcd[f]):
        return ""
    j = max(range(len(pcd[f])), key=lambda c: pcd[f][c] if _num(pcd[f][c]) is not None else float("-inf"))
    if _num(pcd[f][j]) is not None and pcd[f][j] > 0:
        return f"{class_name(names, j)} ({-100 * pcd[f][j]:+.1f})"
    return ""


def _rank_table(layer: str, r: dict[str, Any], names: list[str]) -> Table:
    """One layer's filters silenced one at a time, most accuracy carried first."""
    acc, drop = r.get("accuracy") or [], r["drop"]
    order = r.get("order") if isinstance(r.get("order"), list) else list(range(len(drop)))
    pcd = r.get("per_class_drop") if isinstance(r.get("per_class_drop"), list) else []
    rows = []
    for f in order:
        if not isinstance(f, int) or not 0 <= f < len(drop):
            continue
        acc_without = _pct(acc[f]) if f < len(acc) else ""
        rows.append([filter_link(layer, f), acc_without, _points(-drop[f]), _worst_class(pcd, f, names)])
    base = r.get("baseline")
    cap = f"{layer}: filters silenced one at a time, most accuracy carried first" + (
        f" (all filters: {pct(base)})" if _num(base) is not None else ""
    )
    return Table(
        ["filter", "accuracy without it", "change (points)", "class that loses most (points)"],
        rows,
        cap,
        collapsed=len(rows) > 20,
    )


@renderer("errors")
def errors_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    tables = []
    pairs = doc.get("confused_pairs")
    if isinstance(pairs, list) and pairs:
        rows = [
            [class_name(classes, p.get("true")), class_name(classes, p.get("predicted")), p.get("count")]
            for p in pairs
            if isinstance(p, dict)
        ]
        tables.append(Table(["true class", "taken for", "images"], rows, "Most confused pairs of classes"))
    mistakes = doc.get("mistakes")
    if isinstance(mistakes, list) and mistakes:
        rows = [
            [
                m.get("position"),
                class_name(classes, m.get("label")),
                class_name(classes, m.get("predicted")),
                _pct(m.get("confidence")),
                _pct(m.get("p_label")),
            ]
            for m in mistakes
            if isinstance(m, dict)
        ]
        tables.append(
            Table(
                ["image", "true class", "predicted", "probability of the prediction", "probability of the true class"],
                rows,
                "The most confident mistakes",
                collapsed=len(rows) > 10,
            )
        )
    return tables


def _name(classes: list[str], index: Any, name: Any) -> str:
    """The run's name for a class index, else the name the explanation recorded."""
    if isinstance(index, int) and 0 <= index < len(classes):
        return classes[index]
    return "" if name is None else str(name)


@renderer("occlusion", "saliency", "guided", "deconv", "gradcam")
def explained_images(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    """The images an explanation method looked at: class, prediction, and its per-image numbers."""
    images = [d for d in doc.get("images") or [] if isinstance(d, dict)]
    if not images:
        return []
    windows = sorted({k for d in images for k in (d.get("min_true_probability") or {})}, key=lambda k: (len(k), k))
    projections = []
    for d in images:
        for p in d.get("projections") or []:
            key = (str(p.get("layer")), p.get("filter"))
            if key not in projections:
                projections.append(key)
    cols = ["image", "class", "predicted", "probability of the prediction", "probability of the true class"]
    cols += [f"lowest p(true), {k}-pixel patch" for k in windows]
    cols += [f"{layer} filter {f}: strongest activation" for layer, f in projections]
    targets = any("target" in d for d in images)
    if targets:
        cols.append("explained class")
    rows = []
    for d in images:
        wrong = d.get("label") != d.get("predicted")
        row = [
            d.get("index"),
            _name(classes, d.get("label"), d.get("label_name")),
            {"text": _name(classes, d.get("predicted"), d.get("predicted_name")), "cls": "bad" if wrong else ""},
            _pct(d.get("probability")),
            _pct(d.get("true_probability")),
        ]
        low = d.get("min_true_probability") or {}
        row += [_pct(low.get(k)) for k in windows]
        acts = {(str(p.get("layer")), p.get("filter")): p.get("activation") for p in d.get("projections") or []}
        row += [acts.get(key) for key in projections]
        if targets:
            row.append(class_name(classes, d.get("target")))
        rows.append(row)
    split = doc.get("split") or "test"
    return [Table(cols, rows, f"The {split} images explained", collapsed=len(rows) > 12)]


@renderer("actmax")
def actmax_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    layer, kind = str(params.get("layer", "")), params.get("target_kind", "filter")
    rows = []
    for t in doc.get("targets") or []:
        if not isinstance(t, dict):
            continue
        idx = t.get("filter")
        first = class_name(classes, idx) if kind == "class" else filter_link(layer, idx)
        best = t.get("best_image") if isinstance(t.get("best_image"), dict) else {}
        state = (
            "dead"
            if t.get("dead")
            else "stuck at the grey start"
            if t.get("stuck")
            else "not converged"
            if t.get("converged") is False
            else ""
        )
        agrees = t.get("agrees_with_top")
        rows.append(
            [first, t.get("initial"), t.get("final"), best.get("value", ""), "" if agrees is None else agrees, state]
        )
    if not rows:
        return []
    head = "class" if kind == "class" else f"{layer} filter"
    return [
        Table(
            [
                head,
                "objective at the start",
                "objective at the end",
                "best data-set image",
                "correlation with top mean",
                "note",
            ],
            rows,
            f"Objective of each {kind} before and after the optimisation, the best value an image of "
            "the split reaches, and how well the picture correlates with the mean of its top data-set "
            "patches; dead: the objective never moved (the picture shows nothing)",
            collapsed=len(rows) > 16,
        )
    ]


# ----------------------------------------------------------------------------------------------


def scalar_items(doc: dict[str, Any], shown: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The analysis' top-level scalars, less those already shown with the same value (a parameter
    an analysis repeats next to its results)."""
    shown = shown or {}
    return [
        (k, fmt(v))
        for k, v in doc.items()
        if k not in SKIP_KEYS and isinstance(v, (str, int, float, bool)) and shown.get(k) != fmt(v)
    ]


# Sections that start folded: the filters' weights (a wall of small kernels per layer), and any
# section of more figures than this.
FOLDED = {"filters"}
FOLD_ABOVE = 12

# An analysis whose only figures are per filter (a deconvnet projection of chosen filters) shows up
# to this many of them in its own section as well as in the filter browser.
SECTION_FILTER_FIGURES = 24


def analysis_section(run_dir: Path, a: Analysis, classes: list[str], later: str = "") -> Section:
    """The section of one artifact. ``later``: how to draw its per-filter figures that are not
    there because they were not asked for yet (none given: a missing one could not be drawn)."""
    title, intro = TITLES.get(a.name, (a.name, ""))
    if a.stem != a.name:  # one of several artifacts of the analysis: say which
        title = f"{title} ({a.stem[len(a.name) + 1 :]})"
    sec = Section(id=f"analysis-{a.stem}", title=title, intro=intro, cls="analysis")
    params = a.doc.get("params")
    if isinstance(params, dict):  # None is an option left at its default
        sec.params = [(str(k), "default" if v is None else fmt(v)) for k, v in params.items()]
    if a.doc.get("split"):
        sec.params.insert(0, ("split", fmt(a.doc["split"])))
    sec.params += scalar_items(a.doc, dict(sec.params))
    fn = RENDERERS.get(a.name)
    if fn is not None:
        try:
            sec.tables = fn(a.doc, classes)
        except Exception as exc:  # a changed layout must not take the report down; say what failed
            sec.notes.append(
                f"the tables of {a.path.name} could not be read ({type(exc).__name__}: {exc}); "
                "its figures are shown below"
            )
    entries = figure_entries(a.doc)
    own, per = [], []
    for e in entries:
        (own if per_filter_key(e, a.name) is None else per).append(e)
    if per and not own:  # the per-filter figures are this analysis' result: show them here too (those drawn)
        own = [e for e in per if (run_dir / e["path"]).is_file() or not e.get("pending")][:SECTION_FILTER_FIGURES]
    sec.figures = embed(run_dir, own, sec.notes)
    # walls of kernels, and any section of many figures, start folded: nothing of them loads unseen
    sec.folded = a.name in FOLDED or len(sec.figures) > FOLD_ABOVE
    if per:
        layers = ", ".join(dict.fromkeys(str(k[0]) for k in (per_filter_key(e, a.name) for e in per) if k))
        shown = len([e for e in per if e in own])
        missing = len([e for e in per if not (run_dir / str(e.get("path"))).is_file()])
        sec.notes.append(
            f"{len(per)} per-filter figure{'s' if len(per) != 1 else ''} ({layers})"
            + (f", {shown} of them below" if shown else "")
            + (
                ": every one is in the filter browser"
                if not missing
                else f": {missing} are not drawn yet ({later}); the others are in the filter browser"
                if later
                else f": {missing} could not be drawn (see the note at the top); the others are in the filter browser"
            )
        )
    if not sec.figures and not sec.tables and not per:
        sec.notes.append(f"{a.path.name} lists no figures")
    return sec
