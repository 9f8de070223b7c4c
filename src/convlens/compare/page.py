"""The comparison folder: ``compare.json``, its figures, and ``compare.html`` showing them."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from .. import plots
from ..run import Run
from ..run.layout import CompareLayout
from ..utils import atomic_write_text, write_json
from .diff import compare_pair

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


@plots.styled
def overlaid_curves(runs: Sequence[Run], labels: Sequence[str], path: Path) -> Path:
    """Loss and accuracy of every run against epochs: one colour per run, train dashed, validation
    solid, test (``eval.every_epoch``) dotted."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.2))
    fig.subplots_adjust(right=0.76, wspace=0.22)  # room for the legend right of the axes
    for i, (run, label) in enumerate(zip(runs, labels)):
        rows = run.metrics()
        for ax, what in zip(axes, ("loss", "acc")):
            for split, style in (("train", "--"), ("val", "-"), ("test", ":")):
                pts = [(r["epoch"], r[f"{split}_{what}"]) for r in rows if r.get(f"{split}_{what}") is not None]
                if pts:
                    x, y = zip(*pts)
                    y = [100 * v for v in y] if what == "acc" else y
                    colour = COLORS[i % len(COLORS)]
                    ax.plot(x, y, style, color=colour, label=f"{label} {split}", **plots.marker(len(x)))

    axes[0].set_title("loss")
    axes[1].set_title("accuracy (%)")
    for ax in axes:
        plots.epoch_axis(ax)
        ax.grid(alpha=0.3)
    # the legend beside the axes, at the figures' smallest text size, hides no curve
    axes[1].legend(fontsize=plots.SMALL, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return plots.save(fig, path)


@plots.styled
def cka_bars(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    return plots.bars([r["cka"] for r in rows], [r["layer"] for r in rows], path, title=title, ylabel="linear CKA")


@plots.styled
def class_delta_bars(per_class: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    values = [100 * r["delta"] for r in per_class]
    worse = [i for i, v in enumerate(values) if v < 0]
    return plots.bars(
        values, [r["class"] for r in per_class], path, title=title, ylabel="accuracy change (points)", highlight=worse
    )


def _figures(layout: CompareLayout, labels: list[str], pairs: list[dict[str, Any]]) -> None:
    for i, pair in enumerate(pairs, 1):
        figs = {}
        name = f"{labels[i]} vs {labels[0]}"
        if pair["classes"]:
            cls = pair["classes"]
            figs["confusion_diff"] = plots.styled(plots.confusion)(
                cls["confusion_diff"],
                cls["classes"],
                layout.figure(f"confusion_diff-{i}"),
                title=f"confusion: {name}",
                diverging=True,
            ).name
            figs["class_deltas"] = class_delta_bars(
                cls["per_class"], layout.figure(f"class_deltas-{i}"), f"per-class test accuracy: {name}"
            ).name
        rows = [r for r in pair["cka"].get("layers", []) if r["cka"] == r["cka"]]
        if rows:
            figs["cka"] = cka_bars(rows, layout.figure(f"cka-{i}"), f"linear CKA per layer: {name}").name
        pair["figures"] = figs


def compare_runs(
    paths: Sequence[str | Path], out: str | Path, *, images: int = 500, cka: bool = True
) -> dict[str, Any]:
    """Compare every run with the first: writes ``compare.json``, figures and ``compare.html``
    into ``out``; returns the JSON document."""
    runs = [Run(p) for p in paths]
    labels = _labels(runs)
    layout = CompareLayout(out)
    layout.path.mkdir(parents=True, exist_ok=True)
    pairs = [compare_pair(runs[0], r, images=images, cka=cka) for r in runs[1:]]
    _figures(layout, labels, pairs)
    doc = {
        "runs": [str(r.path) for r in runs],
        "labels": labels,
        "reference": labels[0],
        "curves": overlaid_curves(runs, labels, layout.figure("curves")).name,
        "pairs": pairs,
    }
    write_json(layout.json, doc)
    atomic_write_text(layout.html, render(doc))
    return doc


def _labels(runs: Sequence[Run]) -> list[str]:
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return names


# ----------------------------------------------------------------------------------------------
# HTML


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(name: str | None, alt: str) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">' if name else ""


def _pair_html(pair: dict[str, Any], a: str, b: str) -> str:
    parts = [f"<h2>{html.escape(b)} against {html.escape(a)}</h2>", "<h3>Config</h3>"]
    cfg = pair["config"]
    parts.append(_table(["key", a, b], [(r["key"], r["a"], r["b"]) for r in cfg]) if cfg else "<p>same config</p>")
    parts.append("<h3>Metrics</h3>")
    parts.append(
        _table(["metric", a, b, "change"], [(k, v["a"], v["b"], v["delta"]) for k, v in pair["metrics"].items()])
    )
    figs = pair.get("figures", {})
    if pair["classes"]:
        parts.append("<h3>Per class</h3>" + _img(figs.get("class_deltas"), "per-class change"))
        parts.append(_img(figs.get("confusion_diff"), "confusion difference"))
    else:
        parts.append("<p>per-class results not compared: the runs were not evaluated on the same classes</p>")
    parts.append("<h3>Representations (linear CKA on the same test images)</h3>")
    cka = pair["cka"]
    if "skipped" in cka and isinstance(cka["skipped"], str):
        parts.append(f"<p>not computed: {html.escape(cka['skipped'])}</p>")
    else:
        parts.append(_img(figs.get("cka"), "linear CKA per layer"))
        rows = [
            (r["layer"], r["cka"], "x".join(map(str, r["shape_a"])), "x".join(map(str, r["shape_b"])))
            for r in cka["layers"]
        ]
        parts.append(_table(["layer", "CKA", f"shape {a}", f"shape {b}"], rows))
        if cka["skipped"]:
            parts.append(_table(["layer not compared", "why"], sorted(cka["skipped"].items())))
    parts.append("<h3>Filters</h3>")
    filt = pair["filters"]
    for layer, rows in filt["layers"].items():
        keys = ["topk_overlap", "selectivity_a", "selectivity_b", "selectivity_delta"]
        parts.append(f"<h4>{html.escape(layer)}</h4>")
        parts.append(
            _table(
                ["filter", "top-k overlap", f"selectivity {a}", f"selectivity {b}", "change"],
                [(r["filter"], *(r.get(k) for k in keys)) for r in rows],
            )
        )
    if filt.get("note"):
        parts.append(f"<p>{html.escape(filt['note'])}</p>")
    return "\n".join(parts)


def render(doc: dict[str, Any]) -> str:
    labels = doc["labels"]
    body = [
        "<h1>Comparison</h1>",
        "<p>" + ", ".join(html.escape(p) for p in doc["runs"]) + f"; changes are against {html.escape(labels[0])}</p>",
        _img(doc["curves"], "learning curves"),
    ]
    body += [_pair_html(pair, labels[0], labels[i]) for i, pair in enumerate(doc["pairs"], 1)]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    )
    head = f"<meta charset='utf-8'><title>convlens compare</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
