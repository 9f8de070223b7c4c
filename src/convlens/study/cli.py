"""``convlens study run STUDY --budget small`` and ``convlens study check STUDY``."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
A study folder (studies/<name>/) holds a report's experiments and its findings (study.yaml).

  convlens study run STUDY [--budget small] [--out DIR] [--set [ID:]KEY=VALUE]...
      train every experiment into DIR/<experiment>/ (run again to resume); ID: scopes a --set
      to one experiment (e.g. two data sets, two data.root)
  convlens study check STUDY [--out DIR]
      per finding: what the report says, what convlens obtained, agree / disagree / not enough
      evidence, with the numbers (also written to DIR/check.md and DIR/check.json)"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a course report's experiments and check its findings against the results",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["run", "check"], help="run: train the experiments; check: the verdicts")
    p.add_argument("study", metavar="STUDY", help="study folder (with study.yaml)")
    p.add_argument("--budget", help="run: a budget of study.yaml, e.g. small (default: full, the report's recipe)")
    p.add_argument("--out", metavar="DIR", help="results folder (default: runs/study-<name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run: override a config key of every experiment, e.g. --set data.root=DIR, or of one with "
        "ID:KEY=VALUE, e.g. --set cells:data.root=DIR (repeatable)",
    )
    p.add_argument("--only", metavar="ID[,ID...]", help="run: only these experiments")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from ..cli import check_out
    from ..errors import ConvlensError
    from .runner import default_out

    from .spec import load_study

    study = load_study(args.study)
    check_out(args.out)
    out = Path(args.out) if args.out else default_out(study)
    if args.action == "run":
        from .runner import run_study

        only = [s for s in args.only.split(",") if s] if args.only else None
        run_study(study.folder, args.budget or "full", out, args.set, only)
        return 0
    if args.set or args.only or args.budget:
        raise ConvlensError("--set, --only and --budget go with `study run`; `study check` reads the results folder")
    return _check(study, out)


def _check(study, out: Path) -> int:
    from ..errors import ConvlensError
    from ..utils import atomic_write_text, write_json
    from .check import check_study, format_verdicts

    if not out.is_dir():
        raise ConvlensError(f"results folder {out} does not exist; run `convlens study run {study.folder}` first")
    verdicts = check_study(study, out)
    text = format_verdicts(study, out, verdicts)
    write_json(out / "check.json", [v.to_dict() for v in verdicts])
    atomic_write_text(out / "check.md", text + "\n")
    print(text)
    return 0
