"""``convlens study check``: each finding of the report as a verdict over the study's results.

A verdict is ``agree``, ``disagree`` or ``not enough evidence`` (see ``stats``: a 95% interval from
the seed noise and the binomial error of the images, judged against the report's claim). A
reported number (``magnitude``) is judged only at budgets that state a ``tolerance`` for it: at a
smaller budget the report's recipe is not run and its numbers are not expected. The dissection
kinds (per class, confusion, layers, ablation) live in ``dissect``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import get_dotted
from .results import Row, learned_nothing, load_rows, read_meta, same
from .spec import ACCURACIES, Check, Study, load_study
from .stats import (
    AGREE,
    DISAGREE,
    UNSURE,
    Obs,
    binvar,
    diff_se,
    expectation,
    interval,
    judge,
    numbers,
    observe,
    seed_sd,
)


@dataclass
class Verdict:
    id: str
    report_says: str
    obtained: str
    verdict: str
    numbers: dict[str, Any] = field(default_factory=dict)
    check: str = ""  # how the finding is checked (kind, metric, expectation), or why it is not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evidence:
    """The rows of each experiment, loaded once, and the budget they were run at."""

    def __init__(self, out: Path, budget: str = "full", noise: float = 0.0, study: Study | None = None):
        self.out = Path(out)
        self.budget, self.noise, self.study = budget, noise, study
        self._rows: dict[str, list[Row]] = {}

    def grid(self, experiment: str) -> list[dict[str, Any]] | None:
        """The points of a grid sweep experiment (None: a config, or not known)."""
        if self.study is None:
            return None
        from ..sweep.spec import load_sweep

        e = self.study.experiment(experiment)
        if not self.study.is_sweep(e):
            return None
        sweep = load_sweep(self.study.folder / e.file)
        return list(sweep.points()) if sweep.method == "grid" else None

    def all_rows(self, experiment: str) -> list[Row]:
        if experiment not in self._rows:
            self._rows[experiment] = load_rows(self.out, experiment)
        return [r for r in self._rows[experiment] if r.done]

    def rows(self, experiment: str, where: dict[str, Any]) -> list[Row]:
        return [r for r in self.all_rows(experiment) if r.matches(where)]


def metric_obs(rows: list[Row], metric: str) -> Obs:
    """The metric of each run, with the binomial variance of the images it was measured on."""

    def fn(r: Row) -> tuple[float, float] | None:
        x, n = r.numbers.get(metric), r.numbers
        if x is None:
            return None
        if metric == "test_acc":
            return x, binvar(x, n.get("n_test"))
        if metric in ("best_val_acc", "final_val_acc"):
            return x, binvar(x, n.get("n_val"))
        if metric == "final_train_clean_acc":
            return x, binvar(x, n.get("n_clean"))
        if metric == "clean_gap":
            return x, binvar(n.get("final_train_clean_acc"), n.get("n_clean")) + binvar(
                n.get("final_val_acc"), n.get("n_val")
            )
        if metric == "clean_overfit":
            return x, binvar(n.get("final_train_clean_acc"), n.get("n_clean")) + binvar(
                n.get("test_acc"), n.get("n_test")
            )
        return x, 0.0

    return observe(rows, fn)


def _scale(metric: str) -> tuple[float, str]:
    """How a metric is shown: accuracies and their differences in points, others as they are."""
    rates = (*ACCURACIES, "final_train_acc", "gap", "clean_gap_rise", "val_acc_rise", "val_acc_late_rise")
    return (100.0, " pts") if metric in rates else (1.0, "")


def _fmt(metric: str, v: float) -> str:
    scale, _ = _scale(metric)
    return f"{100 * v:.1f}%" if scale != 1 else f"{v:.4g}"


def _noise(c: Check, ev: Evidence) -> float:
    """The assumed seed noise applies to accuracies only; other numbers get none without seeds."""
    scale, _ = _scale(c.metric)
    return ev.noise if scale != 1 else 0.0


def _tolerance(c: Check, ev: Evidence) -> tuple[float | None, str | None]:
    """The check's tolerance at this budget, or why it is not judged here."""
    if c.expect not in ("similar", "not_greater"):
        return None, None
    tol = c.tolerance_for(ev.budget)
    if tol is None:
        at = ", ".join(c.tolerance) if isinstance(c.tolerance, dict) else "none"
        return None, f"not judged at budget {ev.budget!r} (judged at: {at}): the report's number needs its recipe"
    return tol, None


