"""The report of a sweep folder: every trial in one table, group-by tables, plots, and links to
each trial's own report.

A sweep folder holds its trials as ordinary run folders under ``trials/<n>/``, and may hold the
tables (CSV) and plots (PNG) that ``convlens sweep table`` writes. The per-trial table is always
built here from the trial folders themselves (so it links to each trial's report); the sweep's own
CSV tables and plots are shown as they are. A sweep without them gets group-by tables and a
learning-curve overlay computed here from the trial folders.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__, plots
from ..errors import RunError
from ..run import Layout, Run, is_run
from ..run.layout import REPORT_DIR
from ..utils import atomic_write_text
from .diagnose import diagnose
from .figures import FigureCache
from .html import Figure, Section, Table, figure, fmt, linked_images, pct, render_page
from .run_report import build_run_report

IGNORED_KEYS = ("meta.", "data.mean", "data.std", "name")
ACCURACY = re.compile(r"(^|_|\b)acc(uracy)?($|_|\b)", re.IGNORECASE)


def is_sweep(path: Path) -> bool:
    return (Path(path) / "trials").is_dir() and any(is_run(p) for p in (Path(path) / "trials").iterdir())


def trial_folders(path: Path) -> list[Path]:
    found = [p for p in (Path(path) / "trials").iterdir() if is_run(p)]
    return sorted(found, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def _trial_row(run: Run) -> dict[str, Any]:
    rows = run.metrics()
    val = [(r["epoch"], r["val_acc"]) for r in rows if isinstance(r.get("val_acc"), (int, float))]
    best_epoch, best = max(val, key=lambda x: x[1]) if val else (None, None)
    last = rows[-1] if rows else {}
    secs = [r["epoch_seconds"] for r in rows if isinstance(r.get("epoch_seconds"), (int, float))]
    summary = run.summary or {}
    ev = run.eval or {}
    findings = ", ".join(f.title.lower() for f in diagnose(run) if f.severity in ("problem", "warning"))
    return {
        "findings": findings,
        "status": run.status.get("status", "unknown"),
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "train_acc": last.get("train_acc"),
        "gap": last.get("gap"),
        "test_acc": ev.get("accuracy"),
        "params": summary.get("params"),
        "epochs": len(rows),
        "sec_per_epoch": sum(secs) / len(secs) if secs else None,
        "seconds": sum(secs) if secs else None,
        "curve": val,
    }


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def _order(v: Any) -> tuple[int, float, str]:
    """Numbers in numeric order, then everything else by its text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, fmt(v))


def _csv_table(path: Path, root: Path) -> Table | None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return None
    head, body = rows[0], rows[1:]

    def cell(v: str) -> Any:
        try:
            x = float(v)
        except ValueError:
            return v
        return int(x) if x.is_integer() and "." not in v and "e" not in v.lower() else x

    table = [[cell(v) for v in r] for r in body]
    # accuracies as the rest of the report shows them: percent, not fractions
    for j, name in enumerate(head):
        col = [r[j] for r in table if j < len(r) and r[j] != ""]
        if ACCURACY.search(name) and col and all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in col):
            for r in table:
                if j < len(r) and r[j] != "":
                    r[j] = pct(r[j])
    return Table(head, table, str(path.relative_to(root)), collapsed=len(body) > 30)


def _varying(configs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if not k.startswith(IGNORED_KEYS) and len({repr(c.get(k)) for c in configs}) > 1]


