"""The dissection findings: per-class accuracy, the confusion matrix, class preferences of a
layer, top-k class histograms, per-layer statistics of the analyses, ablation and receptive fields.

A run at chance level (test accuracy below chance + ``results.MIN_ABOVE_CHANCE``) is no evidence for any
of them: an untrained or collapsed network says nothing about what a trained one learned.
"""

from __future__ import annotations

import math
from typing import Any

from ..run.layout import Layout
from ..utils import read_json
from .results import Row, trained as _trained
from .spec import Check
from .stats import AGREE, DISAGREE, UNSURE, Z, binvar, diff_se, expectation, interval, judge, numbers, observe, seed_sd

VEHICLES = ("airplane", "automobile", "ship", "truck")  # CIFAR-10's vehicles; the other six are animals


def _eval(r: Row) -> dict[str, Any]:
    f = Layout(r.path).eval_file
    return read_json(f) if f.is_file() else {}


def _result(r: Row, name: str) -> dict[str, Any] | None:
    for f in Layout(r.path).artifacts(name):
        return read_json(f)
    return None


def _missing(c: Check, why: str, note: str | None = None) -> Any:
    from .check import Verdict

    return Verdict(c.id, c.report_says, why + (f"; {note}" if note else ""), UNSURE)


def _class_index(classes: list[str], names: list[str]) -> list[int]:
    return [classes.index(n) for n in names if n in classes]


# -- per-class accuracy ------------------------------------------------------------------------
def per_class(c: Check, ev: Any) -> Any:
    """Mean accuracy of ``classes`` against ``against`` (same runs), or of ``classes`` in ``a``
    against ``b``; the binomial error of each class's test images."""
    from .check import Verdict

    def stat(names: list[str]):
        def fn(r: Row) -> tuple[float, float] | None:
            e = _eval(r)
            acc, cm = e.get("per_class_accuracy"), e.get("confusion")
            if not acc or not cm:
                return None
            idx = _class_index(list(e.get("classes") or _classes(r)), names)
            support = [sum(cm[i]) for i in idx]
            m = len(idx)
            return sum(acc[i] for i in idx) / m, sum(binvar(acc[i], s) for i, s in zip(idx, support)) / m**2

        return fn

    a_rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    if c.b is not None:
        b_rows, note_b = _trained(ev.rows(c.b.experiment, c.b.where))
        a, b = observe(a_rows, stat(c.classes)), observe(b_rows, stat(c.classes))
        note = note or note_b
        label = f"{', '.join(c.classes)} in a vs in b"  # type: ignore[arg-type]
    else:
        a, b = observe(a_rows, stat(c.classes)), observe(a_rows, stat(c.against))  # type: ignore[arg-type]
        label = f"{', '.join(c.classes)} vs {', '.join(c.against)}"  # type: ignore[arg-type]
    if not a.n or not b.n:
        return _missing(c, "missing per-class results", note)
    sd, how = seed_sd(ev.noise, a, b)
    se = diff_se(sd, a, b)
    diff = a.mean - b.mean
    obtained = f"mean class accuracy {label}: {100 * a.mean:.1f}% vs {100 * b.mean:.1f}% ({interval(diff, se)}; {how})"
    return Verdict(c.id, c.report_says, obtained, judge(diff, se, c.expect), numbers(a=a.mean, b=b.mean, se=se))


def _classes(r: Row) -> list[str]:
    try:
        from ..run import Run

        return list(Run(r.path).classes)
    except Exception:
        return []


# -- confusion matrix --------------------------------------------------------------------------
def _summed_confusion(rows: list[Row]) -> tuple[list[list[int]], list[str]] | None:
    total, classes = None, []
    for r in rows:
        e = _eval(r)
        cm = e.get("confusion")
        if not cm:
            continue
        classes = list(e.get("classes") or _classes(r))
        total = cm if total is None else [[x + y for x, y in zip(p, q)] for p, q in zip(total, cm)]
    return (total, classes) if total is not None else None


