"""The frontier benchmark's arithmetic: interleaving and interpolation along a frontier."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_speed_frontier import interleave, interp_acc, interp_time, plan_queue, summary  # noqa: E402

PTS = [(10.0, 60.0), (20.0, 70.0), (40.0, 80.0)]


def test_interleave_alternates_and_keeps_the_tail():
    base, new = [("base", e) for e in (1, 2, 4, 8)], [("new", e) for e in (1, 3)]
    assert interleave(base, new) == [("base", 1), ("new", 1), ("base", 2), ("new", 3), ("base", 4), ("base", 8)]


def test_interp_time_is_linear_in_log_seconds():
    assert interp_time(PTS, 70.0) == pytest.approx(20.0)
    assert interp_time(PTS, 75.0) == pytest.approx(math.sqrt(20 * 40))  # halfway in log seconds
    assert interp_time(PTS, 50.0) == 10.0  # already reached at the smallest budget
    assert interp_time(PTS, 81.0) is None


def test_interp_acc_at_given_seconds():
    assert interp_acc(PTS, 20.0) == 70.0
    assert interp_acc(PTS, math.sqrt(10 * 20)) == pytest.approx(65.0)
    assert interp_acc(PTS, 5.0) is None and interp_acc(PTS, 50.0) is None


def _args(**kw):
    from types import SimpleNamespace

    d = dict(
        base_epochs=[1, 3, 10], new_epochs=[1, 2, 8], ref_epochs=10, new_ref_epochs=8, seeds=[0, 1, 2], frontier_seeds=1
    )
    d.update(kw)
    return SimpleNamespace(**d)


def test_plan_queue_runs_the_reference_budgets_first_over_every_seed():
    q = plan_queue(_args())
    assert q[:6] == [("base", 10, s) if i % 2 == 0 else ("new", 8, s) for s in (0, 1, 2) for i in (0, 1)]
    # then the other budgets, first seed only, interleaved
    assert q[6:] == [("base", 1, 0), ("new", 1, 0), ("base", 3, 0), ("new", 2, 0)]
    assert len(set(q)) == len(q)


def test_plan_queue_without_frontier_seeds_runs_every_budget_for_every_seed():
    q = plan_queue(_args(frontier_seeds=None))
    assert len(q) == 3 * 6 and q[:6] == [
        ("base", 1, 0),
        ("new", 1, 0),
        ("base", 3, 0),
        ("new", 2, 0),
        ("base", 10, 0),
        ("new", 8, 0),
    ]


def _row(recipe, epochs, seed, cpu, acc):
    return {"recipe": recipe, "epochs": epochs, "seed": seed, "cpu": cpu, "wall": cpu, "acc": acc}


def test_summary_line_means_over_the_shared_seeds_and_judges_the_target():
    rows = [_row("base", 10, s, 100.0 + s, 90.0 + 0.1 * s) for s in range(3)]
    rows += [_row("new", 8, s, 60.0 + s, 90.2) for s in range(3)]
    rows += [_row("new", 8, 3, 10.0, 50.0)]  # a seed the baseline lacks: left out of the means
    lines = summary(rows, 10, 8, "airbench94")
    assert lines[0].strip() == (
        "time-to-airbench94: new 61 CPU s, airbench94 101 CPU s, ratio 0.60, accuracy new 90.20% vs airbench94 90.10% "
        "over 3 seeds"
    )
    assert lines[1].endswith(": met")
    slow = [dict(r, cpu=r["cpu"] * 1.2) if r["recipe"] == "new" else r for r in rows]
    assert summary(slow, 10, 8, "airbench94")[1].endswith("not met")  # ratio 0.72
    worse = [dict(r, acc=89.0) if r["recipe"] == "new" else r for r in rows]
    assert summary(worse, 10, 8, "airbench94")[1].endswith("not met")
    two = [r for r in rows if r["seed"] != 2]
    assert "over 2 seeds" in summary(two, 10, 8, "airbench94")[0]
    assert summary(two, 10, 8, "airbench94")[1].endswith("not met")


def test_summary_frontier_check_names_the_budget_where_the_new_recipe_is_behind():
    base = [_row("base", 1, 0, 10.0, 60.0), _row("base", 3, 0, 30.0, 80.0), _row("base", 10, 0, 100.0, 90.0)]
    good = [_row("new", 1, 0, 8.0, 70.0), _row("new", 2, 0, 15.0, 80.0), _row("new", 8, 0, 60.0, 90.5)]
    assert "at least as accurate everywhere" in summary(base + good, 10, 8, "b")[2]
    # at the baseline's 3-epoch budget (30 s) the new recipe is half way (in log seconds) from
    # 70% to 88%: 79% < 80%
    bad = [good[0], _row("new", 2, 0, 15.0, 70.0), _row("new", 8, 0, 60.0, 88.0)]
    line = summary(base + bad, 10, 8, "b")[2]
    assert "less accurate" in line and "at the baseline's 30 s: 79.00% < 80.00%" in line
