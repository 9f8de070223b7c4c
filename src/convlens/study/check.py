"""``convlens study check``: each finding of the report as a verdict over the study's results.

A verdict is ``agree``, ``disagree`` or ``not enough evidence``; the last when results are
missing or a difference is within the noise: twice the standard error of the difference from
seed repeats (runs that differ only in their seed), or the study's ``noise`` (or the check's
``min_diff``) where no point was repeated, whichever is larger.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .results import Row, load_rows, read_meta
from .spec import Check, Study, load_study

AGREE, DISAGREE, UNSURE = "agree", "disagree", "not enough evidence"


@dataclass
class Verdict:
    id: str
    report_says: str
    obtained: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evidence:
    """The rows of each experiment, loaded once."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self._rows: dict[str, list[Row]] = {}

    def rows(self, experiment: str, where: dict[str, Any]) -> list[Row]:
        if experiment not in self._rows:
            self._rows[experiment] = load_rows(self.out, experiment)
        return [r for r in self._rows[experiment] if r.done and r.matches(where)]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if "loss" in metric else _pct(v)


def _values(rows: list[Row], metric: str) -> list[float]:
    return [float(r.numbers[metric]) for r in rows if r.numbers.get(metric) is not None]


def seed_std(sides: list[list[Row]], metric: str) -> tuple[float | None, int]:
    """Pooled standard deviation of ``metric`` among runs of one side that differ only in their
    seed, and its degrees of freedom (0: no point was repeated)."""
    groups: dict[tuple[int, str], list[float]] = {}
    for i, rows in enumerate(sides):
        for r in rows:
            if r.numbers.get(metric) is not None:
                groups.setdefault((i, r.replicate_key()), []).append(float(r.numbers[metric]))
    ss, dof = 0.0, 0
    for xs in groups.values():
        if len(xs) > 1:
            m = sum(xs) / len(xs)
            ss += sum((x - m) ** 2 for x in xs)
            dof += len(xs) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def _decide(diff: float, expect: str, threshold: float) -> str:
    signed = diff if expect == "greater" else -diff
    if abs(diff) <= threshold:
        return UNSURE
    return AGREE if signed > 0 else DISAGREE


def compare_means(c: Check, ev: Evidence, noise: float) -> Verdict:
    a, b = ev.rows(c.a.experiment, c.a.where), ev.rows(c.b.experiment, c.b.where)  # type: ignore[union-attr]
    xa, xb = _values(a, c.metric), _values(b, c.metric)
    if not xa or not xb:
        return Verdict(c.id, c.report_says, f"missing results (a: {len(xa)} runs, b: {len(xb)} runs)", UNSURE)
    ma, mb = sum(xa) / len(xa), sum(xb) / len(xb)
    sd, dof = seed_std([a, b], c.metric)
    se = sd * math.sqrt(1 / len(xa) + 1 / len(xb)) if sd is not None else None
    floor = c.min_diff if c.min_diff is not None else noise
    threshold = max(2 * se, floor) if se is not None else floor
    diff = ma - mb
    where = f"seed std {_fmt(c.metric, sd)} ({dof} dof)" if sd is not None else "no seed repeats"
    obtained = (
        f"{c.metric} {_fmt(c.metric, ma)} (n={len(xa)}) vs {_fmt(c.metric, mb)} (n={len(xb)}): "
        f"difference {diff:+.3f}, threshold {threshold:.3f} ({where})"
    )
    numbers = {"a": ma, "b": mb, "n_a": len(xa), "n_b": len(xb), "diff": diff, "seed_std": sd, "threshold": threshold}
    return Verdict(c.id, c.report_says, obtained, _decide(diff, c.expect, threshold), numbers)


def threshold(c: Check, ev: Evidence, noise: float) -> Verdict:
    xa = _values(ev.rows(c.a.experiment, c.a.where), c.metric)
    if not xa:
        return Verdict(c.id, c.report_says, "missing results", UNSURE)
    m = sum(xa) / len(xa)
    floor = c.min_diff if c.min_diff is not None else noise
    diff = m - float(c.value)  # type: ignore[arg-type]
    obtained = f"{c.metric} {_fmt(c.metric, m)} (n={len(xa)}) against {c.expect} than {_fmt(c.metric, c.value)}"
    numbers = {"mean": m, "n": len(xa), "value": c.value, "margin": floor}
    return Verdict(c.id, c.report_says, obtained, _decide(diff, c.expect, floor), numbers)


def diagnose_has(c: Check, ev: Evidence, noise: float) -> Verdict:
    from ..report.diagnose import NEEDS_TEST, diagnose

    rows = ev.rows(c.a.experiment, c.a.where)
    if not rows:
        return Verdict(c.id, c.report_says, "missing results", UNSURE)
    if c.code in NEEDS_TEST:  # judged from test predictions: runs without them say nothing
        untested = [r for r in rows if r.numbers.get("test_acc") is None]
        rows = [r for r in rows if r.numbers.get("test_acc") is not None]
        if not rows:
            statuses = ", ".join(sorted({r.status for r in untested}))
            obtained = f"no test predictions to judge {c.code} ({len(untested)} run(s), status {statuses})"
            return Verdict(c.id, c.report_says, obtained, UNSURE, {"untested": len(untested)})
    found = [sorted({f.code for f in diagnose(r.path)}) for r in rows]
    hits = sum(c.code in codes for codes in found)
    obtained = (
        f"`diagnose` reports {c.code} in {hits} of {len(rows)} run(s) (codes: {'; '.join(map(', '.join, found))})"
    )
    if hits in (0, len(rows)):
        present = hits == len(rows)
        verdict = AGREE if present == (c.expect == "present") else DISAGREE
    else:
        verdict = UNSURE
    return Verdict(c.id, c.report_says, obtained, verdict, {"hits": hits, "runs": len(rows), "codes": found})


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2 if s else 0.0