def _pairs(cm: list[list[int]], classes: list[str], cross: bool) -> dict[tuple[str, str], int]:
    out = {}
    for i in range(len(cm)):
        for j in range(i + 1, len(cm)):
            if cross and ((classes[i] in VEHICLES) == (classes[j] in VEHICLES)):
                continue
            out[(classes[i], classes[j])] = cm[i][j] + cm[j][i]
    return out


def confusion(c: Check, ev: Any) -> Any:
    from .check import Verdict

    rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    got = _summed_confusion(rows)
    if got is None:
        return _missing(c, "no confusion matrix", note)
    cm, classes = got
    if c.mode == "within_groups":
        return _within_groups(c, cm, classes)
    pairs = _pairs(cm, classes, cross=c.mode == "top_cross_pair")
    want = tuple(sorted(c.pair, key=classes.index))  # type: ignore[arg-type]
    mine = pairs.get(want, 0)  # type: ignore[call-overload]
    rival, count = max(((p, n) for p, n in pairs.items() if p != want), key=lambda pn: pn[1])
    # counts of confusions are Poisson: the difference of two has variance their sum
    se = math.sqrt(max(mine + count, 1))
    diff = mine - count
    verdict = judge(diff, se, "greater")
    obtained = (
        f"{want[0]}-{want[1]} confused {mine} times, the most confused other pair {rival[0]}-{rival[1]} {count} "
        f"(difference {diff:+d}, interval [{diff - Z * se:+.0f}, {diff + Z * se:+.0f}]; {len(rows)} run(s))"
    )
    return Verdict(c.id, c.report_says, obtained, verdict, numbers(pair=mine, rival=count, rival_pair=list(rival)))


def _within_groups(c: Check, cm: list[list[int]], classes: list[str]) -> Any:
    """Share of errors that stay within the animals or within the vehicles, against the share if
    each class's errors spread evenly over the other classes."""
    from .check import Verdict

    errors = within = 0
    expected = 0.0
    k = len(classes)
    for i, name in enumerate(classes):
        group = [j for j, n in enumerate(classes) if (n in VEHICLES) == (name in VEHICLES) and j != i]
        e = sum(cm[i]) - cm[i][i]
        errors += e
        within += sum(cm[i][j] for j in group)
        expected += e * len(group) / (k - 1)
    if not errors:
        return _missing(c, "no errors in the confusion matrix")
    share, base = within / errors, expected / errors
    se = math.sqrt(base * (1 - base) / errors)
    obtained = (
        f"{100 * share:.1f}% of {errors} errors stay within animals or vehicles, {100 * base:.1f}% if spread evenly "
        f"({interval(share - base, se)})"
    )
    return Verdict(c.id, c.report_says, obtained, judge(share - base, se, "greater"), numbers(share=share, base=base))


# -- analyses of layers ------------------------------------------------------------------------
def _filter_values(result: dict[str, Any], analysis: str, layer: str, name: str) -> list[float] | None:
    lay = (result.get("layers") or {}).get(layer)
    if lay is None:
        return None
    if analysis == "topk":
        out = []
        for f in lay.get("filters", []):
            hist = f.get("class_histogram") or []
            v = max(hist) / sum(hist) if name == "top_share" and sum(hist) else f.get(name)
            if v is not None:
                out.append(float(v))
        return out
    values = lay.get(name)
    if values is None:
        return None
    if name == "dead":  # a list of filter indices
        return [float(i) for i in values]
    quiet = set(lay.get("quiet", [])) if analysis == "classnorms" else set()
    return [float(v) for i, v in enumerate(values) if i not in quiet and v is not None and v == v]


