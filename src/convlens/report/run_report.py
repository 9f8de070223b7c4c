"""The report of one run folder: the story of the run, from its config to what its filters do."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__, plots
from ..errors import ConvlensError, DamagedFileError
from ..explain.cli import METHOD_NAMES
from ..run import Run
from ..run.layout import Layout
from ..utils import atomic_write_text
from . import browser, pages
from . import concepts as _concepts  # noqa: F401  (registers the concept, atlas and faithfulness tables)
from .analyses import Analysis, analysis_section, load_analyses
from .checkpoints import Checkpoints, Provenance, mark, tag_captions
from .diagnose import diagnose
from .figures import FigureCache, draw_gallery, pick_examples, pick_mistakes, read_predictions
from .html import Section, Table, figure, fmt, linked_images, pct, render_page


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def headline(
    run: Run, rows: list[dict[str, Any]], summary: dict[str, Any] | None, evaluated: Provenance | None = None
) -> list[tuple[str, str]]:
    """The numbers a reader looks for first."""
    st = run.status
    items = [("status", str(st.get("status", "unknown")))]
    ev = run.eval
    if ev:
        # analyses compute in float32; a bf16 evaluation (eval.precision: train) says so
        precision = ev.get("precision")
        label = "test accuracy" if precision in (None, "float32") else f"test accuracy ({precision})"
        items.append((label, pct(ev.get("accuracy"))))
        if evaluated is not None:
            items.append(("checkpoint evaluated", evaluated.detail + (" (stale)" if evaluated.stale else "")))
        if _num(ev.get("loss")) is not None:
            items.append(("test loss", f"{ev['loss']:.4f}"))
    val = [(r["epoch"], r["val_acc"]) for r in rows if _num(r.get("val_acc")) is not None]
    if val:
        e, v = max(val, key=lambda x: x[1])
        items.append(("best validation accuracy", f"{pct(v)} (epoch {e})"))
    if rows:
        last = rows[-1]
        if _num(last.get("train_acc")) is not None:
            items.append(("final train accuracy", pct(last["train_acc"])))
        if _num(last.get("gap")) is not None:
            items.append(("train - validation gap", f"{100 * last['gap']:.1f} points"))
        secs = sum(_num(r.get("epoch_seconds")) or 0 for r in rows)
        items.append(("epochs", f"{rows[-1].get('epoch')} of {st.get('epochs', '?')}"))
        items.append(("training time", f"{secs:.1f} s ({secs / len(rows):.2f} s/epoch)"))
    if summary:
        items.append(("parameters", fmt(summary.get("params"))))
        items.append(("MACs per image", fmt(summary.get("macs"))))
    return items


def _config_facts(run: Run) -> list[tuple[str, str]]:
    try:
        c = run.config
    except Exception as exc:  # the report still shows what it can
        return [("config", f"unreadable: {exc}")]
    m, t, d = c.model, c.train, c.data
    model = m.preset or "custom layers"
    if m.options:
        model += " (" + ", ".join(f"{k}={v}" for k, v in m.options.items()) + ")"
    opt = t.optimizer
    return [
        ("name", c.name),
        ("data", d.name),
        ("model", model),
        (
            "optimizer",
            f"{opt.name}, lr {opt.lr:g}, weight decay {opt.weight_decay:g}"
            + (f", momentum {opt.momentum:g}" if opt.name == "sgd" else ""),
        ),
        ("schedule", t.schedule.name),
        ("epochs", str(t.epochs)),
        ("batch size", str(t.batch_size)),
        ("seed", str(c.seed)),
    ]


def training_section(
    run: Run, rows: list[dict[str, Any]], cache: FigureCache, ckpts: Checkpoints | None = None
) -> Section:
    sec = Section(
        "training",
        "Training",
        "Loss and accuracy on the training and validation splits, and the learning rate, per epoch.",
    )
    if not rows:
        sec.notes.append("metrics.jsonl has no complete epoch yet")
        return sec
    # the curves are every epoch's weights, no one checkpoint: say where the checkpoints sit on them
    saved = [f"{n} at epoch {i['checkpoint_epoch']}" for n in ("best", "last") if ckpts and (i := ckpts.current(n))]
    where = f"every epoch, not one checkpoint{'; checkpoints saved: ' + ', '.join(saved) if saved else ''}"
    p = cache.get("curves.png", [run.metrics_file], lambda out: plots.curves(rows, out))
    caption = f"Training curves: loss, accuracy (train and validation), learning rate ({where})"
    sec.figures.append(figure(p, caption, run.rel(p)))
    table = [
        [
            r.get("epoch"),
            r.get("train_loss"),
            pct(r.get("train_acc")),
            r.get("val_loss"),
            pct(r.get("val_acc")),
            r.get("lr"),
            r.get("epoch_seconds"),
        ]
        for r in rows
    ]
    sec.tables.append(
        Table(
            ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"],
            table,
            f"metrics.jsonl ({where})",
            collapsed=len(rows) > 12,
        )
    )
    return sec


def classes_section(run: Run, classes: list[str], cache: FigureCache) -> Section | None:
    ev = run.eval
    if not ev:
        return None
    split = ev.get("split", "test")
    sec = Section(
        "classes",
        "Per-class accuracy and confusion",
        f"On the {split} split ({fmt(ev.get('n'))} images, checkpoint {ev.get('checkpoint', '?')}"
        f"{', epoch ' + str(ev['epoch']) if isinstance(ev.get('epoch'), int) else ''}).",
    )
    names = list(ev.get("classes") or classes)
    acc = ev.get("per_class_accuracy") or []
    cm = ev.get("confusion") or []
    rows = []
    for i, name in enumerate(names):
        support = sum(cm[i]) if i < len(cm) else None
        worst = ""
        if i < len(cm):
            wrong = [(n, j) for j, n in enumerate(cm[i]) if j != i and n]
            if wrong:
                n, j = max(wrong)
                worst = f"{names[j]} ({n})"
        a = acc[i] if i < len(acc) else None
        rows.append(
            [
                name,
                {"text": pct(a), "cls": "bad" if a is not None and a < 0.5 * (ev.get("accuracy") or 0) else "num"},
                support,
                worst,
            ]
        )
    sec.tables.append(
        Table(
            ["class", "accuracy", "test images", "most often taken for"],
            rows,
            "Accuracy per class, and the class each is most often taken for",
        )
    )
    src = [run.eval_file]
    if acc:
        p = cache.get(
            "per_class.png",
            src,
            lambda out: plots.bars(
                [100 * a for a in acc], names, out, title="Per-class accuracy", ylabel="accuracy (%)", ylim=(0, 100)
            ),
        )
        sec.figures.append(figure(p, "Per-class accuracy", run.rel(p)))
    if cm:
        p = cache.get(
            "confusion.png",
            src,
            lambda out: plots.confusion(
                cm, names, out, normalize=True, title="Confusion matrix (counts; colour: share of the true class)"
            ),
        )
        sec.figures.append(figure(p, "Confusion matrix: rows are true classes, columns predictions", run.rel(p)))
    return sec


def examples_section(run: Run, classes: list[str], cache: FigureCache, errors: Analysis | None) -> Section | None:
    if errors is not None:  # the errors analysis made the gallery already
        sec = analysis_section(run.path, errors, classes)
        sec.id = "examples"
        return sec
    pred = run.predictions_file
    if not pred.is_file():
        return None
    sec = Section(
        "examples",
        "Example classifications",
        "Test images with the predicted class and its probability (green: right, red: wrong), and the "
        "mistakes the model made with the most confidence.",
    )
    rows = read_predictions(pred)
    sources = [pred] + ([run.examples_file] if run.examples_file.is_file() else [])
    examples, mistakes = pick_examples(rows), pick_mistakes(rows)
    data: dict[str, Any] = {}

    def images():
        # the test images evaluation stored in the run folder; a folder written before they were
        # stored falls back to the run's own split (as Run.load_data), never downloading anything
        if "test" not in data:
            kept = run.examples()
            wanted = {r["position"] for r in examples + mistakes}
            if kept is not None and wanted <= set(kept["indices"]):
                data["test"] = dict(zip(kept["indices"], kept["images"]))
            else:
                from ..data import load_data

                data["test"] = load_data(run.config.data.model_copy(update={"download": False})).test.images
        return data["test"]

    try:
        p = cache.get(
            "examples.png",
            sources,
            lambda out: draw_gallery(images(), examples, classes, out, "Example classifications", mistakes=False),
        )
        sec.figures.append(figure(p, "Evenly spaced test images: predicted class and probability", run.rel(p)))
        if mistakes:
            p = cache.get(
                "mistakes.png",
                sources,
                lambda out: draw_gallery(
                    images(), mistakes, classes, out, "Most confident mistakes (true \u2192 predicted)", mistakes=True
                ),
            )
            sec.figures.append(
                figure(p, "The most confident mistakes: true class \u2192 prediction, probability", run.rel(p))
            )
        else:
            sec.notes.append("no test image is misclassified")
    except ConvlensError as exc:
        sec.notes.append(f"the test images could not be loaded, so no gallery: {exc}")
    return sec


def model_section(run: Run, summary: dict[str, Any] | None) -> Section | None:
    if not summary or not isinstance(summary.get("layers"), list):
        return None
    rows = [
        [
            r.get("name"),
            r.get("type"),
            "\u00d7".join(map(str, r.get("output_shape") or [])),
            r.get("params"),
            r.get("macs"),
            r.get("receptive_field"),
        ]
        for r in summary["layers"]
    ]
    rows.append([{"text": "total", "cls": "strong"}, "", "", summary.get("params"), summary.get("macs"), ""])
    try:
        shape = "\u00d7".join(map(str, run.input_shape))
    except ConvlensError:
        shape = "?"
    return Section(
        "model",
        "Model",
        f"Input {shape}. Receptive field: the side of the input square one output position sees.",
        tables=[
            Table(
                ["layer", "type", "output shape", "parameters", "MACs", "receptive field"],
                rows,
                "Layers (summary.json): the architecture, the same for every checkpoint",
            )
        ],
    )


def config_section(run: Run) -> Section:
    return Section(
        "config",
        "Config",
        "The resolved config the run was trained with (config.yaml).",
        pre=run.config_file.read_text(encoding="utf-8"),
        params=_config_facts(run),
    )


def run_context(
    run: Run,
    echo: Callable[[str], None] = lambda s: None,
    checkpoint: str | None = None,
    out: Path | None = None,
    filter_figures: str = "auto",
) -> dict[str, Any]:
    """Everything the page shows for a run; figures of the report itself are drawn here if stale.

    ``checkpoint`` is the one the report is about (default: the one eval.json evaluated); every
    section says which checkpoint it shows, and one computed from other weights is marked.
    ``out``: where the page goes (default ``RUN/report.html``; a large network's layer pages go
    beside it, :mod:`.pages`); ``filter_figures``: which per-filter figures are drawn now (see
    :func:`draw_filter_figures`). ``"paged"`` holds the layer pages to write (None: the filter
    browser is on the page).
    """
    try:
        classes = run.classes
    except DamagedFileError:  # a dataset.json of the wrong shape: named, not papered over
        raise
    except ConvlensError:
        classes = list((run.eval or {}).get("classes", []))
    rows = run.metrics()
    summary = run.summary
    cache = FigureCache(run.report_dir, run.path)
    analyses, notes = load_analyses(run.path)
    ckpts = Checkpoints(run, checkpoint)
    evaluated = ckpts.of_eval()
    provenance = {a.stem: ckpts.of_analysis(a.name, a.doc, a.path) for a in analyses}
    for a in analyses:  # before the browser and the sections read the captions
        tag_captions(a.doc, provenance[a.stem])
    # drawn before the sections count which of their per-filter figures are there
    drawing = draw_filter_figures(run.path, analyses, echo, filter_figures)
    notes += drawing
    errors = next((a for a in analyses if a.name == "errors"), None)
    classes_sec = classes_section(run, classes, cache)
    examples_sec = examples_section(run, classes, cache, errors)
    # the gallery comes from the errors analysis, else from predictions.csv (written with eval.json);
    # an analysis' figure captions are tagged already
    for sec, prov, figures in (
        (classes_sec, evaluated, True),
        (examples_sec, provenance[errors.stem] if errors else evaluated, errors is None),
    ):
        if sec is not None and prov is not None:
            mark(sec, prov, figures)
    sections = [training_section(run, rows, cache, ckpts)]
    sections += [s for s in (classes_sec, examples_sec, model_section(run, summary)) if s is not None]
    failed = " ".join(drawing)  # an analysis whose figures failed to draw says so, not "not drawn yet"
    later = f"`convlens report {run.path} --filter-figures LAYER[,LAYER]` draws them"
    for a in analyses:
        if a is not errors:
            sec = analysis_section(run.path, a, classes, "" if f"{a.path.name}: " in failed else later)
            mark(sec, provenance[a.stem])
            sections.append(sec)
    alerts = [f"Test evaluation (eval.json): {x}" for x in evaluated.alerts] if evaluated is not None else []
    stale = [a.stem for a in analyses if provenance[a.stem].stale]
    if stale:
        explained = list(dict.fromkeys(a.name for a in analyses if provenance[a.stem].stale and a.name in METHOD_NAMES))
        also = f", and `convlens explain {run.path} --method M` for {', '.join(explained)}" if explained else ""
        alerts.append(
            f"{len(stale)} of {len(analyses)} analyses and explanations describe older weights than the "
            f"current checkpoints ({', '.join(stale)}); their sections say which epoch and how to refresh "
            f"them: `convlens analyze {run.path}`{also}."
        )
    layer_order = (
        [r["name"] for r in summary["layers"]] if summary and isinstance(summary.get("layers"), list) else None
    )
    found = browser.found_figures(run.path, analyses, pending=True)
    paged = pages.plan(out or run.report_file, found, analyses, layer_order, classes, str(run.path))
    if paged is not None:
        pages.move_filter_tables(sections, paged)
        fb = pages.summary(paged)
    else:
        fb = browser.collect(run.path, analyses, layer_order, classes)
    sections.append(config_section(run))
    cache.save()
    if cache.drawn:
        echo(f"drew {', '.join(cache.drawn)} into {cache.folder}")
    try:
        name = run.config.name
    except Exception:
        name = run.path.name
    return {
        "kind": "run",
        "title": f"{name}: {run.path.name}",
        "subtitle": str(run.path),
        "facts": _config_facts(run),
        "headline": headline(run, rows, summary, evaluated),
        "findings": [f.to_dict() for f in diagnose(run)],
        "sections": sections,
        "browser": fb,
        "paged": paged,
        "notes": notes,
        "alerts": alerts,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "version": __version__,
    }


# A run of more per-filter figures than this draws none of them unless asked (``filter_figures``):
# at about 40 ms a figure on a busy 2-core machine (benchmarks/bench_report_scale.py), 2,048 take
# under a minute and a half; a ResNet-18's five stage outputs have 4,096 (topk's two a filter, its
# weights, its class-wise norms).
AUTO_DRAW = 2048


def draw_filter_figures(root: Path, analyses: list[Any], echo: Callable[[str], None], which: str = "auto") -> list[str]:
    """Draw the per-filter figures the analyses listed to be drawn when first needed (once: the
    files stay in the run folder; see :mod:`convlens.analyses.perfilter`); notes on any that
    could not be drawn. ``which``: ``"auto"`` every one unless there are more than
    :data:`AUTO_DRAW` to draw (then none: the filter browser's pages say how), ``"all"``,
    ``"none"``, or layer names separated by commas (those layers' only)."""
    from ..analyses.perfilter import draw_pending, pending

    layers = _drawn_layers(root, analyses, which)
    if which == "none":
        return []
    if which == "auto":
        todo = sum(len(pending(a.doc, root)) for a in analyses)
        if todo > AUTO_DRAW:
            echo(
                f"{todo} per-filter figures are not drawn now (more than {AUTO_DRAW}); draw a layer's with "
                f"`convlens report {root} --filter-figures LAYER[,LAYER]`, or every one with `--filter-figures all`"
            )
            return []
    notes, drawn = [], 0
    for a in analyses:
        try:
            drawn += len(draw_pending(root, [a.doc], layers=layers))
        except ConvlensError as exc:  # says what is wrong and what to run
            notes.append(f"{a.path.name}: its per-filter figures could not be drawn: {exc}")
        except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
            notes.append(f"{a.path.name}: its per-filter figures could not be drawn ({type(exc).__name__}: {exc})")
    if drawn:
        echo(f"drew {drawn} per-filter figures into {Layout(root).analysis_dir}")
    return notes


def _drawn_layers(root: Path, analyses: list[Any], which: str) -> list[str] | None:
    """The layers ``which`` names (None: not a list of layers); an unknown one is an error that
    lists the layers with per-filter figures."""
    if which in ("auto", "all", "none"):
        return None
    from .analyses import figure_entries

    names = [n.strip() for n in which.split(",") if n.strip()]
    known = list(
        dict.fromkeys(
            str(e["layer"]) for a in analyses for e in figure_entries(a.doc) if "filter" in e and "layer" in e
        )
    )
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConvlensError(
            f"--filter-figures {which!r}: {', '.join(map(repr, unknown)) or 'no layer'} has no per-filter figures in "
            f"{root}; allowed: auto, all, none, or layers separated by commas: {', '.join(known) or 'none here'}"
        )
    return names


def build_run_report(
    run: Run | str | Path,
    out: str | Path | None = None,
    echo: Callable[[str], None] = lambda s: None,
    checkpoint: str | None = None,
    self_contained: bool = False,
    filter_figures: str = "auto",
) -> Path:
    """Write the run's ``report.html`` (default ``RUN/report.html``) and return its path: images
    linked from the run folder and loaded when looked at, or all embedded (``self_contained``).
    A network of more than :data:`.pages.PAGED_ABOVE` filters gets its filter browser on layer
    pages beside the page (``report-layers/``); ``filter_figures`` says which per-filter figures
    are drawn now (:func:`draw_filter_figures`)."""
    run = run if isinstance(run, Run) else Run(run)
    out = Path(out) if out else run.report_file
    with contextlib.nullcontext() if self_contained else linked_images(out):
        context = run_context(run, echo, checkpoint, out, filter_figures)
        html = render_page(**context)
    paged = context["paged"]
    if paged is not None:
        base = {
            "run_title": context["title"],
            "generated": context["generated"],
            "version": context["version"],
        }
        with contextlib.nullcontext() if self_contained else linked_images(out):
            written = pages.write_pages(paged, base)
        echo(f"wrote {len(written)} layer pages of the filter browser into {paged.folder}")
    atomic_write_text(out, html)
    return out
