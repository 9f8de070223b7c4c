"""The comparison folder: ``compare.json``, its figures, and ``compare.html`` showing them."""

from __future__ import annotations

import os
import time
import urllib.parse
from html import escape
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import plots
from ..report.html import Figure, Section, Table, figure, fmt, linked_images, pct, render_page
from ..run import Run
from ..run.layout import CompareLayout, Layout
from ..utils import atomic_write_text, write_json
from .diff import compare_pair, run_numbers

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


class Comparison(dict):
    """The ``compare.json`` document of :func:`compare_runs`; a notebook shows it as the runs'
    numbers side by side, their learning curves, and the path of the full page."""

    def __init__(self, doc: dict[str, Any], html_path: Path):
        super().__init__(doc)
        self.html_path = Path(html_path)

    def _repr_html_(self) -> str:
        from ..report.html import data_uri

        rows = "".join(
            f"<tr><td>{escape(label)}</td>"
            + "".join(f"<td style='text-align:right'>{escape(v)}</td>" for v in vals)
            + "</tr>"
            for label, vals in _run_rows(self)
        )
        head = "".join(f"<th>{escape(h)}</th>" for h in ["run", *RUN_COLUMNS])
        curves = self.html_path.parent / self["curves"]
        img = f"<img src='{data_uri(curves)}' style='max-width:100%'>" if curves.is_file() else ""
        return (
            f"<div><table><tr>{head}</tr>{rows}</table>{img}"
            f"<p>every difference: <code>{escape(str(self.html_path))}</code></p></div>"
        )


def compare_runs(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    cka_images: int = 500,
    cka: bool = True,
    echo: Callable[[str], None] = lambda s: None,
) -> Comparison:
    """Compare every run with the first: writes ``compare.json``, figures and ``compare.html``
    into ``out``; returns the JSON document (shown as a table in a notebook). ``cka_images``: how
    many test images linear CKA compares the layers on; ``echo`` hears each step as it starts."""
    runs = [Run(p) for p in paths]
    labels = _labels(runs)
    layout = CompareLayout(out)
    layout.path.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i, r in enumerate(runs[1:], 1):
        t0 = time.perf_counter()
        what = f"linear CKA on {cka_images:,} test images" if cka else "no CKA"
        echo(
            f"comparing {labels[i]} with {labels[0]} ({i} of {len(runs) - 1}): config, metrics, classes, "
            f"filters, {what}"
        )
        pairs.append(compare_pair(runs[0], r, images=cka_images, cka=cka))
        echo(f"  {time.perf_counter() - t0:.1f} s")
    echo(f"drawing the figures into {layout.path}")
    _figures(layout, labels, pairs)
    doc = {
        "runs": [str(r.path) for r in runs],
        "labels": labels,
        "reference": labels[0],
        "numbers": [run_numbers(r) for r in runs],
        "curves": overlaid_curves(runs, labels, layout.figure("curves")).name,
        "pairs": pairs,
    }
    write_json(layout.json, doc)
    with linked_images(layout.html):
        atomic_write_text(layout.html, render(doc, layout.html))
    return Comparison(doc, layout.html)


def _labels(runs: Sequence[Run]) -> list[str]:
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return names


# ----------------------------------------------------------------------------------------------
# the page: the report's template, sections of tables and figures

RUN_COLUMNS = ["test accuracy", "best validation accuracy", "final train accuracy", "epochs", "parameters"]
ACCURACIES = {"test_acc", "best_val_acc", "final_train_acc"}
METRIC_NAMES = {
    "test_acc": "test accuracy",
    "best_val_acc": "best validation accuracy",
    "final_train_acc": "final train accuracy",
    "test_loss": "test loss",
    "epochs": "epochs",
    "params": "parameters",
}


