"""Sweep figures: best validation accuracy against each swept key, and every trial's learning
curve overlaid. Drawn from the tables' rows and the run folders, with ``convlens.plots``."""

from __future__ import annotations

import json
from typing import Any

from ..plots import SMALL, epoch_axis, marker, pyplot, save, styled
from ..run import Layout, read_metrics
from .results import DONE, Results
from .trial import trial_dir


def draw(res: Results) -> list[dict[str, str]]:
    """Write ``plots/*.png`` into the sweep folder; returns ``[{path, caption}]`` (paths relative)."""
    figures = []
    if not any(r.get("best_val_acc") is not None for r in res.rows):
        return figures
    for p in res.sweep.params:
        rel = f"plots/acc_vs_{p.short.replace('.', '_')}.png"
        accuracy_vs(res.rows, p.short, res.out_dir / rel, title=f"{res.sweep.name}: {p.key}")
        figures.append(
            {
                "path": rel,
                "caption": f"Best validation accuracy of each trial against {p.key}; the "
                "line joins the means of trials that ran to the end, pruned trials are hollow.",
            }
        )
    figures += several_keys(res)
    curves = learning_curves(res)
    if curves:
        rel = "plots/curves.png"
        overlay(
            curves,
            res.out_dir / rel,
            title=f"{res.sweep.name}: validation accuracy of every trial",
            best=res.best["trial"] if res.best else None,
        )
        figures.append(
            {
                "path": rel,
                "caption": "Validation accuracy per epoch of every trial, overlaid; pruned "
                "trials dashed, the best trial highlighted.",
            }
        )
    return figures


def several_keys(res: Results) -> list[dict[str, str]]:
    """Parallel coordinates and the two-key heatmap (two or more swept keys), and the learning
    curves coloured by the first swept key."""
    figures = []
    keys = [p.short for p in res.sweep.params]
    points = [r for r in res.rows if r["status"] in DONE and r.get("best_val_acc") is not None]
    if len(keys) >= 2 and points:
        rel = "plots/parallel.png"
        parallel_coordinates(points, keys, "best_val_acc", res.out_dir / rel, title=res.sweep.name)
        figures.append(
            {
                "path": rel,
                "caption": "Parallel coordinates: one line per finished trial through its value of each swept key "
                "and its best validation accuracy (last axis), coloured by that accuracy.",
            }
        )
        rel = f"plots/heatmap_{keys[0].replace('.', '_')}_{keys[1].replace('.', '_')}.png"
        two_key_heatmap(points, keys[0], keys[1], "best_val_acc", res.out_dir / rel, title=res.sweep.name)
        figures.append(
            {
                "path": rel,
                "caption": f"Mean best validation accuracy of the finished trials for each pair of {keys[0]} "
                f"and {keys[1]}; blank cells had none.",
            }
        )
    value = {r["trial"]: r.get(keys[0]) for r in res.rows} if keys else {}
    curves = [{**c, "value": value.get(c["trial"])} for c in learning_curves(res)]
    if keys and curves:
        rel = f"plots/curves_by_{keys[0].replace('.', '_')}.png"
        curves_by(curves, keys[0], res.out_dir / rel, title=f"{res.sweep.name}: validation accuracy by {keys[0]}")
        figures.append(
            {"path": rel, "caption": f"Validation accuracy per epoch of every trial, coloured by {keys[0]}."}
        )
    return figures


def learning_curves(res: Results) -> list[dict[str, Any]]:
    """Per trial: epochs and validation accuracy, from its run folder, or else from what it
    reported to Optuna (a trial that ran on another machine)."""
    out = []
    for r in res.rows:
        rows = read_metrics(Layout(trial_dir(res.out_dir, r["trial"])).metrics_file)
        pts = [(m["epoch"], m["val_acc"]) for m in rows if m.get("val_acc") is not None]
        pts = pts or sorted(res.reported.get(r["trial"], {}).items())
        if pts:
            out.append({"trial": r["trial"], "status": r["status"], "points": pts})
    return out