def describe(c: Check) -> str:
    if c.kind == "not_checkable":
        return f"not checkable: {c.reason}"
    scale, _ = _scale(c.metric)
    tol = c.tolerance if not isinstance(c.tolerance, dict) else ", ".join(f"{k} {v:g}" for k, v in c.tolerance.items())
    v = f"{c.value * scale:g}" if c.value is not None else "0"
    what = {
        "compare_means": f"{c.metric}: a {c.expect} than b"
        + (f" by {v} (tolerance {tol})" if c.tolerance is not None else ""),
        "magnitude": f"{c.metric} {c.expect} {v}" + (f" (tolerance {tol})" if c.tolerance is not None else ""),
        "best_point": f"{c.metric}: the reported point is the best",
        "strongest_key": f"{c.key} ({c.high} above {c.low}) moves {c.metric} most",
        "layer_stat": f"{c.reduce} {c.field} ({c.analysis}) of {c.layer}"
        + (f" / {c.compare_layer}" if c.compare_layer else "")
        + f" {c.expect} {c.value}",
        "per_class": f"accuracy of {', '.join(c.classes or [])} {c.expect} than "
        + (", ".join(c.against) if c.against else "in b"),
        "confusion": f"{c.mode} " + "-".join(c.pair or []),
        "class_preference": f"{c.layer} excited more by {', '.join(c.classes or [])}",
        "topk_class": f"{c.layer}'s top images mostly {', '.join(c.classes or [])}",
        "ablation": f"{c.mode} " + "-".join(c.pair or []),
        "receptive_field": f"sizes of {', '.join(c.layers or [])}",
        "diagnose_has": f"{c.code} {c.expect}",
    }[c.kind]
    return f"{c.kind}: {what}".rstrip()


def _rest(r: Row, keys: set[str]) -> str:
    """The run's config apart from ``keys``, its seed and names: what a matched pair shares."""
    flat = _flat(r.config)
    return repr(sorted((k, repr(v)) for k, v in flat.items() if k not in keys and k.split(".")[0] not in SKIP))


def matched(c: Check, ev: Evidence) -> tuple[list[Row], list[Row], str]:
    """The two sides; within one sweep, only the runs whose other keys have a counterpart on the
    other side (a partly run grid would otherwise compare different mixes of the other keys)."""
    ra, rb = ev.rows(c.a.experiment, c.a.where), ev.rows(c.b.experiment, c.b.where)  # type: ignore[union-attr]
    if c.a.experiment != c.b.experiment:  # type: ignore[union-attr]
        return ra, rb, ""
    keys = set(c.a.where) | set(c.b.where)  # type: ignore[union-attr]
    sa, sb = {_rest(r, keys) for r in ra}, {_rest(r, keys) for r in rb}
    ka, kb = [r for r in ra if _rest(r, keys) in sb], [r for r in rb if _rest(r, keys) in sa]
    dropped = len(ra) + len(rb) - len(ka) - len(kb)
    return ka, kb, f"; {dropped} run(s) without a counterpart left out" if dropped else ""


