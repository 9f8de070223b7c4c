"""Run several analyses on one run, the way ``convlens analyze`` does.

Streaming analyses (stats, classnorms, topk) share one pass over the data; the others run in
registry order. Options are given once and go to every selected analysis that has them
(``layers`` to all that take layers); an option no selected analysis takes is an error, so a typo
never passes silently.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..results import Results
from ..run.layout import Layout
from ..runlock import writes_run
from . import load_all
from .base import ANALYSES, Analysis, AnalysisError, Streaming, Subject, inference, subset_note
from .stream import stream

load_all()  # every analysis registered before the registry is read


def option_owners(names: Iterable[str]) -> dict[str, list[str]]:
    """Option name -> the analyses (among ``names``) that take it."""
    owners: dict[str, list[str]] = {}
    for n in names:
        for f in dataclasses.fields(ANALYSES[n]):
            owners.setdefault(f.name, []).append(n)
    return owners


def select(only: Iterable[str] | None, skip: Iterable[str] = ()) -> list[str]:
    names = [n for n in ANALYSES if ANALYSES[n].by_default] if only is None else list(dict.fromkeys(only))
    for n in [*names, *skip]:
        if n not in ANALYSES:
            raise AnalysisError(f"unknown analysis {n!r}; analyses: {', '.join(ANALYSES)}")
    return [n for n in names if n not in set(skip)]


def build(names: list[str], options: dict[str, Any]) -> list[Analysis]:
    owners = option_owners(names)
    unused = [k for k, v in options.items() if v is not None and k not in owners]
    if unused:
        every = option_owners(ANALYSES)
        why = "; ".join(
            f"{k} is an option of {', '.join(every[k])}" if k in every else f"{k} is no analysis' option"
            for k in unused
        )
        raise AnalysisError(
            f"option(s) {', '.join(unused)} not used by the selected analyses ({', '.join(names)}): {why}"
        )
    out = []
    for n in names:
        cls = ANALYSES[n]
        fields = {f.name for f in dataclasses.fields(cls)}
        out.append(cls(**{k: v for k, v in options.items() if k in fields and v is not None}))
    return out


@writes_run("analyze")
def analyze(
    run: str | Path | Any,
    only: Iterable[str] | None = None,
    *,
    skip: Iterable[str] = (),
    split: str = "test",
    checkpoint: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    data_root: str | None = None,
    figures: bool = True,
    device: str = "cpu",
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    clock: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Run analyses on a run folder (or a ready :class:`Subject`); returns ``{name: result}``.

    Without ``only``, every analysis that applies to the model runs (the conv analyses are
    skipped, with a note, for recurrent models); a name in ``only`` that does not apply is an
    error that lists those that do. ``clock(step)``, if given, is told when the data and model are
    loaded (``--verbose``'s start-up breakdown).
    """
    names = select(only, skip)
    analyses = build(names, options)  # bad options fail before any data is loaded
    if isinstance(run, Subject):
        subject = run
    else:
        subject = Subject.from_run(
            run,
            split,
            checkpoint,
            limit=limit,
            data_root=data_root,
            device=device,
            batch_size=batch_size,
            figures=figures,
            progress=progress,
            echo=echo,
        )
    if clock is not None:
        clock("data and model")
    say = subject.say
    chosen = []
    for a in analyses:
        why = a.applies(subject)
        if why and only is not None:
            a.check(subject)  # raises, naming the analyses that do apply
        if why:
            say(f"{a.name}: skipped ({why})")
        else:
            a.validate(subject)
            chosen.append(a)
    if subject.subset:
        say(f"data: {subset_note(subject.subset)}")
    results: dict[str, dict[str, Any]] = {}
    readers = [a for a in chosen if isinstance(a, Streaming) and a.streams()]
    for a in chosen:
        if any(a is r for r in readers):
            if a is readers[0]:
                results.update(_shared_pass(subject, readers))
        else:
            results[a.name] = a(subject)
            _report(subject, a, results[a.name])
    return Results({a.name: results[a.name] for a in chosen})


def _shared_pass(subject: Subject, readers: list[Streaming]) -> dict[str, dict[str, Any]]:
    out = {}
    with inference(subject.model):
        for r in readers:
            r.clear(subject)
        seconds = stream(subject, readers)
        for r in readers:
            t0 = time.perf_counter()
            result = r.finish(subject)
            out[r.name] = r.publish(subject, result, seconds + time.perf_counter() - t0)
            _report(subject, r, out[r.name])
    return out


def _report(subject: Subject, a: Analysis, result: dict[str, Any]) -> None:
    where = f" -> {Layout(subject.root).artifact(a.name, a.key_for(subject)).json}" if subject.root is not None else ""
    later = sum(1 for e in result["figures"] if e.get("pending"))
    drawn = f" ({later} per-filter, drawn by the report)" if later else ""
    subject.say(f"{a.name}: {result['seconds']:.1f} s, {len(result['figures'])} figures{drawn}{where}")
    for line in a.lines(result):
        subject.say(f"  {line}")