def _label(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else str(v)


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


@styled
def accuracy_vs(rows: list[dict[str, Any]], key: str, path, title: str = ""):
    plt = pyplot()
    shown = [r for r in rows if r.get("best_val_acc") is not None and (r["status"] in DONE or r["status"] == "pruned")]
    values = [r[key] for r in shown]
    numeric = _numeric(values)
    labels: list[str] = []  # categories (names, lists, mappings) in order of first appearance
    if not numeric:
        for v in values:
            if _label(v) not in labels:
                labels.append(_label(v))

    def x(v: Any) -> Any:
        return v if numeric else labels.index(_label(v))

    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    done = [r for r in shown if r["status"] in DONE]
    pruned = [r for r in shown if r["status"] == "pruned"]
    if done:
        ax.scatter(
            [x(r[key]) for r in done],
            [100 * r["best_val_acc"] for r in done],
            s=18,
            color="#4c72b0",
            alpha=0.8,
            label="ran to the end",
        )
    if pruned:
        ax.scatter(
            [x(r[key]) for r in pruned],
            [100 * r["best_val_acc"] for r in pruned],
            s=18,
            facecolors="none",
            edgecolors="#888888",
            label="pruned",
        )
    means: dict[Any, list[float]] = {}
    for r in done:
        means.setdefault(x(r[key]), []).append(100 * r["best_val_acc"])
    if means:
        xs = sorted(means)
        ax.plot(xs, [sum(means[v]) / len(means[v]) for v in xs], color="#dd8452", lw=1.5, label="mean")
    if numeric and values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    if labels:
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel(key)
    ax.set_ylabel("best validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL)
    if title:
        ax.set_title(title)
    return save(fig, path)


@styled
def overlay(curves: list[dict[str, Any]], path, title: str = "", best: int | None = None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for c in curves:
        ep, acc = zip(*c["points"])
        acc = [100 * a for a in acc]
        if c["trial"] == best:
            continue
        if c["status"] == "pruned":
            ax.plot(ep, acc, color="#999999", lw=0.8, ls="--", alpha=0.7, **marker(len(ep)))
        else:
            ax.plot(ep, acc, color="#4c72b0", lw=0.9, alpha=0.6, **marker(len(ep)))
    for c in curves:
        if c["trial"] == best:
            ep, acc = zip(*c["points"])
            ax.plot(ep, [100 * a for a in acc], color="#dd8452", lw=2, marker="o", ms=3, label=f"best: trial {best}")
            ax.legend(fontsize=SMALL)
    epoch_axis(ax)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


# ----------------------------------------------------------------------------------------------
# several keys at once: parallel coordinates, a two-key heatmap, curves coloured by a key


def _axis(values: list[Any]) -> tuple[list[float], list[str] | None]:
    """Positions in [0, 1] along one axis: numbers scaled between their extremes (log-spaced when
    they span a factor of 10 or more), anything else spread evenly in order of first appearance."""
    import math

    if _numeric(values):
        xs = [float(v) for v in values]
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            xs = [math.log10(v) for v in xs]
        lo, hi = min(xs), max(xs)
        return [0.5 if hi == lo else (v - lo) / (hi - lo) for v in xs], None
    labels = list(dict.fromkeys(_label(v) for v in values))
    step = 1 / max(len(labels) - 1, 1)
    return [labels.index(_label(v)) * step if len(labels) > 1 else 0.5 for v in values], labels


@styled
def parallel_coordinates(points: list[dict[str, Any]], keys: list[str], metric: str, path, title: str = ""):
    """One line per trial through an axis per key and a last axis for ``metric`` (its extremes
    written at the axis ends), coloured by the metric: bright lines are good trials."""
    plt = pyplot()
    shown = [p for p in points if p.get(metric) is not None]
    cols = [_axis([p.get(k) for p in shown]) for k in keys] + [_axis([p[metric] for p in shown])]
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 1.5, 3.4))
    cmap = plt.get_cmap("viridis")
    for i in sorted(range(len(shown)), key=lambda i: cols[-1][0][i]):  # the best drawn last, on top
        ax.plot(range(len(cols)), [c[0][i] for c in cols], color=cmap(cols[-1][0][i]), lw=1.6)
    for j, (_, labels) in enumerate(cols):
        ax.axvline(j, color="#444444", lw=0.8)
        if labels:
            step = 1 / max(len(labels) - 1, 1)
            for n, lab in enumerate(labels):
                ax.text(j + 0.03, n * step if len(labels) > 1 else 0.5, lab, fontsize=SMALL, va="center")
        else:
            vals = [p.get(keys[j]) if j < len(keys) else p[metric] for p in shown]
            ax.text(j + 0.03, 0, fmt_num(min(vals)), fontsize=SMALL, va="top")
            ax.text(j + 0.03, 1, fmt_num(max(vals)), fontsize=SMALL, va="bottom")
    ax.set_xticks(range(len(cols)), [*keys, metric], rotation=20, ha="right", fontsize=SMALL)
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(cols) - 0.6)
    ax.set_ylim(-0.08, 1.08)
    if title:
        ax.set_title(title)
    return save(fig, path)