def compare_means(c: Check, ev: Evidence) -> Verdict:
    ra, rb, left = matched(c, ev)
    a, b = metric_obs(ra, c.metric), metric_obs(rb, c.metric)
    if not a.n or not b.n:
        return Verdict(c.id, c.report_says, f"missing results (a: {a.n} runs, b: {b.n} runs){left}", UNSURE)
    nothing = learned_nothing(ra, rb)
    if nothing:
        return Verdict(c.id, c.report_says, f"{c.metric}: {nothing}", UNSURE)
    tol, why = _tolerance(c, ev)
    sd, how = seed_sd(_noise(c, ev), a, b, scale=_scale(c.metric)[0])
    se = diff_se(sd, a, b)
    diff = a.mean - b.mean
    scale, unit = _scale(c.metric)
    value = c.value or 0.0
    obtained = (
        f"{c.metric} {_fmt(c.metric, a.mean)} (n={a.n}) vs {_fmt(c.metric, b.mean)} (n={b.n}): difference "
        f"{interval(diff, se, scale, unit)} ({how}); {why or expectation(c.expect, value, tol, scale)}{left}"
    )
    verdict = UNSURE if why else judge(diff, se, c.expect, value, tol)
    return Verdict(
        c.id, c.report_says, obtained, verdict, numbers(a=a.mean, b=b.mean, n_a=a.n, n_b=b.n, diff=diff, se=se)
    )


def magnitude(c: Check, ev: Evidence) -> Verdict:
    rows = ev.rows(c.a.experiment, c.a.where)  # type: ignore[union-attr]
    a = metric_obs(rows, c.metric)
    if not a.n:
        return Verdict(c.id, c.report_says, "missing results", UNSURE)
    nothing = learned_nothing(rows) if c.expect in ("greater", "less") else None
    if nothing:  # a bound (a rise, a floor) met by a network at chance is noise, not the report's claim
        return Verdict(c.id, c.report_says, f"{c.metric}: {nothing}", UNSURE)
    tol, why = _tolerance(c, ev)
    sd, how = seed_sd(_noise(c, ev), a, scale=_scale(c.metric)[0])
    se = math.sqrt(sd**2 / a.n + a.bvar)
    scale, unit = _scale(c.metric)
    value = float(c.value)  # type: ignore[arg-type]
    obtained = (
        f"{c.metric} {_fmt(c.metric, a.mean)} (n={a.n}), {'reported' if c.expect == 'similar' else 'against'} "
        f"{_fmt(c.metric, value)}: difference "
        f"{interval(a.mean - value, se, scale, unit)} ({how}); {why or expectation(c.expect, value, tol, scale)}"
    )
    verdict = UNSURE if why else judge(a.mean, se, c.expect, value, tol)
    return Verdict(
        c.id, c.report_says, obtained, verdict, numbers(mean=a.mean, n=a.n, value=value, se=se, tolerance=tol)
    )


def _groups(rows: list[Row], metric: str) -> dict[str, Obs]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.replicate_key(), []).append(r)
    return {k: metric_obs(v, metric) for k, v in out.items()}


def best_point(c: Check, ev: Evidence) -> Verdict:
    """The reported point (``a.where``) against the best of the others (``among`` restricts them)."""
    rows = [r for r in ev.all_rows(c.a.experiment) if all(_in(r, k, v) for k, v in c.among.items())]  # type: ignore[union-attr]
    mine = [r for r in rows if r.matches(c.a.where)]  # type: ignore[union-attr]
    groups = {k: o for k, o in _groups([r for r in rows if r not in mine], c.metric).items() if o.n}
    a = metric_obs(mine, c.metric)
    missing = _incomplete(c, ev, 1 + len(groups) if a.n else len(groups))
    if not a.n or not groups or missing:
        why = missing or f"missing results ({a.n} runs of the point, {len(groups)} others)"
        return Verdict(c.id, c.report_says, why, UNSURE)
    nothing = learned_nothing(rows)
    if nothing:
        return Verdict(c.id, c.report_says, nothing, UNSURE)
    best_key = max(groups, key=lambda k: groups[k].mean)
    b = groups[best_key]
    sd, how = seed_sd(_noise(c, ev), a, *groups.values())
    se = diff_se(sd, a, b)
    diff = a.mean - b.mean
    other = _describe_point(b.rows[0], mine[0] if mine else None)
    obtained = (
        f"{c.metric} {_fmt(c.metric, a.mean)} (n={a.n}) against the best other point ({other}) "
        f"{_fmt(c.metric, b.mean)} (n={b.n}) of {len(groups)}: difference {interval(diff, se)} ({how})"
    )
    return Verdict(
        c.id, c.report_says, obtained, judge(diff, se, "greater"), numbers(a=a.mean, best_other=b.mean, se=se)
    )


