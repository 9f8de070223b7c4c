"""Results that show themselves in a notebook.

Every analysis and explanation returns its JSON document (what it writes into the run folder) as
a :class:`Result`: a plain ``dict`` (so it compares, serialises and indexes as before) that a
notebook draws as a compact table of its key numbers and its first figure, and whose
:meth:`Result.plot` returns a matplotlib ``Figure``::

    result = TopK(k=5)(subject)     # a Result
    result["layers"]["conv1"]       # the same document as before
    result.plot()                   # its first figure, or a summary plot of its numbers
    RunCard(run)                    # a run folder: config, accuracy, training curves

With a run folder the figure shown is the first PNG the result lists (the file the report
embeds); without one (``Subject(model, split, classes)`` writes nothing) it is a summary plot
drawn from the numbers of the document itself. Text is HTML-escaped everywhere; figures are
embedded as base64 PNG, so a saved notebook is readable offline. No matplotlib global state is
touched: figures are :class:`NotebookFigure` objects that belong to no backend.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from .run import Run

# per-layer lists a summary plot prefers, in order: one value per filter
PREFERRED = ("active_fraction", "l2", "post_mean", "mean", "drop", "norm")
# top-level keys shown in the header rather than the table, or too long for it
HEADER = ("analysis", "params", "figures", "subset", "arrays", "images", "layers")
MAX_ROWS = 24


def _figure_class() -> type:
    from matplotlib.figure import Figure

    class NotebookFigure(Figure):
        """A matplotlib ``Figure`` that a notebook shows as a PNG without pyplot or a backend."""

        def _repr_png_(self) -> bytes:
            return png_bytes(self)

    return NotebookFigure


_FIGURE: type | None = None


def new_figure(**kw: Any) -> Any:
    """A :class:`NotebookFigure` (a plain ``matplotlib.figure.Figure`` that displays inline)."""
    global _FIGURE
    if _FIGURE is None:
        _FIGURE = _figure_class()
    return _FIGURE(**kw)


def png_bytes(fig: Any, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (rendered through the Agg canvas it creates; no backend is set)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}"/>'


def fmt(v: Any) -> str:
    """A short text for a table cell, numbers as the report writes them (thousands separated)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if 1000 <= abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items() if x is not None) or "defaults"
    if isinstance(v, (list, tuple)):
        text = ", ".join(fmt(x) for x in v[:8])
        return f"[{text}{', ...' if len(v) > 8 else ''}] ({len(v)})" if len(v) > 8 else f"[{text}]"
    return str(v)


def table(rows: Iterable[tuple[str, Any]]) -> str:
    """An HTML table of (name, value) rows, every string escaped."""
    cells = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{html.escape(str(k))}</th>'
        f'<td style="text-align:left">{html.escape(fmt(v))}</td></tr>'
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def numbers(v: Any) -> list[float] | None:
    """``v`` as a list of floats when it is a non-empty list of numbers (None for a missing value)."""
    if not isinstance(v, list) or not v or isinstance(v[0], bool):
        return None
    if not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in v):
        return None
    return [float("nan") if x is None else float(x) for x in v]


