"""The line figures of the faithfulness analysis: similarity per layer re-initialised, and the
deletion / insertion curves, one small panel per method (matplotlib, in the house style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..plots import pyplot, save, styled


@styled
def similarity_lines(result: dict[str, Any], path: Path) -> Path:
    """Spearman (solid) and SSIM (dashed) per method against the layers re-initialised so far."""
    steps = ["trained"] + [f"-{n}" for n in result["layers_randomised"]]
    fig, ax = pyplot().subplots(figsize=(max(4.0, 0.45 * len(steps) + 2), 3.0))
    for m, e in result["methods"].items():
        (line,) = ax.plot(range(len(steps)), e["spearman"], marker="o", ms=3, label=f"{m} (Spearman)")
        ax.plot(range(len(steps)), e["ssim"], ls="--", color=line.get_color(), lw=1)
    ax.set_xticks(range(len(steps)))
    ax.set_xticklabels(steps, rotation=45, ha="right")
    ax.set_ylabel("similarity to the trained maps")
    ax.set_ylim(-0.3, 1.05)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_title("cascading randomisation (solid: Spearman, dashed: SSIM)")
    ax.legend(fontsize=6, loc="upper right")
    return save(fig, path)


@styled
def perturbation_panels(result: dict[str, Any], path: Path) -> Path:
    """One panel per method: deletion MoRF, deletion LeRF and insertion curves, with the random order."""
    methods = list(result["methods"])
    cols = min(3, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), squeeze=False, sharey=True)
    rand = result["random_order"]["curves"]
    for ax, m in zip(axes.flat, methods):
        e = result["methods"][m]
        n = len(e["curves"]["deletion_morf"]) - 1
        frac = [i / n for i in range(n + 1)]
        ax.plot(frac, rand["deletion_morf"], color="0.7", lw=1)
        ax.plot(frac, rand["insertion_morf"], color="0.7", lw=1, ls=":")
        ax.plot(frac, e["curves"]["deletion_morf"], label=f"deletion MoRF {e['deletion_morf']:.2f}")
        ax.plot(frac, e["curves"]["deletion_lerf"], label=f"deletion LeRF {e['deletion_lerf']:.2f}")
        ax.plot(frac, e["curves"]["insertion_morf"], ls=":", label=f"insertion {e['insertion_morf']:.2f}")
        ax.set_title(m)
        ax.set_xlabel("fraction of pixels")
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("p(class)")
    fig.tight_layout()
    return save(fig, path)