def _incomplete(c: Check, ev: Evidence, have: int, where: dict[str, Any] | None = None) -> str | None:
    """Why a judgement over every point of a grid (those matching ``where`` and ``among``) cannot
    be made yet: points not run."""
    grid = ev.grid(c.a.experiment)  # type: ignore[union-attr]
    if grid is None:
        return None
    conditions = {**{k: [v] for k, v in (where or {}).items()}, **c.among}
    want = [p for p in grid if all(any(same(p.get(k), v) for v in vs) for k, vs in conditions.items() if k in p)]
    return f"{have} of the grid's {len(want)} points have results" if have < len(want) else None


def _in(r: Row, key: str, values: list[Any]) -> bool:
    try:
        got = get_dotted(r.config, key)
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return any(same(got, v) for v in values)


SKIP = ("seed", "name", "meta")  # config keys that do not make two runs different experiments


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _by_key(rows: list[Row], metric: str) -> dict[str, dict[str, Obs]]:
    """For each config key that varies across the rows (not the seed): its values' marginal runs."""
    flats = [{k: v for k, v in _flat(r.config).items() if k.split(".")[0] not in SKIP} for r in rows]
    keys = sorted({k for f in flats for k in f if len({repr(g.get(k)) for g in flats}) > 1})
    out = {}
    for k in keys:
        groups: dict[str, list[Row]] = {}
        for r, f in zip(rows, flats):
            groups.setdefault(repr(f.get(k)), []).append(r)
        out[k] = {v: metric_obs(rs, metric) for v, rs in groups.items()}
    return out


def _spread(groups: dict[str, Obs]) -> float:
    """sqrt(2) x the standard deviation (n - 1) of the value means: |a - b| for two values, and
    for more values the same expected size under noise alone (no bias towards keys with more)."""
    ms = [o.mean for o in groups.values() if o.n]
    if len(ms) < 2:
        return 0.0
    m = sum(ms) / len(ms)
    return math.sqrt(2 * sum((x - m) ** 2 for x in ms) / (len(ms) - 1))


def strongest_key(c: Check, ev: Evidence) -> Verdict:
    rows = ev.rows(c.a.experiment, c.a.where)  # type: ignore[union-attr]
    keys = _by_key(rows, c.metric)
    if c.key not in keys:
        return Verdict(c.id, c.report_says, f"{c.key} does not vary across {len(rows)} run(s)", UNSURE)
    missing = _incomplete(c, ev, len({r.replicate_key() for r in rows}), c.a.where)  # type: ignore[union-attr]
    if missing:
        return Verdict(c.id, c.report_says, missing, UNSURE)
    nothing = learned_nothing(rows)
    if nothing:
        return Verdict(c.id, c.report_says, nothing, UNSURE)
    mine = keys[c.key]
    hi, lo = mine.get(repr(c.high)), mine.get(repr(c.low))
    if hi is None or lo is None or not hi.n or not lo.n:
        return Verdict(c.id, c.report_says, f"no runs at {c.key} = {c.high} or {c.low}", UNSURE)
    sd, how = seed_sd(_noise(c, ev), *[o for g in keys.values() for o in g.values()])
    se = diff_se(sd, hi, lo)
    direction = judge(hi.mean - lo.mean, se, "greater")
    effects = {k: _spread(g) for k, g in keys.items()}
    rival = max((k for k in effects if k != c.key), key=lambda k: effects[k], default=None)
    margin = effects[c.key] - (effects[rival] if rival else 0.0)
    ahead = judge(margin, math.sqrt(2) * se, "greater")
    verdict = DISAGREE if DISAGREE in (direction, ahead) else AGREE if direction == ahead == AGREE else UNSURE
    listing = "; ".join(f"{k} {100 * e:.1f} pts" for k, e in sorted(effects.items(), key=lambda kv: -kv[1])[:4])
    obtained = (
        f"{c.key}: {c.high} {_fmt(c.metric, hi.mean)} vs {c.low} {_fmt(c.metric, lo.mean)} "
        f"({interval(hi.mean - lo.mean, se)}); effects (sqrt 2 x std of the value means): {listing}; "
        f"lead over {rival}: {interval(margin, math.sqrt(2) * se)} ({how})"
    )
    return Verdict(c.id, c.report_says, obtained, verdict, numbers(effects=effects, se=se))


