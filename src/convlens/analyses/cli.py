"""``convlens analyze``: the analyses' options become flags, generated from their dataclass fields."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..errors import ConvlensError
from .base import ANALYSES, comma_list


def _argument_type(parse):
    """An option's parser as an argparse type: its error becomes argparse's one `error:` line."""

    def convert(text: str):
        try:
            return parse(text)
        except ConvlensError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is out of range; allowed: 1 or more")
    return n


def _flag_kwargs(fields: list[tuple[str, dataclasses.Field]]) -> dict[str, Any]:
    owner, f = fields[0]
    meta, kind = f.metadata, str(f.type)
    helps = list(dict.fromkeys(fl.metadata["help"] for _, fl in fields))
    defaults = list(dict.fromkeys(repr(fl.default) for _, fl in fields if fl.default is not dataclasses.MISSING))
    owners = ", ".join(o for o, _ in fields)
    text = helps[0] if len(helps) == 1 else "; ".join(f"{o}: {fl.metadata['help']}" for o, fl in fields)
    if len(helps) == 1 and len(defaults) == 1 and defaults[0] != "None":
        text += f" (default {defaults[0]})"
    elif len(helps) == 1 and len(defaults) > 1:
        text += " (defaults: " + ", ".join(f"{o} {fl.default!r}" for o, fl in fields) + ")"
    kw: dict[str, Any] = {"dest": f.name, "default": None, "help": f"[{owners}] {text}"}
    if meta.get("parse"):
        kw["type"] = _argument_type(meta["parse"])
    elif kind.startswith("bool"):
        kw["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("int"):
        kw["type"] = int
    elif kind.startswith("float"):
        kw["type"] = float
    if meta.get("choices"):
        kw["choices"] = meta["choices"]
    if meta.get("metavar") and "action" not in kw:
        kw["metavar"] = meta["metavar"]
    return kw


def add_commands(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {n:<12} {cls.describe()}" for n, cls in ANALYSES.items())
    p = sub.add_parser(
        "analyze", help="dissect a trained run: filters, feature maps, statistics, class norms, top-k, ablation, errors",
        description="Run dataset-level analyses on a run folder; each writes RUN/analysis/<name>.json and its "
                    "figures under RUN/analysis/<name>/. Analyses:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("run", help="run folder")
    p.add_argument("--only", type=comma_list, metavar="A,B", help="analyses to run (default: every one that applies)")
    p.add_argument("--skip", type=comma_list, default=[], metavar="A,B", help="analyses to leave out")
    p.add_argument("--split", default="test", help="data split: test, val or train (default test)")
    p.add_argument("--checkpoint", choices=["best", "last"],
                   help="weights to analyse (default: the checkpoint eval.json evaluated, else best)")
    p.add_argument("--batch-size", type=_positive, default=256, help="images per batch; changes speed and memory, not results")
    p.add_argument("--limit", type=_positive, metavar="N", help="use N images of the split, stratified by class (the first images of each class in turn)")
    p.add_argument("--data-root", metavar="PATH", help="where the run's data set is, if its data.root does not resolve from here")
    p.add_argument("--no-figures", action="store_true", help="write the numbers only")
    p.add_argument("--device", default="cpu")
    group = p.add_argument_group("analysis options (each goes to every selected analysis that has it)")
    by_name: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for n, cls in ANALYSES.items():
        for f in dataclasses.fields(cls):
            by_name.setdefault(f.name, []).append((n, f))
    for name, fields in by_name.items():
        group.add_argument("--" + name.replace("_", "-"), **_flag_kwargs(fields))
    p.set_defaults(func=cmd_analyze, _analysis_options=list(by_name))


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..cli import check_writable
    from . import analyze

    check_writable(args.run)
    options = {k: getattr(args, k) for k in args._analysis_options if getattr(args, k) is not None}
    analyze(args.run, args.only, skip=args.skip, split=args.split, checkpoint=args.checkpoint, batch_size=args.batch_size,
            limit=args.limit, data_root=args.data_root, figures=not args.no_figures, device=args.device,
            echo=lambda m: print(m, flush=True), **options)  # fmt: skip
    print(f"analysis folder: {args.run.rstrip('/')}/analysis")
    return 0