def fmt_num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def two_key_grid(
    points: list[dict[str, Any]], kx: str, ky: str, metric: str
) -> tuple[list[str], list[str], list[list[float]]]:
    """The mean of ``metric`` over trials sharing each (``ky``, ``kx``) pair: row labels, column
    labels and the matrix (NaN where no trial ran)."""
    xs = sorted({_label(p.get(kx)) for p in points}, key=lambda s: _sort_key(s))
    ys = sorted({_label(p.get(ky)) for p in points}, key=lambda s: _sort_key(s))
    cells: dict[tuple[str, str], list[float]] = {}
    for p in points:
        if p.get(metric) is not None:
            cells.setdefault((_label(p.get(ky)), _label(p.get(kx))), []).append(p[metric])
    grid = [[sum(v) / len(v) if (v := cells.get((y, x))) else float("nan") for x in xs] for y in ys]
    return ys, xs, grid


def _sort_key(s: str) -> tuple[int, float, str]:
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


@styled
def two_key_heatmap(points: list[dict[str, Any]], kx: str, ky: str, metric: str, path, title: str = ""):
    """Mean ``metric`` (in %) for each pair of values of two swept keys, written in each cell."""
    plt = pyplot()
    ys, xs, grid = two_key_grid(points, kx, ky, metric)
    import numpy as np

    m = 100 * np.asarray(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(0.7 * len(xs) + 2.4, 0.5 * len(ys) + 1.6))
    im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03).set_label(f"{metric} (%)", fontsize=SMALL)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if m[i, j] == m[i, j]:
                ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=SMALL, color="white")
    ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(kx)
    ax.set_ylabel(ky)
    if title:
        ax.set_title(title)
    return save(fig, path)


@styled
def curves_by(curves: list[dict[str, Any]], key: str, path, title: str = ""):
    """Every trial's validation curve coloured by its value of ``key`` (``curve["value"]``): a
    colour scale for numbers (log when they span a factor of 10), distinct colours otherwise."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 3.4))
    values = [c["value"] for c in curves]
    pos, labels = _axis(values)
    if labels:
        palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
        colour = [palette[labels.index(_label(v)) % len(palette)] for v in values]
    else:
        cmap = plt.get_cmap("plasma")
        colour = [cmap(0.85 * p) for p in pos]
    shown: set[str] = set()
    for c, col in zip(curves, colour):
        ep, acc = zip(*c["points"])
        lab = _label(c["value"])
        label = None if lab in shown else f"{key}={lab}"
        ax.plot(ep, [100 * a for a in acc], color=col, lw=1.2, label=label, **marker(len(ep)))
        shown.add(lab)
    epoch_axis(ax)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    if len(shown) <= 12:
        ax.legend(fontsize=SMALL)
    if title:
        ax.set_title(title)
    return save(fig, path)