def _run_rows(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for label, n in zip(doc["labels"], doc.get("numbers") or [{}] * len(doc["labels"])):
        out.append(
            (
                label,
                [pct(n.get("test_acc")), pct(n.get("best_val_acc")), pct(n.get("final_train_acc"))]
                + [fmt(n.get("epochs")), fmt(n.get("params"))],
            )
        )
    return out


def _value(key: str, v: Any) -> Any:
    return pct(v) if key in ACCURACIES and v is not None else v


def _change(key: str, v: Any) -> Any:
    """A change: accuracies in signed percentage points (red when the run is worse), else the number."""
    if v is None:
        return ""
    if key in ACCURACIES:
        return {"text": f"{100 * v:+.2f} points", "cls": "num bad" if v < -0.005 else "num"}
    return f"{v:+,}" if isinstance(v, int) else f"{v:+.4g}"


def _report_link(page: Path, run: str) -> dict[str, Any]:
    """A cell linking a run's report (else its folder), relative to the comparison page."""
    target = Layout(run).report_file
    if not target.is_file():
        target = Path(run)
    return {
        "text": Path(run).name,
        "href": urllib.parse.quote(Path(os.path.relpath(target.resolve(), page.parent)).as_posix()),
    }


def _figure(page: Path, name: str | None, caption: str) -> list[Figure]:
    p = page.parent / name if name else None
    return [figure(p, caption, name)] if p is not None and p.is_file() else []


def _filters_table(layer: str, rows: list[dict[str, Any]], a: str, b: str) -> Table:
    """One layer's filters; a column no filter has a number in (selectivity of a layer classnorms
    skipped) is left out, and the note says so."""
    cols = [
        ("topk_overlap", "top-k images in common"),
        ("selectivity_a", f"selectivity {a}"),
        ("selectivity_b", f"selectivity {b}"),
        ("selectivity_delta", "selectivity change"),
    ]
    kept = [(k, h) for k, h in cols if any(r.get(k) is not None for r in rows)]
    body = [
        [r["filter"], *(pct(r[k]) if k == "topk_overlap" and r.get(k) is not None else r.get(k) for k, _ in kept)]
        for r in rows
    ]
    gone = [h for k, h in cols if (k, h) not in kept]
    caption = f"{layer}: {len(rows)} filters" + (f" (no {', '.join(gone)} for this layer)" if gone else "")
    return Table(["filter", *(h for _, h in kept)], body, caption, collapsed=len(rows) > 12)


def _pair_section(i: int, pair: dict[str, Any], a: str, b: str, page: Path) -> Section:
    figs = pair.get("figures", {})
    sec = Section(f"pair-{i}", f"{b} against {a}", f"Every change is {b} minus {a}.")
    cfg = pair["config"]
    if cfg:
        sec.tables.append(Table(["config key", a, b], [[r["key"], r["a"], r["b"]] for r in cfg], "Config differences"))
    else:
        sec.notes.append("the configs are the same")
    sec.tables.append(
        Table(
            ["metric", a, b, "change"],
            [
                [METRIC_NAMES.get(k, k), _value(k, v["a"]), _value(k, v["b"]), _change(k, v["delta"])]
                for k, v in pair["metrics"].items()
            ],
            "Metrics",
        )
    )
    if pair["classes"]:
        sec.figures += _figure(page, figs.get("class_deltas"), f"Per-class test accuracy: {b} minus {a} (points)")
        sec.figures += _figure(page, figs.get("confusion_diff"), f"Confusion matrix: {b} minus {a}")
    else:
        sec.notes.append("per-class results not compared: the runs were not evaluated on the same classes")
    cka = pair["cka"]
    if "skipped" in cka and isinstance(cka["skipped"], str):
        sec.notes.append(f"linear CKA not computed: {cka['skipped']}")
    else:
        sec.figures += _figure(page, figs.get("cka"), "Linear CKA per layer on the same test images (1: the same)")
        rows = [
            [r["layer"], r["cka"], "\u00d7".join(map(str, r["shape_a"])), "\u00d7".join(map(str, r["shape_b"]))]
            for r in cka["layers"]
        ]
        sec.tables.append(Table(["layer", "linear CKA", f"shape {a}", f"shape {b}"], rows, "Representations"))
        if cka["skipped"]:
            sec.tables.append(
                Table(["layer not compared", "why"], sorted(cka["skipped"].items()), "Layers not compared")
            )
    filt = pair["filters"]
    for layer, rows in filt["layers"].items():
        sec.tables.append(_filters_table(layer, rows, a, b))
    if filt.get("note"):
        sec.notes.append(filt["note"])
    return sec


def render(doc: dict[str, Any], page: Path) -> str:
    """compare.html, on the report's template: the runs (linked to their reports), the curves,
    and one section per run against the reference."""
    from .. import __version__

    labels = doc["labels"]
    runs = Section(
        "runs",
        "Runs",
        f"Changes below are against the first, {labels[0]}. A run's name opens its report.",
        tables=[
            Table(
                ["run", *RUN_COLUMNS, "folder"],
                [[_report_link(page, path), *vals, path] for path, (_, vals) in zip(doc["runs"], _run_rows(doc))],
                "The runs compared",
            )
        ],
    )
    runs.figures = _figure(
        page, doc["curves"], "Loss and accuracy per epoch: train dashed, validation solid, test dotted"
    )
    sections = [runs] + [_pair_section(i, p, labels[0], labels[i], page) for i, p in enumerate(doc["pairs"], 1)]
    return render_page(
        kind="compare",
        title=f"Comparison: {', '.join(labels)}",
        subtitle=str(page.parent),
        facts=[],
        headline=[(f"{label} test accuracy", vals[0] or "not evaluated") for label, vals in _run_rows(doc)],
        findings=None,
        sections=sections,
        browser=None,
        notes=[],
        alerts=[],
        generated=time.strftime("%Y-%m-%d %H:%M"),
        version=__version__,
    )
