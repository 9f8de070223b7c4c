"""Reports and diagnosis: one HTML page per run or sweep folder, and plain-language
findings about what went wrong in training.

>>> from convlens.report import build_report, diagnose   # doctest: +SKIP
>>> build_report("runs/demo")                             # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import RunError
from ..run import Run, is_run
from .diagnose import Finding, diagnose, format_findings

__all__ = ["Finding", "build_report", "diagnose", "format_findings"]


def build_report(
    path: str | Path,
    out: str | Path | None = None,
    echo: Callable[[str], None] = lambda s: None,
    checkpoint: str | None = None,
    color_by: str | None = None,
    self_contained: bool = False,
    filter_figures: str = "auto",
) -> Path:
    """Write ``report.html`` for a run folder or a sweep folder; returns its path. ``checkpoint``
    (a run folder's best or last) is the one the report is about: default, the one eval.json
    evaluated; analyses computed from other weights are marked. ``color_by``: a sweep folder's
    varied config key its learning curves are coloured by (default: the first one).

    The page links its images (in the run folder, loaded when looked at): keep it beside the run
    folder, or pass ``self_contained=True`` for one file with every image embedded, to share.
    ``filter_figures`` (a run folder): which per-filter figures are drawn now: ``"auto"`` (every
    one, unless a large network has thousands), ``"all"``, ``"none"`` or layers separated by commas."""
    from .run_report import build_run_report
    from .sweep_report import build_sweep_report, is_sweep

    path = Path(path)
    if is_run(path):
        if color_by is not None:
            raise RunError(f"color_by={color_by!r} colours a sweep's learning curves; {path} is a run folder")
        return build_run_report(Run(path), out, echo, checkpoint, self_contained, filter_figures)
    if path.is_dir() and is_sweep(path):
        return build_sweep_report(path, out, echo, color_by, self_contained)
    raise RunError(
        f"{path} is neither a run folder (with config.yaml) nor a sweep folder (with trials/<n>/ run folders)"
    )