def _title(path: Path) -> str:
    """The sweep's own name (``name:`` of its sweep.yaml) and its folder's, as a run's report is titled."""
    import yaml

    folder = path.resolve().name
    try:
        name = (yaml.safe_load((path / "sweep.yaml").read_text(encoding="utf-8")) or {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    return f"Sweep {name}: {folder}" if name and str(name) != folder else f"Sweep {folder}"


def varied_keys(path: Path) -> list[str]:
    """The config keys the sweep's trials vary (what the learning curves can be coloured by)."""
    return _varying([_config(Run(t)) for t in trial_folders(path)])


def sweep_context(path: Path, out: Path, echo: Callable[[str], None], color_by: str | None = None) -> dict[str, Any]:
    trials = trial_folders(path)
    runs = [Run(t) for t in trials]
    data = [_trial_row(r) for r in runs]
    configs = [_config(r) for r in runs]
    varying = _varying(configs)
    if color_by is not None and color_by not in varying:
        raise RunError(f"color_by={color_by!r} is not a key the trials vary; allowed: {', '.join(varying) or 'none'}")

    # every trial's own report, linked from the table
    links = []
    for t, r in zip(trials, runs):
        rep = build_run_report(r, echo=echo)
        links.append(os.path.relpath(rep, out.parent).replace(os.sep, "/"))

    order = sorted(range(len(runs)), key=lambda i: -(_best(data[i])))
    sections = [_trials_section(trials, data, configs, varying, links, order)]
    own_csv = [
        p
        for p in sorted(path.rglob("*.csv"))
        if "trials" not in p.relative_to(path).parts[:1] and p.parts[-2] != REPORT_DIR
    ]
    tables = [t for t in (_csv_table(p, path) for p in own_csv) if t is not None]
    if tables:
        sections.append(Section("tables", "Tables", "The tables written by the sweep.", tables=tables))
    elif varying:
        sections.append(_groups_section(data, configs, varying))
    figs = _figures(path, trials, data, color_by)
    figs += _several_keys(path, trials, data, configs, varying, color_by)
    if figs:
        sections.append(Section("plots", "Plots", figures=figs))

    texts = [p for p in sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))]
    for p in texts:
        sections.append(Section(f"file-{p.stem}", p.name, pre=p.read_text(encoding="utf-8")))

    statuses: dict[str, int] = {}
    for d in data:
        statuses[d["status"]] = statuses.get(d["status"], 0) + 1
    best = order[0] if order and data[order[0]]["best_val_acc"] is not None else None
    headline = [("trials", str(len(runs))), ("status", ", ".join(f"{v} {k}" for k, v in statuses.items()))]
    if best is not None:
        headline.append(("best trial", f"{trials[best].name}: {pct(data[best]['best_val_acc'])} validation"))
    return {
        "kind": "sweep",
        "title": _title(path),
        "subtitle": str(path),
        "facts": [("varied", ", ".join(varying) or "nothing")],
        "headline": headline,
        "findings": None,
        "sections": sections,
        "browser": None,
        "notes": [],
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "version": __version__,
    }


def _config(run: Run) -> dict[str, Any]:
    try:
        return _flatten(run.config.to_dict())
    except Exception:
        return {}


def _best(d: dict[str, Any]) -> float:
    return d["best_val_acc"] if d["best_val_acc"] is not None else -1


def _trials_section(
    trials: list[Path],
    data: list[dict[str, Any]],
    configs: list[dict[str, Any]],
    varying: list[str],
    links: list[str],
    order: list[int],
) -> Section:
    rows = []
    for i in order:
        d = data[i]
        status = {"text": d["status"], "cls": "" if d["status"] == "finished" else "bad"}
        rows.append(
            [{"text": trials[i].name, "href": links[i]}, status]
            + [configs[i].get(k) for k in varying]
            + [
                pct(d["best_val_acc"]),
                d["best_epoch"],
                pct(d["train_acc"]),
                "" if d["gap"] is None else f"{100 * d['gap']:.1f}",
                pct(d["test_acc"]),
                d["params"],
                d["sec_per_epoch"],
                d["seconds"],
                {"text": d["findings"], "cls": "wide"},
            ]
        )
    head = [
        "trial",
        "status",
        *varying,
        "best val acc",
        "at epoch",
        "final train acc",
        "gap (points)",
        "test acc",
        "parameters",
        "s/epoch",
        "seconds",
        "diagnosis",
    ]
    return Section(
        "trials",
        "Trials",
        f"{len(trials)} trials, best validation accuracy first. The trial name opens its own report.",
        tables=[Table(head, rows)],
    )


def _groups_section(data: list[dict[str, Any]], configs: list[dict[str, Any]], varying: list[str]) -> Section:
    grouped = []
    for k in varying:
        groups: dict[str, list[int]] = {}
        for i in sorted(range(len(configs)), key=lambda i: _order(configs[i].get(k))):
            groups.setdefault(fmt(configs[i].get(k)), []).append(i)
        g_rows = []
        for v, idx in groups.items():
            accs = [data[i]["best_val_acc"] for i in idx if data[i]["best_val_acc"] is not None]
            tests = [data[i]["test_acc"] for i in idx if data[i]["test_acc"] is not None]
            m, s = _mean_std(accs) if accs else (None, None)
            g_rows.append(
                [
                    v,
                    len(idx),
                    pct(m),
                    f"{100 * s:.2f}" if len(accs) > 1 else "",
                    pct(sum(tests) / len(tests)) if tests else "",
                ]
            )
        grouped.append(Table([k, "trials", "mean best val acc", "std (points)", "mean test acc"], g_rows, f"By {k}"))
    return Section("groups", "Group-by tables", "Mean over the trials that share each value.", tables=grouped)


def _curves_name(key: str) -> str:
    return f"curves_by_{key.replace('.', '_')}.png"