def classnorms_experts(c: Check, ev: Evidence, noise: float) -> Verdict:
    from ..run.layout import Layout
    from ..utils import read_json

    rows = ev.rows(c.a.experiment, c.a.where)
    counts: dict[str, list[int]] = {c.first: [], c.last: []}  # type: ignore[dict-item]
    top: dict[str, float] = {}
    mid: dict[str, list[float]] = {c.first: [], c.last: []}  # type: ignore[dict-item]
    for r in rows:
        for f in sorted(Layout(r.path).analysis_dir.glob("classnorms*.json")):
            layers = read_json(f).get("layers", {})
            for name in counts:
                if name in layers:
                    quiet = set(layers[name].get("quiet", []))
                    si = [s for i, s in enumerate(layers[name]["selectivity"]) if i not in quiet and s == s]
                    counts[name].append(sum(s >= c.min_selectivity for s in si))
                    top[name] = max([top.get(name, 0.0), *si])
                    mid[name].append(_median(si))
    if not counts[c.first] or not counts[c.last]:  # type: ignore[index]
        return Verdict(c.id, c.report_says, f"no classnorms result for {c.first} and {c.last}", UNSURE)
    if c.above_first is not None:
        return _relative_experts(c, top, {k: _median(v) for k, v in mid.items()})
    first, last = max(counts[c.first]), min(counts[c.last])  # type: ignore[index]
    obtained = (
        f"filters with selectivity >= {c.min_selectivity}: {c.first} {first} (max SI {top[c.first]:.2f}), "  # type: ignore[index]
        f"{c.last} {last} (max SI {top[c.last]:.2f})"  # type: ignore[index]
    )
    verdict = AGREE if first == 0 and last > 0 else DISAGREE
    return Verdict(c.id, c.report_says, obtained, verdict, {"experts": counts, "max_selectivity": top})


def _relative_experts(c: Check, top: dict[str, float], median: dict[str, float]) -> Verdict:
    """The last layer's highest and median selectivity against ``above_first`` times the first's."""
    first, last, r = c.first, c.last, float(c.above_first)  # type: ignore[arg-type]
    ratio = {k: d[last] / d[first] if d[first] > 0 else math.inf for k, d in (("max", top), ("median", median))}
    obtained = (
        f"selectivity {last} against {first}: max {top[last]:.2f} vs {top[first]:.2f} "  # type: ignore[index]
        f"({ratio['max']:.1f}x), median {median[last]:.2f} vs {median[first]:.2f} "  # type: ignore[index]
        f"({ratio['median']:.1f}x); expected at least {r:g}x both"
    )
    verdict = AGREE if min(ratio.values()) >= r else DISAGREE
    return Verdict(c.id, c.report_says, obtained, verdict, {"max_selectivity": top, "median": median, "ratio": ratio})


def strongest_key(c: Check, ev: Evidence, noise: float) -> Verdict:
    from ..report.diagnose import sweep_trends

    rows = ev.rows(c.a.experiment, c.a.where)
    if not rows:
        return Verdict(c.id, c.report_says, "missing results", UNSURE)
    trends = sweep_trends([(r.config, r.numbers) for r in rows], c.metric)
    if not trends:
        return Verdict(c.id, c.report_says, "no key varies across the trials", UNSURE)
    best = trends[0]
    obtained = "; ".join(f"{t['key']} moves {c.metric} by {_fmt(c.metric, t['effect'])}" for t in trends[:3])
    floor = c.min_diff if c.min_diff is not None else noise
    runner_up = trends[1]["effect"] if len(trends) > 1 else 0.0
    if best["key"] == c.key:
        verdict = AGREE if best["effect"] - runner_up > floor else UNSURE
    else:
        verdict = (
            DISAGREE if best["effect"] - next(t["effect"] for t in trends if t["key"] == c.key) > floor else UNSURE
        )
    return Verdict(c.id, c.report_says, obtained, verdict, {"trends": trends})


KINDS = {
    "compare_means": compare_means,
    "threshold": threshold,
    "diagnose_has": diagnose_has,
    "classnorms_experts": classnorms_experts,
    "strongest_key": strongest_key,
}


def check_study(folder: str | Path | Study, out: str | Path) -> list[Verdict]:
    study = folder if isinstance(folder, Study) else load_study(folder)
    ev = Evidence(Path(out))
    return [KINDS[c.kind](c, ev, study.spec.noise) for c in study.spec.findings]


def format_verdicts(study: Study, out: Path, verdicts: list[Verdict]) -> str:
    meta = read_meta(out)
    lines = [
        f"study {study.name}: results {out} (budget {meta.get('budget', 'unknown')})",
        "",
        "| finding | the report says | convlens obtained | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(f"| {v.id} | {v.report_says} | {v.obtained} | {v.verdict} |")
    tally = {k: sum(v.verdict == k for v in verdicts) for k in (AGREE, DISAGREE, UNSURE)}
    lines += ["", ", ".join(f"{n} {k}" for k, n in tally.items())]
    return "\n".join(lines)
