"""``convlens study run``: every experiment of a study, at one budget, into one results folder.

``OUT/<experiment id>/`` is a run folder (a config) or a sweep folder (a sweep). Running again
resumes: finished runs are kept, interrupted ones continue from their last checkpoint, a sweep
resumes as ``convlens sweep`` does. ``OUT/study.json`` records the study, the budget and the
overrides; a folder holds one budget only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..config import load_config, set_dotted
from ..errors import ConvlensError
from ..run import Run, is_run
from .results import read_meta, run_folders, write_meta
from .spec import Experiment, Study, load_study

DONE = ("finished", "diverged")


def default_out(study: Study) -> Path:
    return Path("runs") / f"study-{study.name}"


def run_study(
    folder: str | Path,
    budget: str = "full",
    out: str | Path | None = None,
    sets: list[str] | None = None,
    only: list[str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Train (or resume) every experiment of the study; returns the results folder."""
    echo = echo or (lambda s: print(s, flush=True))
    study = load_study(folder)
    b = study.budget(budget)  # an unknown budget fails before anything runs
    sets = list(sets or [])
    chosen = [e for e in study.spec.experiments if e.id not in b.skip and (not only or e.id in only)]
    if only:
        unknown = [i for i in only if i not in [e.id for e in study.spec.experiments]]
        if unknown:
            raise ConvlensError(f"--only {','.join(unknown)}: no such experiment; experiments: {study.ids()}")
    plans = [(e, study.overrides(budget, e.id, sets)) for e in chosen]
    for e, overrides in plans:  # every config validates before the first one trains
        _validate(study, e, overrides, b.seeds)
    out_dir = Path(out) if out is not None else default_out(study)
    _claim(out_dir, study, budget, sets)
    echo(f"study {study.name}: budget {budget} ({b.note or 'no overrides'}), {len(plans)} experiment(s) -> {out_dir}")
    for e, overrides in plans:
        t0 = time.perf_counter()
        if study.is_sweep(e):
            _run_sweep(study, e, overrides, out_dir / e.id, echo, b.seeds)
        else:
            _run_config(study, e, overrides, out_dir / e.id, echo)
        for path in run_folders(out_dir / e.id):
            _analyses(e, path, echo)
        echo(f"{e.id}: done in {time.perf_counter() - t0:.0f} s")
    return out_dir


def _claim(out_dir: Path, study: Study, budget: str, sets: list[str]) -> None:
    """A results folder holds one study at one budget: refuse to mix another into it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvlensError(f"--out {out_dir} is a file; give a folder")
    meta = read_meta(out_dir)
    if meta and (meta.get("study") != study.name or meta.get("budget") != budget):
        raise ConvlensError(
            f"{out_dir} holds study {meta.get('study')!r} at budget {meta.get('budget')!r}, not "
            f"{study.name!r} at {budget!r}; choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"study": study.name, "budget": budget, "folder": str(study.folder), "set": sets}
    doc["created"] = meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S")
    write_meta(out_dir, doc)


def _validate(study: Study, e: Experiment, overrides: dict[str, Any], seeds: list[int] | None) -> None:
    if study.is_sweep(e):
        _sweep(study, e, overrides, seeds)
    else:
        load_config(study.folder / e.file, overrides)


def _sweep(study: Study, e: Experiment, overrides: dict[str, Any], seeds: list[int] | None):
    from ..sweep.spec import load_sweep

    sweep = load_sweep(study.folder / e.file)
    for key, value in overrides.items():
        set_dotted(sweep.base, key, value)
    if seeds is not None:  # the budget's seeds: every point once per seed (noise for the checks)
        sweep.seeds = list(seeds)
    load_config(sweep.base)  # the overridden base still validates
    for point in sweep.points() if sweep.method == "grid" else []:
        sweep.trial_config(point, sweep.seeds[0])
    return sweep


def _run_config(study: Study, e: Experiment, overrides: dict[str, Any], run_dir: Path, echo) -> None:
    from ..train import train

    if is_run(run_dir):
        status = Run(run_dir).status.get("status")
        if status in DONE:
            echo(f"{e.id}: {status} before, kept ({run_dir})")
            return
        echo(f"{e.id}: {status}: resuming {run_dir}")
        train(resume=run_dir, echo=echo)
        return
    echo(f"{e.id}: training {e.file} ({', '.join(f'{k}={v}' for k, v in overrides.items()) or 'as written'})")
    cfg = load_config(study.folder / e.file, overrides)
    train(cfg, run_dir, echo=echo)


def _run_sweep(study: Study, e: Experiment, overrides: dict[str, Any], out: Path, echo, seeds) -> None:
    from ..sweep.local import run_sweep

    sweep = _sweep(study, e, overrides, seeds)
    echo(f"{e.id}: sweep {e.file} ({len(sweep.cells()) if sweep.method == 'grid' else 'sampled'} trials)")
    run_sweep(sweep, workers=1, out=out, echo=echo, table=False)


def _analyses(e: Experiment, path: Path, echo) -> None:
    if not e.analyses or Run(path).status.get("status") not in DONE:
        return
    from ..run.layout import Layout

    have = {p.name.split("-")[0].removesuffix(".json") for p in Layout(path).analysis_dir.glob("*.json")}
    todo = [a for a in e.analyses if a not in have]
    if todo:
        from ..analyses.pipeline import analyze

        echo(f"{e.id}: analysing {path} ({', '.join(todo)})")
        for name in todo:  # one at a time: analyses share option names (layers, at)
            analyze(path, only=[name], figures=False, echo=echo, **e.options.get(name, {}))
