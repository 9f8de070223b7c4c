"""``convlens analyze``: the analyses' options become flags, generated from their dataclass fields
by :mod:`convlens.jobs` (the same generator, shared flags and list syntax as ``explain``)."""

from __future__ import annotations

import argparse

from ..jobs import add_job_flags, comma_list, given, jobs, positive


def add_commands(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {n:<12} {j.summary}" for n, j in jobs("analysis").items())
    p = sub.add_parser(
        "analyze",
        help="dissect a trained run: filters, feature maps, statistics, class norms, top-k, ablation, errors",
        description="Run dataset-level analyses on a run folder; each writes RUN/analysis/<name>.json and its "
        "figures under RUN/analysis/<name>/ (<name>-<layers> with --layers); the per-filter figures of "
        "topk, filters and classnorms are drawn by `convlens report` when it first shows them. Analyses:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--only", type=comma_list, metavar="A,B", help="analyses to run (default: every one that applies)")
    p.add_argument("--skip", type=comma_list, default=[], metavar="A,B", help="analyses to leave out")
    p.add_argument(
        "--limit",
        type=positive,
        metavar="N",
        help="use N images of the split, stratified by class (the first images of each class in turn)",
    )
    p.add_argument("--no-figures", action="store_true", help="write the numbers only")
    names = add_job_flags(p, "analysis")
    p.set_defaults(func=cmd_analyze, _analysis_options=names)


def cmd_analyze(args: argparse.Namespace) -> int:
    from .. import STARTED
    from ..cli import check_writable
    from ..jobs import StartupClock

    clock = StartupClock(args.verbose, STARTED)
    from . import analyze

    clock("imports")
    check_writable(args.run)
    options = given(args, args._analysis_options)
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    common = dict(split=args.split, checkpoint=args.checkpoint, limit=args.limit, data_root=args.data_root)
    common |= dict(figures=not args.no_figures, device=args.device, echo=lambda m: print(m, flush=True))
    from ..distributed import world
    from .shard import STATE

    if world() is not None:  # one of several torchrun processes: each reads a shard, rank 0 writes
        from .shard import analyze_under_torchrun

        only = [n for n in (args.only or STATE) if n not in args.skip]
        if analyze_under_torchrun(args.run, only, **common, **options) is None:
            return 0
    else:
        analyze(args.run, args.only, skip=args.skip, clock=clock, **common, **options)
    print(f"analysis folder: {args.run.rstrip('/')}/analysis")
    return 0
