"""`convlens report` and `convlens diagnose`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time


def cmd_report(args: argparse.Namespace) -> int:
    from ..run import is_run
    from ..runlock import run_lock
    from ..cli import check_out, check_writable
    from . import build_report

    check_out(args.out, kind="file")
    if args.color_by is not None:
        _check_color_by(args.path, args.color_by)
    check_writable(args.path)  # figures are drawn into RUN/report/ wherever the page goes
    t0 = time.perf_counter()
    # a run's report draws its figures into RUN/report/: one writer at a time
    with run_lock(args.path, "report") if is_run(args.path) else contextlib.nullcontext():
        out = build_report(
            args.path,
            args.out,
            echo=print,
            checkpoint=args.checkpoint,
            color_by=args.color_by,
            self_contained=args.self_contained,
            filter_figures=args.filter_figures,
        )
    print(f"report: {out}  ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0


def _check_color_by(path: str, key: str) -> None:
    """``--color-by KEY`` names a key the sweep folder's trials vary (before any report is drawn)."""
    from pathlib import Path

    from ..errors import ConvlensError
    from ..run import is_run
    from .sweep_report import is_sweep, varied_keys

    if is_run(path) or not (Path(path).is_dir() and is_sweep(Path(path))):
        raise ConvlensError(f"--color-by {key!r} colours a sweep's learning curves; {path} is not a sweep folder")
    varying = varied_keys(Path(path))
    if key not in varying:
        raise ConvlensError(
            f"--color-by {key!r} is not a key the trials vary; allowed: {', '.join(varying) or 'none (one trial)'}"
        )


def cmd_diagnose(args: argparse.Namespace) -> int:
    from ..run import Run, is_run
    from ..runlock import holder
    from . import diagnose, format_findings
    from .diagnose import diagnose_sweep
    from .sweep_report import is_sweep

    if not is_run(args.run) and is_sweep(args.run):  # a sweep folder: trends across its trials
        trends = diagnose_sweep(args.run, args.metric)
        print(json.dumps([f.to_dict() for f in trends], indent=1) if args.json else format_findings(trends))
        return 0
    run = Run(args.run)
    busy = holder(run.path)
    if busy:  # diagnose only reads: it goes on, on the epochs written so far
        print(
            f"warning: {run.path} is still being written by {busy}; these findings cover the epochs so far",
            file=sys.stderr,
        )
    findings = diagnose(run)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=1))
    else:
        print(format_findings(findings))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a run or sweep folder",
        description="Write report.html for a run folder or a sweep folder. It needs no network: its images "
        "are the run folder's own files, linked and loaded when looked at, so keep the page beside the folder "
        "(or pass --self-contained for one file to share). Figures are drawn once into RUN/report/ and reused.",
    )
    p.add_argument("path", metavar="RUN|SWEEP_DIR", help="run folder or sweep folder")
    p.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        help="the checkpoint a run's report is about; analyses of other weights are marked "
        "(default: the one eval.json evaluated, else best)",
    )
    p.add_argument(
        "--color-by",
        metavar="KEY",
        help="a sweep folder's report: colour the learning curves by this varied config key, e.g. "
        "train.optimizer.lr (default: the first varied key)",
    )
    p.add_argument(
        "--self-contained",
        action="store_true",
        help="embed every image in the one HTML file (to share it; larger and slower to open) instead of "
        "linking the run folder's files",
    )
    p.add_argument(
        "--filter-figures",
        metavar="WHICH",
        default="auto",
        help="a run folder's per-filter figures (top-k images, weights, class-wise norms) to draw now: auto (every "
        "one, unless there are more than 2,048: then none, and the filter browser's pages say how to draw them), "
        "all, none, or layers separated by commas (default: auto)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "diagnose",
        help="plain-language findings about a run, with their evidence",
        description="Divergence, a collapsed or unstable classifier, overfitting (told from instability, and "
        "from training accuracy below validation), dead filters, training stopped too early or "
        "a flat loss, and the most confused class pairs. On a sweep folder: which key moves accuracy most "
        "and by how much, against the noise among seeds.",
    )
    p.add_argument("run", metavar="RUN|SWEEP_DIR", help="run folder, or a sweep folder: trends across its trials")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--metric",
        choices=["test_acc", "best_val_acc", "final_train_acc", "gap"],
        help="a sweep folder's metric (default: test_acc when every trial has it, else best_val_acc)",
    )
    p.set_defaults(func=cmd_diagnose)
