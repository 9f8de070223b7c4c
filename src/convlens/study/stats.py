"""The statistics of a verdict: an estimate, its standard error, and a 95% interval judged
against what the report says.

The standard error of a mean of runs combines the seed noise (runs that differ only in their
seed; the study's ``noise`` where no point was repeated) and the binomial error of the images an
accuracy was measured on (``p (1 - p) / n``: the same test images for every run, so it does not
shrink with more runs). A verdict is

- ``agree`` when the whole interval (estimate +/- 2 standard errors) lies where the report says,
- ``disagree`` when it lies wholly on the other side,
- ``not enough evidence`` otherwise, or when results are missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .results import Row

AGREE, DISAGREE, UNSURE = "agree", "disagree", "not enough evidence"
Z = 2.0  # standard errors either side: a 95% interval


@dataclass
class Obs:
    """One number per run (``values``) with its binomial variance (``bvars``, 0 where none)."""

    rows: list[Row] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    bvars: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def bvar(self) -> float:
        """The binomial variance of the mean: the runs share their images, so it is their mean."""
        return sum(self.bvars) / len(self.bvars) if self.bvars else 0.0


def observe(rows: list[Row], fn: Callable[[Row], tuple[float, float] | None]) -> Obs:
    """``fn(row)`` -> (value, binomial variance) or None (the run says nothing)."""
    obs = Obs()
    for r in rows:
        got = fn(r)
        if got is not None and got[0] is not None and not math.isnan(got[0]):
            obs.rows.append(r)
            obs.values.append(float(got[0]))
            obs.bvars.append(float(got[1]))
    return obs


def binvar(p: float | None, n: int | None) -> float:
    if p is None or not n:
        return 0.0
    p = min(max(float(p), 0.0), 1.0)
    return p * (1 - p) / n


def diff_se(sd: float, a: Obs, b: Obs) -> float:
    """The standard error of ``a.mean - b.mean``: the seed spread ``sd`` plus each side's binomial variance."""
    return math.sqrt(sd**2 * (1 / a.n + 1 / b.n) + a.bvar + b.bvar)


def pooled_sd(*sides: Obs) -> tuple[float | None, int]:
    """Pooled standard deviation among runs of one side that differ only in their seed, and its
    degrees of freedom (0: no point was repeated)."""
    ss, dof = 0.0, 0
    for obs in sides:
        groups: dict[str, list[float]] = {}
        for r, v in zip(obs.rows, obs.values):
            groups.setdefault(r.replicate_key(), []).append(v)
        for xs in groups.values():
            if len(xs) > 1:
                m = sum(xs) / len(xs)
                ss += sum((x - m) ** 2 for x in xs)
                dof += len(xs) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def seed_sd(noise: float | None, *sides: Obs, scale: float = 100.0) -> tuple[float, str]:
    """The seed standard deviation and how it was obtained (shown in points, or as it is)."""
    sd, dof = pooled_sd(*sides)
    show = (lambda v: f"{100 * v:.1f} pts") if scale != 1 else (lambda v: f"{v:.3g}")
    if sd is not None:
        return sd, f"seed std {show(sd)} ({dof} dof)"
    if noise:
        return noise, f"seed std {show(noise)} assumed (no seed repeats)"
    return 0.0, "no seed repeats, no noise estimate"


def judge(est: float, se: float, expect: str, value: float = 0.0, tol: float | None = None) -> str:
    """The verdict of ``est`` (standard error ``se``) against ``expect`` and the reported ``value``."""
    lo, hi = est - Z * se, est + Z * se
    tol = tol or 0.0
    if expect == "greater":
        return AGREE if lo > value else DISAGREE if hi < value else UNSURE
    if expect == "less":
        return AGREE if hi < value else DISAGREE if lo > value else UNSURE
    if expect == "not_greater":
        return AGREE if hi <= value + tol else DISAGREE if lo > value + tol else UNSURE
    if expect == "similar":
        if lo >= value - tol and hi <= value + tol:
            return AGREE
        return DISAGREE if lo > value + tol or hi < value - tol else UNSURE
    raise ValueError(f"expect {expect!r}")


def interval(est: float, se: float, scale: float = 100.0, unit: str = " pts") -> str:
    if se == 0:
        return f"{scale * est:+.1f}{unit} (exact)" if scale != 1 else f"{est:+.4g} (exact)"
    if scale == 1:
        return f"{est:+.4g}, interval [{est - Z * se:+.4g}, {est + Z * se:+.4g}]"
    return f"{scale * est:+.1f}{unit}, interval [{scale * (est - Z * se):+.1f}, {scale * (est + Z * se):+.1f}]"


def expectation(expect: str, value: float, tol: float | None, scale: float = 100.0) -> str:
    v = f"{scale * value:g}" if scale != 1 else f"{value:g}"
    t = f"{scale * (tol or 0):g}" if scale != 1 else f"{tol or 0:g}"
    return {
        "greater": f"expected above {v}",
        "less": f"expected below {v}",
        "not_greater": f"expected at most {v} + {t}",
        "similar": f"expected {v} +/- {t}",
    }[expect]


def numbers(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}
