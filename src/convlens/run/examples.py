"""Which test images a run folder keeps for its report: evenly spaced ones and the most confident
mistakes, picked from the predictions, stored at evaluation time in ``examples.npz`` so that the
report is drawn from the run folder alone."""

from __future__ import annotations

from typing import Any

EXAMPLES = 24  # evenly spaced over the test split
MISTAKES = 16  # the most confident mistakes


def pick_examples(rows: list[dict[str, Any]], n: int = EXAMPLES) -> list[dict[str, Any]]:
    """Evenly spaced over the test split: a fixed, unbiased sample with its share of mistakes."""
    if len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def pick_mistakes(rows: list[dict[str, Any]], n: int = MISTAKES) -> list[dict[str, Any]]:
    wrong = [r for r in rows if not r["correct"]]
    return sorted(wrong, key=lambda r: (-r["confidence"], r["position"]))[:n]


def kept_positions(rows: list[dict[str, Any]]) -> list[int]:
    """The positions in the split whose images the report shows, sorted."""
    return sorted({r["position"] for r in pick_examples(rows) + pick_mistakes(rows)})