class Result(dict):
    """An analysis' or explanation's JSON document; ``root`` is the run folder it was written
    into (``None`` when nothing was written)."""

    def __init__(self, doc: dict[str, Any], root: str | Path | None = None):
        super().__init__(doc)
        self.root = Path(root) if root is not None else None

    @property
    def name(self) -> str:
        return str(self.get("analysis", "result"))

    # -- the key numbers --------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, Any]]:
        """(name, value) rows: where it came from, its options, its scalars and its own summary lines."""
        out: list[tuple[str, Any]] = []
        if isinstance(self.get("params"), dict):
            out.append(("options", self["params"]))
        for k, v in self.items():
            if k not in HEADER and isinstance(v, (str, int, float, bool)):
                out.append((k, v))
        for k in ("per_class_accuracy",):
            if numbers(self.get(k)):
                out.append((k, self[k]))
        out += [("", line) for line in self.lines()]
        figures = self.get("figures") or []
        if figures:
            out.append(("figures", f"{len(figures)} (first: {figures[0].get('path', '')})"))
        return out[:MAX_ROWS]

    def lines(self) -> list[str]:
        """The analysis' own terminal summary (``convlens analyze`` prints the same lines)."""
        from .analyses.base import ANALYSES

        cls = ANALYSES.get(self.name)
        return list(cls().lines(self)) if cls is not None else []

    # -- the figure -------------------------------------------------------------------------------
    def figure_file(self) -> Path | None:
        """The first figure file the document lists, when the run folder holds it; a per-filter
        figure listed to be drawn when first needed is drawn now (see :mod:`convlens.analyses.perfilter`)."""
        for entry in self.get("figures") or []:
            if self.root is not None and isinstance(entry, dict) and entry.get("path"):
                p = self.root / entry["path"]
                if p.suffix == ".png" and not p.is_file() and entry.get("pending"):
                    from .analyses.perfilter import draw_pending

                    try:
                        draw_pending(self.root, [{**self, "figures": [entry]}])
                    except (OSError, KeyError, IndexError, ValueError):  # what it is drawn from is gone
                        continue
                if p.suffix == ".png" and p.is_file():
                    return p
        return None

    def plot(self) -> Any:
        """A ``Figure``: the first figure file of the run folder, else a summary of the numbers."""
        p = self.figure_file()
        if p is not None:
            return file_figure(p, (self.get("figures") or [{}])[0].get("caption", ""))
        return summary_figure(self.name, self)

    def _repr_html_(self) -> str:
        p = self.figure_file()
        png = p.read_bytes() if p is not None else png_bytes(self.plot())
        where = f" in {self.root}" if self.root is not None else " (not written: no run folder)"
        head = f"<b>{html.escape(self.name)}</b>{html.escape(where)}"
        return f"<div>{head}{table(self.rows())}{img_tag(png, self.name)}</div>"

    def __repr__(self) -> str:
        return f"Result({self.name!r}, {len(self)} keys, root={str(self.root) if self.root else None!r})"


class Results(dict):
    """``{name: Result}`` of several analyses (``analyze``); a notebook shows each in turn."""

    def _repr_html_(self) -> str:
        return "".join(v._repr_html_() if isinstance(v, Result) else table(v.items()) for v in self.values())


# ----------------------------------------------------------------------------------------------
# figures drawn from documents


def file_figure(path: Path, caption: str = "") -> Any:
    """A figure holding one PNG file of the run folder, at its own size."""
    from matplotlib.image import imread

    from .plots import STYLE

    img = imread(str(path))
    dpi = STYLE["figure.dpi"]
    fig = new_figure(figsize=(img.shape[1] / dpi, img.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, interpolation="nearest")
    ax.axis("off")
    ax.set_label(caption)
    return fig


def layer_series(doc: dict[str, Any], limit: int = 4) -> list[tuple[str, list[float]]]:
    """(title, one value per filter) for up to ``limit`` layers of a ``layers`` document."""
    out = []
    for layer, info in list((doc.get("layers") or {}).items()):
        if not isinstance(info, dict):
            continue
        keys = [k for k in PREFERRED if numbers(info.get(k))]
        if keys:
            out.append((f"{layer}: {keys[0]}", numbers(info[keys[0]])))
        if len(out) == limit:
            break
    return out


def summary_figure(name: str, doc: dict[str, Any]) -> Any:
    """A plot of a document's numbers: per-filter values of its layers, per-class accuracy and
    confusion, or (with no numbers to plot) its key numbers as text."""
    from matplotlib import rc_context

    from .plots import STYLE

    series = layer_series(doc)
    if numbers(doc.get("per_class_accuracy")):
        classes = doc.get("classes") or [str(i) for i in range(len(doc["per_class_accuracy"]))]
        series.append(("accuracy per class", [v * 100 for v in numbers(doc["per_class_accuracy"])], classes))
    confusion = doc.get("confusion") if isinstance(doc.get("confusion"), list) else None
    panels = len(series) + (confusion is not None)
    with rc_context(STYLE):
        fig = new_figure(figsize=(max(3.2, 3.2 * panels), 2.6))
        if not panels:
            return _text_figure(fig, name, doc)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for ax, s in zip(axes, series):
            _bars(ax, *s)
        if confusion is not None:
            im = axes[-1].imshow(confusion, cmap="Blues", interpolation="nearest")
            axes[-1].set(title="confusion", xlabel="predicted", ylabel="true")
            fig.colorbar(im, ax=axes[-1], fraction=0.05)
        fig.suptitle(name, x=0.0, ha="left")
    return fig


def _bars(ax: Any, title: str, values: Sequence[float], labels: Sequence[str] | None = None) -> None:
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_title(title)
    if labels is not None:
        ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=45, ha="right")
    else:
        ax.set_xlabel("filter")
    ax.grid(alpha=0.3, axis="y")


