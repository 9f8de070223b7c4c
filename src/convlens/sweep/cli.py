"""``convlens sweep``: run a sweep here, join one as a worker, or tabulate one.

::

    convlens sweep SWEEP.yaml [--workers N] [--out DIR] [--storage URL]
    convlens sweep worker SWEEP.yaml --storage postgresql://... [--out DIR] [--threads T]
    convlens sweep table SWEEP_DIR [--by key1,key2]... [--format md|csv] [--storage URL]
"""

from __future__ import annotations

import argparse
import os

from ..cli import check_out, check_writable
from ..errors import ConvlensError

USAGE = """\
convlens sweep SWEEP.yaml [--workers N] [--out DIR] [--storage URL]
       convlens sweep worker SWEEP.yaml --storage URL [--out DIR] [--threads T]
       convlens sweep table SWEEP_DIR [--by KEY[,KEY...]]... [--format md|csv] [--storage URL]"""

DESCRIPTION = """\
Sweep hyperparameters with Optuna. A sweep file names a base config and the dotted config keys to
vary: lists for a grid (every combination runs exactly once per seed), ranges for random search
or TPE; seeds, a budget and a pruner. Each trial is a run folder SWEEP_DIR/trials/<number>/.

  convlens sweep SWEEP.yaml          run it on this machine (run it again to resume after a crash)
  convlens sweep worker SWEEP.yaml   join the same study from any machine (--storage postgresql://...)
  convlens sweep table SWEEP_DIR     per-trial and group-by tables, plots and best.yaml"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="sweep hyperparameters (grid, random, TPE) with Optuna; tables of results",
        usage=USAGE,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="SWEEP.yaml | worker | table", help="a sweep file, or `worker` / `table`")
    p.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine (default 1); the CPU threads are split between them",
    )
    p.add_argument("--out", help="sweep folder (default: the file's `out`, or sweeps/<name>)")
    p.add_argument(
        "--storage",
        help="Optuna storage URL, e.g. postgresql://user@host/db (default: "
        "$CONVLENS_SWEEP_STORAGE, the file's `storage`, or a journal file in the sweep folder)",
    )
    p.add_argument("--threads", type=int, help="worker: torch threads per trial (default: all cores)")
    p.add_argument("--index", type=int, help=argparse.SUPPRESS)  # set by `convlens sweep` for its workers
    p.add_argument(
        "--by",
        action="append",
        metavar="KEY[,KEY...]",
        help="table: group by these swept keys (repeatable; default: each key alone)",
    )
    p.add_argument("--format", choices=["md", "csv"], default="md", help="table: what to print (both are written)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.target == "table":
        return _table(args)
    if args.target == "worker":
        return _worker(args)
    if args.path is not None:
        raise ConvlensError(f"unexpected argument {args.path!r}; did you mean `convlens sweep worker` or `table`?")
    _only(args, "run", by=args.by, threads=args.threads, index=args.index)
    check_out(args.out)
    from .local import STORAGE_ENV, run_sweep

    storage = args.storage or os.environ.get(STORAGE_ENV)
    out = run_sweep(args.target, workers=args.workers, out=args.out, storage=storage)
    print(f"sweep folder: {out}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    if args.path is None:
        raise ConvlensError("give the sweep file: convlens sweep worker SWEEP.yaml --storage URL")
    _only(args, "worker", by=args.by, workers=args.workers if args.workers != 1 else None)
    check_out(args.out)
    from .local import STORAGE_ENV, check_folder, write_meta
    from .spec import load_sweep
    from .study import default_storage, is_database, mask
    from .worker import run_worker

    sweep = load_sweep(args.path)
    out_dir = sweep.out_dir(args.out)
    url = args.storage or os.environ.get(STORAGE_ENV) or sweep.spec.storage
    if url is None:
        if args.index is None:
            raise ConvlensError(
                "a worker joins a shared study: give --storage URL (e.g. postgresql://user@host/db), "
                "or use `convlens sweep SWEEP.yaml --workers N` on one machine"
            )
        url = default_storage(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_folder(out_dir, sweep)
    write_meta(out_dir, sweep, url)
    name = f"worker {args.index}" if args.index is not None else "worker"
    if args.index is None:
        print(f"{name}: study {sweep.name} at {mask(url)}, trials into {out_dir}", flush=True)
    ran = run_worker(
        sweep,
        out_dir,
        url,
        worker_index=args.index,
        threads=args.threads,
        echo=lambda s: print(f"[{name}] {s}" if args.index is not None else s, flush=True),
    )
    if args.index is None:
        print(
            f"{name}: done after {ran} trial(s); tables: convlens sweep table {out_dir}"
            + (" --storage URL" if is_database(url) else ""),
            flush=True,
        )
    return 0


def _table(args: argparse.Namespace) -> int:
    if args.path is None:
        raise ConvlensError("give the sweep folder: convlens sweep table SWEEP_DIR")
    _only(args, "table", threads=args.threads, index=args.index, workers=args.workers if args.workers != 1 else None)
    check_writable(args.path)
    from .results import write_results

    by = [[k.strip() for k in b.split(",") if k.strip()] for b in args.by] if args.by else None
    from .local import STORAGE_ENV

    res = write_results(args.path, storage=args.storage or os.environ.get(STORAGE_ENV), by=by)
    print(res.text(args.format), end="")
    if args.format == "md":
        print(
            f"\nwritten: {res.out_dir}/trials.csv, groups-*.csv, results.md, results.json"
            + (", best.yaml" if res.best else "")
            + (", plots/" if res.figures else "")
        )
    return 0


def _only(args: argparse.Namespace, mode: str, **given) -> None:
    bad = [f"--{k}" for k, v in given.items() if v is not None]
    if bad:
        cmd = "convlens sweep SWEEP.yaml" if mode == "run" else f"convlens sweep {mode}"
        raise ConvlensError(f"{', '.join(bad)} cannot be used with `{cmd}`")
