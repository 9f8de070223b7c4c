"""Sweep figures: best validation accuracy against each swept key, and every trial's learning
curve overlaid. Drawn from the tables' rows and the run folders, with ``convlens.plots``."""

from __future__ import annotations

import json
from typing import Any

from ..plots import pyplot, save, styled
from ..run.layout import Layout
from ..train.metrics import read_metrics
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
    ax.legend(fontsize=7)
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
            ax.plot(ep, acc, color="#999999", lw=0.8, ls="--", alpha=0.7)
        else:
            ax.plot(ep, acc, color="#4c72b0", lw=0.9, alpha=0.6)
    for c in curves:
        if c["trial"] == best:
            ep, acc = zip(*c["points"])
            ax.plot(ep, [100 * a for a in acc], color="#dd8452", lw=2, marker="o", ms=3, label=f"best: trial {best}")
            ax.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)