def _figures(path: Path, trials: list[Path], data: list[dict[str, Any]], color_by: str | None = None) -> list[Figure]:
    """The sweep's own figures, or else the validation curves of every trial. With ``color_by``,
    the sweep's own curves coloured by another key are left out (the report draws the asked one)."""
    own_png = [p for p in sorted(path.rglob("*.png")) if p.relative_to(path).parts[0] not in ("trials", REPORT_DIR)]
    if color_by is not None:
        own_png = [p for p in own_png if not p.name.startswith("curves_by_") or p.name == _curves_name(color_by)]
    figs = [figure(p, p.stem.replace("_", " "), str(p.relative_to(path))) for p in own_png]
    if figs or not any(d["curve"] for d in data):
        return figs
    cache = FigureCache(Layout(path).report_dir, path)

    @plots.styled
    def draw(p: Path) -> None:
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.4))
        for t, d in zip(trials, data):
            if d["curve"]:
                x, y = zip(*d["curve"])
                ax.plot(x, [100 * v for v in y], label=t.name, lw=1.2, **plots.marker(len(x)))
        plots.epoch_axis(ax)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        if len(trials) <= 12:
            ax.legend(fontsize=plots.SMALL, ncol=2)
        plots.save(fig, p)

    p = cache.get("curves.png", [m for t in trials if (m := Layout(t).metrics_file).is_file()], draw)
    cache.save()
    return [figure(p, "Validation accuracy of every trial", p.relative_to(path).as_posix())]


def _several_keys(
    path: Path,
    trials: list[Path],
    data: list[dict[str, Any]],
    configs: list[dict[str, Any]],
    varying: list[str],
    color_by: str | None,
) -> list[Figure]:
    """Parallel coordinates and a two-key heatmap of the best validation accuracy (two or more
    varied keys), and the learning curves coloured by ``color_by`` (default: the first varied key),
    drawn from the trial folders unless the sweep's own plots already hold them."""
    from ..sweep import figures as sf

    own = {p.name for p in (path / "plots").glob("*.png")} if (path / "plots").is_dir() else set()
    if not varying:
        return []
    cache = FigureCache(Layout(path).report_dir, path)
    inputs = [m for t in trials if (m := Layout(t).metrics_file).is_file()]
    points = [{**c, "best_val_acc": d["best_val_acc"]} for c, d in zip(configs, data) if d["best_val_acc"] is not None]
    figs = []
    if len(varying) >= 2 and points and "parallel.png" not in own:
        p = cache.get(
            "parallel.png", inputs, lambda p: sf.parallel_coordinates(points, varying, "best_val_acc", p), varying
        )
        figs.append(
            figure(
                p,
                "Parallel coordinates: one line per trial, coloured by its best validation accuracy (last axis)",
                p.relative_to(path).as_posix(),
            )
        )
        kx, ky = varying[:2]
        p = cache.get("heatmap.png", inputs, lambda p: sf.two_key_heatmap(points, kx, ky, "best_val_acc", p), varying)
        figs.append(
            figure(
                p,
                f"Mean best validation accuracy for each pair of {kx} and {ky}",
                p.relative_to(path).as_posix(),
            )
        )
    key = color_by or varying[0]
    curves = [{"trial": i, "value": c.get(key), "points": d["curve"]} for i, (c, d) in enumerate(zip(configs, data))]
    curves = [c for c in curves if c["points"]]
    # the sweep's own curves (`sweep table`) are coloured by its first key: drawn again for another
    drawn = _curves_name(key) in own if color_by else any(n.startswith("curves_by_") for n in own)
    if curves and not drawn:
        name = _curves_name(key)
        p = cache.get(name, inputs, lambda p: sf.curves_by(curves, key, p), key)
        figs.append(figure(p, f"Validation accuracy of every trial, coloured by {key}", p.relative_to(path).as_posix()))
    cache.save()
    return figs


def build_sweep_report(
    path: str | Path,
    out: str | Path | None = None,
    echo: Callable[[str], None] = lambda s: None,
    color_by: str | None = None,
    self_contained: bool = False,
) -> Path:
    """The sweep's report; ``color_by`` names the varied config key the learning curves are
    coloured by (default: the first one); images linked, or embedded (``self_contained``)."""
    path = Path(path)
    if not is_sweep(path):
        raise RunError(f"{path} is not a sweep folder: it has no trials/<n>/ run folders")
    out = Path(out) if out else Layout(path).report_file
    with contextlib.nullcontext() if self_contained else linked_images(out):
        atomic_write_text(out, render_page(**sweep_context(path, out, echo, color_by)))
    return out