def _reduce(values: list[float], how: str) -> float:
    if how == "count":
        return float(len(values))
    if not values:
        return math.nan
    s = sorted(values)
    if how == "max":
        return s[-1]
    if how == "mean":
        return sum(s) / len(s)
    q = lambda p: s[min(len(s) - 1, max(0, round(p * (len(s) - 1))))]  # noqa: E731
    return q(0.9) - q(0.1) if how == "spread" else (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def _layer_number(c: Check, r: Row) -> float | None:
    result = _result(r, c.analysis)  # type: ignore[arg-type]
    if result is None:
        return None
    x = _filter_values(result, c.analysis, c.layer, c.field)  # type: ignore[arg-type]
    if x is None:
        return None
    v = _reduce(x, c.reduce)  # type: ignore[arg-type]
    if c.compare_layer is None:
        return v
    y = _filter_values(result, c.analysis, c.compare_layer, c.field)  # type: ignore[arg-type]
    if y is None:
        return None
    w = _reduce(y, c.reduce)  # type: ignore[arg-type]
    return v / w if w > 0 else math.inf if v > 0 else math.nan


def _quiet(r: Row, c: Check) -> str:
    layers = (_result(r, "classnorms") or {}).get("layers") or {}
    names = [c.layer, c.compare_layer] if c.compare_layer else [c.layer]
    return " / ".join(f"{n} {len(layers.get(n, {}).get('quiet', []))}" for n in names)


def layer_stat(c: Check, ev: Any) -> Any:
    """A statistic of an analysis' per-filter numbers in ``layer`` (or its ratio to
    ``compare_layer``'s) against ``value``. One run has no noise estimate: the point decides, with
    the tolerance as a margin; seeds give an interval."""
    from .check import Verdict

    rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    obs = observe(rows, lambda r: (v, 0.0) if (v := _layer_number(c, r)) is not None else None)
    if not obs.n:
        return _missing(
            c, f"no {c.analysis} result for {c.layer}" + (f" and {c.compare_layer}" if c.compare_layer else ""), note
        )
    sd, how = seed_sd(None, obs)
    se = sd / math.sqrt(obs.n)
    value, tol = float(c.value), c.tolerance_for(ev.budget) or 0.0  # type: ignore[arg-type]
    what = f"{c.reduce} {c.field} of {c.layer}" + (f" / {c.compare_layer}" if c.compare_layer else "")
    est = obs.mean
    if c.expect in ("greater", "less") and tol:  # the tolerance is a margin around the value
        value = value + tol if c.expect == "greater" else value - tol
    obtained = f"{what}: {est:.4g} (n={obs.n}; {how}); {expectation(c.expect, float(c.value), tol, 1)}"  # type: ignore[arg-type]
    if c.analysis == "classnorms":  # silent filters have no class profile: say how many were left out
        quiet = [_quiet(r, c) for r in obs.rows]
        obtained += f"; nearly silent filters left out: {', '.join(quiet)}"
    if note:
        obtained += f"; {note}"
    return Verdict(c.id, c.report_says, obtained, judge(est, se, c.expect, value, tol), numbers(value=est, n=obs.n))


def class_preference(c: Check, ev: Any) -> Any:
    """classnorms: each filter's class means over its mean across classes, averaged over the
    layer's (non-quiet) filters: ``classes`` against ``against``."""
    from .check import Verdict

    def fn(r: Row) -> tuple[float, float] | None:
        res = _result(r, "classnorms")
        lay = ((res or {}).get("layers") or {}).get(c.layer)
        if not lay:
            return None
        names = res.get("classes") or _classes(r)  # type: ignore[union-attr]
        hi, lo = _class_index(names, c.classes), _class_index(names, c.against)  # type: ignore[arg-type]
        quiet, diffs = set(lay.get("quiet", [])), []
        for i, means in enumerate(lay["class_means"]):
            m = sum(x for x in means if x is not None) / max(1, sum(x is not None for x in means))
            if i in quiet or not m:
                continue
            diffs.append((sum(means[j] for j in hi) / len(hi) - sum(means[j] for j in lo) / len(lo)) / m)
        return (sum(diffs) / len(diffs), 0.0) if diffs else None

    rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    obs = observe(rows, fn)
    if not obs.n:
        return _missing(c, f"no classnorms result for {c.layer}", note)
    sd, how = seed_sd(None, obs)
    se, tol = sd / math.sqrt(obs.n), c.tolerance_for(ev.budget) or 0.0
    verdict = judge(obs.mean, se, c.expect, tol if c.expect == "greater" else -tol)
    obtained = (
        f"{c.layer}: {', '.join(c.classes)} excite its filters {100 * obs.mean:+.1f}% relative to "  # type: ignore[arg-type]
        f"{', '.join(c.against)} (mean over filters, n={obs.n}; {how}); margin {100 * tol:g}%"  # type: ignore[arg-type]
    )
    return Verdict(c.id, c.report_says, obtained, verdict, numbers(relative=obs.mean, n=obs.n))


def topk_class(c: Check, ev: Any) -> Any:
    """topk: the classes of every filter's top images in ``layer``: ``classes`` (one) is the most
    frequent, ahead of the next class by more than the counts' noise."""
    from .check import Verdict

    rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    counts: list[int] = []
    names: list[str] = []
    for r in rows:
        res = _result(r, "topk")
        lay = ((res or {}).get("layers") or {}).get(c.layer)
        if not lay:
            continue
        names = _classes(r)
        for f in lay["filters"]:
            h = f.get("class_histogram") or []
            counts = [x + y for x, y in zip(counts, h)] if counts else list(h)
    if not counts or not names:
        return _missing(c, f"no topk result for {c.layer}", note)
    want = _class_index(names, c.classes)[0]  # type: ignore[arg-type]
    rival = max((i for i in range(len(counts)) if i != want), key=lambda i: counts[i])
    diff, se = counts[want] - counts[rival], math.sqrt(max(counts[want] + counts[rival], 1))
    obtained = (
        f"{c.layer}'s top images: {names[want]} {counts[want]}, the next class {names[rival]} {counts[rival]} "
        f"of {sum(counts)} (difference {diff:+d}, interval [{diff - Z * se:+.0f}, {diff + Z * se:+.0f}])"
    )
    return Verdict(c.id, c.report_says, obtained, judge(diff, se, "greater"), numbers(counts=counts))


# -- ablation -------------------------------------------------------------------------------------
def _ablation_stat(c: Check, s: dict[str, Any], classes: list[str]) -> tuple[float, float, str] | None:
    before, after, n = s["before"], s["after"], sum(map(sum, s["before"]["confusion"]))
    if c.mode == "overall_drop":
        d = before["accuracy"] - after["accuracy"]
        return d, math.sqrt(binvar(before["accuracy"], n) + binvar(after["accuracy"], n)), "overall drop"
    drops = [
        (b - a, sum(row))
        for b, a, row in zip(before["per_class_accuracy"], after["per_class_accuracy"], before["confusion"])
    ]
    veh = [i for i, name in enumerate(classes) if name in VEHICLES]
    ani = [i for i in range(len(classes)) if i not in veh]
    var = [
        binvar(before["per_class_accuracy"][i], m) + binvar(after["per_class_accuracy"][i], m)
        for i, (_, m) in enumerate(drops)
    ]
    if c.mode == "vehicles_vs_animals":
        d = sum(drops[i][0] for i in veh) / len(veh) - sum(drops[i][0] for i in ani) / len(ani)
        v = sum(var[i] for i in veh) / len(veh) ** 2 + sum(var[i] for i in ani) / len(ani) ** 2
        return d, math.sqrt(v), "mean class drop of vehicles minus animals"
    if c.mode == "some_class_gains":
        i = min(range(len(drops)), key=lambda k: drops[k][0])
        return -drops[i][0], math.sqrt(var[i]), f"largest class gain ({classes[i]})"
    diff = s["diff"]["confusion"]
    if c.mode == "vehicles_to_animals":
        d = sum(diff[i][j] for i in veh for j in ani) - sum(diff[i][j] for i in ani for j in veh)
        moved = sum(abs(diff[i][j]) for i in range(len(classes)) for j in range(len(classes)) if i != j)
        return float(d), math.sqrt(max(moved, 1)), "vehicles->animals minus animals->vehicles errors gained"
    i, j = _class_index(classes, c.pair)  # type: ignore[arg-type]
    d = diff[i][j] + diff[j][i]
    return (
        float(d),
        math.sqrt(max(abs(d) + before["confusion"][i][j] + before["confusion"][j][i], 1)),
        "pair errors gained",
    )


def ablation(c: Check, ev: Any) -> Any:
    from .check import Verdict

    rows, note = _trained(ev.rows(c.a.experiment, c.a.where))
    for r in rows:
        res = _result(r, "ablate")
        if res and res.get("set"):
            got = _ablation_stat(c, res["set"], res.get("classes") or _classes(r))
            if got is None:
                continue
            d, se, what = got
            scale = 100.0 if c.mode in ("overall_drop", "vehicles_vs_animals", "some_class_gains") else 1.0
            unit = " pts" if scale != 1 else ""
            obtained = f"{what}: {interval(d, se, scale, unit)} (filters {res['set'].get('filters')})"
            return Verdict(c.id, c.report_says, obtained, judge(d, se, "greater"), numbers(value=d, se=se))
    return _missing(c, "no ablate result", note)


# -- receptive fields -------------------------------------------------------------------------------
def _network(c: Check, ev: Any) -> tuple[Any, tuple[int, ...]] | None:
    """The experiment's network and input shape: from a run, else built from its config file."""
    from ..config import load_config
    from ..models import build_model
    from ..run import Run

    rows = ev.rows(c.a.experiment, c.a.where)
    if rows:
        run = Run(rows[0].path)
        d = run.dataset
        shape = tuple(d["shape"])
        return build_model(run.config.model, shape, len(d["classes"]), d["mean"], d["std"]), shape
    if ev.study is None or ev.study.is_sweep(ev.study.experiment(c.a.experiment)):
        return None
    cfg = load_config(ev.study.folder / ev.study.experiment(c.a.experiment).file)
    if cfg.data.name not in ("cifar10", "mnist"):  # the input shape of other data sets is read from a run
        return None
    size = cfg.data.resize or (28 if cfg.data.name == "mnist" else 32)
    shape = (1 if cfg.data.grayscale or cfg.data.name == "mnist" else 3, size, size)
    return build_model(cfg.model, shape, 10), shape


def receptive_field(c: Check, ev: Any) -> Any:
    """The receptive fields convlens computes for the experiment's network (no training needed)."""
    from .check import Verdict
    from ..models.summary import receptive_fields

    got_net = _network(c, ev)
    if got_net is None:
        return _missing(c, "missing results (no run and no config to build the network from)")
    model, shape = got_net
    rfs = receptive_fields(model, shape)
    got = [rfs[name].size if name in rfs else None for name in c.layers]  # type: ignore[union-attr]
    want = [int(v) for v in c.values]  # type: ignore[union-attr]
    wrong = [f"{n}: {g} (reported {w})" for n, g, w in zip(c.layers, got, want) if g != w]  # type: ignore[arg-type]
    obtained = f"convlens computes {', '.join(map(str, got))}" + (f"; differs at {'; '.join(wrong)}" if wrong else "")
    return Verdict(c.id, c.report_says, obtained, DISAGREE if wrong else AGREE, {"sizes": got})


KINDS = {
    "per_class": per_class,
    "confusion": confusion,
    "class_preference": class_preference,
    "topk_class": topk_class,
    "layer_stat": layer_stat,
    "ablation": ablation,
    "receptive_field": receptive_field,
}