def _text_figure(fig: Any, name: str, doc: dict[str, Any]) -> Any:
    rows = [(k, v) for k, v in doc.items() if k not in HEADER and isinstance(v, (str, int, float, bool))]
    text = "\n".join(f"{k}: {fmt(v)}" for k, v in rows[:8]) or "no numbers to plot"
    fig.text(0.02, 0.95, f"{name}\n{text}", va="top", family="monospace")
    return fig


# ----------------------------------------------------------------------------------------------
# a run folder's summary card


def curves_figure(metrics: Sequence[dict[str, Any]], title: str = "") -> Any:
    """Loss and accuracy (train, validation) against epochs, from ``metrics.jsonl`` rows."""
    from matplotlib import rc_context

    from .plots import STYLE, epoch_axis

    with rc_context(STYLE):
        fig = new_figure(figsize=(6.4, 2.3))
        axes = fig.subplots(1, 2)
        for ax, key, scale in ((axes[0], "loss", 1), (axes[1], "acc", 100)):
            for side in ("train", "val"):
                pts = [(r["epoch"], r[f"{side}_{key}"]) for r in metrics if r.get(f"{side}_{key}") is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], marker="o", ms=3, label=side)
            ax.set(title="accuracy (%)" if key == "acc" else "loss")
            epoch_axis(ax)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        if title:
            fig.suptitle(title, x=0.0, ha="left")
    return fig


def run_rows(run: Any) -> list[tuple[str, Any]]:
    """The key facts of a run folder: config, status, accuracy, checkpoint."""
    import yaml

    cfg = yaml.safe_load(run.config_file.read_text()) or {}
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    opt = train.get("optimizer") or {}
    rows: list[tuple[str, Any]] = [
        ("status", run.status.get("status", "unknown")),
        ("data", data.get("name")),
        ("model", model.get("preset") or f"{len(model.get('layers') or [])} layers"),
        ("epochs", train.get("epochs")),
        ("batch size", train.get("batch_size")),
        ("optimizer", f"{opt.get('name', '')} lr {opt.get('lr', '')}".strip()),
    ]
    metrics = run.metrics()
    val = [r["val_acc"] for r in metrics if r.get("val_acc") is not None]
    if val:
        rows.append(("best validation accuracy", f"{100 * max(val):.2f}%"))
    ev = run.eval
    if ev:
        acc = f"{100 * ev['accuracy']:.2f}% of {fmt(ev.get('n'))} images"
        rows.append((f"{ev.get('split', 'test')} accuracy", acc))
        rows.append(("checkpoint", f"{ev.get('checkpoint')} (epoch {ev.get('checkpoint_epoch')})"))
    return [(k, v) for k, v in rows if v is not None]


def run_card(run: Any) -> str:
    """HTML: the run's name, its key facts and its training curves."""
    metrics = run.metrics()
    img = img_tag(png_bytes(curves_figure(metrics)), "training curves") if metrics else "<p>no epochs logged yet</p>"
    return f"<div><b>Run</b> {html.escape(str(run.path))}{table(run_rows(run))}{img}</div>"


class RunCard:
    """A run folder as a notebook shows it: its name, key facts and training curves
    (``RunCard(run)`` in a cell; ``RunCard(run).plot()`` returns the curves as a ``Figure``).
    Drawn here, from the folder's documents: :class:`~convlens.run.Run` itself only reads them."""

    def __init__(self, run: Run | str | Path):
        self.run = run if isinstance(run, Run) else Run(run)

    def __repr__(self) -> str:
        return f"RunCard({str(self.run.path)!r})"

    def plot(self) -> Any:
        """The training curves (loss and accuracy per epoch) as a matplotlib ``Figure``."""
        return curves_figure(self.run.metrics(), str(self.run.path.name))

    def _repr_html_(self) -> str:
        return run_card(self.run)
