"""The frontier benchmark's arithmetic: interleaving and interpolation along a frontier."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_speed_frontier import interleave, interp_acc, interp_time  # noqa: E402

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