def diagnose_has(c: Check, ev: Evidence) -> Verdict:
    from ..report.diagnose import NEEDS_TEST, diagnose

    rows = ev.rows(c.a.experiment, c.a.where)  # type: ignore[union-attr]
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
        verdict = AGREE if (hits == len(rows)) == (c.expect == "present") else DISAGREE
    else:
        verdict = UNSURE
    return Verdict(c.id, c.report_says, obtained, verdict, {"hits": hits, "runs": len(rows), "codes": found})


def not_checkable(c: Check, ev: Evidence) -> Verdict:
    return Verdict(c.id, c.report_says, f"not checkable: {c.reason}", "not checkable")


def kinds() -> dict[str, Any]:
    from . import dissect

    return {
        "compare_means": compare_means,
        "magnitude": magnitude,
        "best_point": best_point,
        "strongest_key": strongest_key,
        "diagnose_has": diagnose_has,
        "not_checkable": not_checkable,
        **dissect.KINDS,
    }


def _describe_point(r: Row, ref: Row | None) -> str:
    """The keys in which ``r``'s config differs from ``ref``'s."""
    if ref is None:
        return "?"
    a, b = _flat(r.config), _flat(ref.config)
    diff = [f"{k}={a[k]}" for k in sorted(a) if k.split(".")[0] not in SKIP and repr(a.get(k)) != repr(b.get(k))]
    return ", ".join(diff[:3]) or "same config"


def check_study(folder: str | Path | Study, out: str | Path) -> list[Verdict]:
    study = folder if isinstance(folder, Study) else load_study(folder)
    meta = read_meta(Path(out))
    ev = Evidence(Path(out), str(meta.get("budget", "full")), study.spec.noise, study)
    table = kinds()
    verdicts = []
    for c in study.spec.findings:
        v = table[c.kind](c, ev)
        if c.budgets is not None and ev.budget not in c.budgets and v.verdict in (AGREE, DISAGREE):
            v.obtained += (
                f"; would be {v.verdict}, but not judged at budget {ev.budget!r} (judged at: {', '.join(c.budgets)})"
            )
            v.verdict = UNSURE
        v.check = describe(c)
        if c.note:
            v.check += f" ({c.note})"
        verdicts.append(v)
    return verdicts


TALLY = (AGREE, DISAGREE, UNSURE, "not checkable")


def format_verdicts(study: Study, out: Path, verdicts: list[Verdict]) -> str:
    meta = read_meta(out)
    lines = [
        f"study {study.name}: results {out} (budget {meta.get('budget', 'unknown')})",
        "",
        "| finding | check | the report says | convlens obtained | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(f"| {v.id} | {v.check} | {v.report_says} | {v.obtained} | {v.verdict} |")
    tally = {k: sum(v.verdict == k for v in verdicts) for k in TALLY}
    lines += ["", ", ".join(f"{n} {k}" for k, n in tally.items())]
    return "\n".join(lines)
