"""The command line: parses, calls the Python API, prints. Nothing else lives here.

Each capability adds its subcommands through an ``add_commands(subparsers)`` function in its own
package, listed in ``PLUGINS``; a command's handler is stored as the parser default ``func``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .errors import ConvlensError

# Subcommands contributed by the other parts of the package, in `--help` order.
PLUGINS: list[str] = [
    "convlens.analyses.cli",
    "convlens.explain.cli",
    "convlens.sweep.cli",
    "convlens.report.cli",
    "convlens.study.cli",
]


def _echo(msg: str) -> None:
    print(msg, flush=True)


class Parser(argparse.ArgumentParser):
    """Every mistake on the command line is one ``error:`` line (exit 2), like the API's errors."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def check_out(path: str | None, flag: str = "--out", kind: str = "folder") -> None:
    """Refuse an output path that cannot be created: a file where a folder is wanted, a folder where
    a file is wanted, or a file standing where a parent folder should be."""
    if path is None:
        return
    p = Path(path)
    if kind == "folder" and p.exists() and not p.is_dir():
        raise ConvlensError(f"{flag} {path} is a file; give a folder")
    if kind == "file" and p.is_dir():
        from .run.layout import REPORT_HTML

        raise ConvlensError(f"{flag} {path} is a folder; give the file to write, e.g. {p / REPORT_HTML}")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConvlensError(f"{flag} {path}: {parent} is a file, so no folder can be created inside it")
            break


def check_writable(folder: str | Path) -> None:
    """Fail before a long computation when the results could not be written into ``folder``: the
    write is tried, since permission bits do not tell (root ignores them, read-only mounts do not)."""
    folder = Path(folder)
    if not folder.is_dir():
        return  # the command's own check names what is missing
    try:
        fd, tmp = tempfile.mkstemp(prefix=".convlens-write-test.", dir=folder)
    except OSError as exc:
        raise ConvlensError(f"cannot write {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def os_error_line(exc: OSError) -> str:
    """``cannot write RUN/x: Permission denied``: the path and the system's reason, no traceback."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    return f"cannot {_verb(exc, path)} {path}: {reason}" if path is not None else reason


def _verb(exc: OSError, path: str) -> str:
    """What failed, from the error and the path itself: ``read`` for a missing file, a symlink
    loop or a file or folder without read permission; ``write`` for a full or read-only disk or
    a path that exists and can be read; ``open`` when nothing tells."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EEXIST):
        return "write"
    if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
        return "read"
    if exc.errno in (errno.EACCES, errno.EPERM) and os.path.exists(path):
        need = os.R_OK | os.X_OK if os.path.isdir(path) else os.R_OK
        return "read" if not os.access(path, need) else "write"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "write"  # creating it was refused
    return "open"


# ----------------------------------------------------------------------------------------------
# foundation commands


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.resume and args.config:
        raise ConvlensError("give either CONFIG or --resume RUN, not both")
    if not args.resume and not args.config:
        raise ConvlensError("give a CONFIG file to train from, or --resume RUN to continue a run")
    from .distributed import world

    follower = (world() or (0, 1))[0] != 0  # a torchrun process after the first: trains, writes nothing
    if not follower:
        check_out(args.out)
    if args.resume and not follower:
        check_writable(args.resume)
    if args.verify_cache:
        os.environ["CONVLENS_VERIFY_CACHE"] = "1"  # every later read of the data in this process too
    overrides = args.set + ([f"train.device={args.device}"] if args.device else [])
    run = train(args.config, args.out, resume=args.resume, overrides=overrides, echo=_echo)
    if follower:
        return 0
    status = run.status
    print(f"run folder: {run.path}  (status: {status.get('status')})")
    return 0 if status.get("status") == "finished" else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_run

    check_writable(args.run)
    evaluate_run(args.run, args.checkpoint, args.tta, echo=_echo)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS

    if args.action == "preview":
        return _preview(args)
    if args.config or args.out:
        raise ConvlensError("a CONFIG and --out go with `convlens datasets preview CONFIG --out fig.png`")
    for name, info in sorted(DATASETS.items()):
        print(f"{name:<14} {info.description}")
        print(f"{'':<14} offline: {info.offline}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.preview import write_preview

    if not args.config:
        raise ConvlensError("datasets preview needs a CONFIG (YAML) whose data.augment it draws")
    if not args.out or not args.out.lower().endswith(".png"):
        raise ConvlensError(f"--out {args.out!r}: give the PNG to write, e.g. --out augment.png")
    check_out(args.out, kind="file")
    for flag, value in (("--count", args.count), ("--copies", args.copies)):
        if not 1 <= value <= 64:
            raise ConvlensError(f"{flag} {value} is out of range; allowed: 1 to 64")
    path = write_preview(load_config(args.config, args.set), args.out, args.count, args.copies, args.seed)
    print(
        f"{path}: {args.count} training images (rows), the original then {args.copies} augmented copies; "
        f"tiles described in {path.with_suffix('.json')}"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .config import load_config
    from .models import PRESETS, build_model, summarize, totals
    from .models.summary import format_table

    if args.classes < 1:
        raise ConvlensError(f"--classes {args.classes} is out of range; allowed: 1 or more")
    if args.input and min(args.input) < 1:
        raise ConvlensError(
            f"--input {' '.join(map(str, args.input))} is out of range; allowed: C H W of 1 or more each"
        )
    if args.name:
        if args.name not in PRESETS:
            raise ConvlensError(f"unknown preset {args.name!r}; allowed: {', '.join(sorted(PRESETS))}")
        p = PRESETS[args.name]
        shape = tuple(args.input) if args.input else p.example_input
        # --set options.kernel=7 (or model.options.kernel=7): the keys of the config's model section
        sets = [s[len("model.") :] if s.startswith("model.") else s for s in args.set]
        bad = [s for s in sets if not s.startswith("options.")]
        if bad:
            raise ConvlensError(f"--set {bad[0]!r}: models takes preset options only, e.g. --set options.kernel=7")
        cfg = load_config({"model": {"preset": p.name}}, [f"model.{s}" for s in sets]).model
        model = build_model(cfg, shape, args.classes)
        print(
            f"{p.name}: {p.description}\ninput {'x'.join(map(str, shape))}, {args.classes} classes, "
            f"options { ({**p.defaults(), **cfg.options}) }\n"
        )
        print(format_table(summarize(model, shape)))
        return 0
    print(f"{'preset':<9} {'input':<9} {'params':>11} {'MACs/image':>14}  description")
    for name, p in PRESETS.items():
        model = build_model(load_config({"model": {"preset": name}}).model, p.example_input, args.classes)
        t = totals(summarize(model, p.example_input))
        print(
            f"{name:<9} {'x'.join(map(str, p.example_input)):<9} {t['params']:>11,} {t['macs']:>14,}  {p.description}"
        )
    print("\n`convlens models NAME` shows one preset layer by layer (output shapes, receptive fields).")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .config import parse_override
    from .models.factory import consenting
    from .train.importer import import_run

    kwargs = dict(parse_override(k) for k in args.kwarg)
    with consenting(args.factory):  # named on the command line by the user: trusted for this command
        out = import_run(args.factory, args.weights, args.out, args.data, kwargs, args.set, echo=_echo)
    print(f"run folder: {out}  (analyze, explain, report and diagnose read it like a trained run)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    check_out(args.out)
    if args.epochs is not None and args.epochs < 1:
        raise ConvlensError(f"--epochs {args.epochs} is out of range; allowed: 1 or more")
    path = run_demo(args.out, args.epochs, echo=_echo)
    print(f"demo run folder: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .compare import compare_runs
    from .run import is_run

    if len(args.runs) < 2:
        raise ConvlensError(f"compare needs two or more RUN folders; got {len(args.runs)}")
    for r in args.runs:
        if not is_run(r):
            raise ConvlensError(f"RUN {r!r} is not a run folder (it has no config.yaml); allowed: run folders")
    if args.cka_images < 2:
        raise ConvlensError(f"--cka-images {args.cka_images} is out of range; allowed: 2 or more")
    out = args.out or f"compare-{Path(args.runs[0]).name}-{Path(args.runs[1]).name}"
    check_out(out)
    # progress goes to stderr when stdout is the JSON
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else _echo
    doc = compare_runs(args.runs, out, cka_images=args.cka_images, cka=not args.no_cka, echo=say)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        from .run.layout import CompareLayout

        print(f"comparison: {CompareLayout(out).html}")
    return 0


# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="convlens",
        description="Train convolutional and recurrent image classifiers, sweep them, dissect them.",
    )
    parser.add_argument("--version", action="version", version=f"convlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model from a config file into a run folder",
        description="Train from CONFIG (YAML) into a run folder, or continue one with --resume.",
    )
    p.add_argument("config", nargs="?", help="experiment config (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.optimizer.lr=0.1 (repeatable)",
    )
    p.add_argument("--out", help="run folder to create (default: runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="where to train; the same as --set train.device=DEVICE"
    )
    p.add_argument(
        "--verify-cache",
        action="store_true",
        help="key the decoded-image cache by every byte of the data, not file names, sizes and times "
        "(after files were replaced keeping their size and time, e.g. cp -p; CONVLENS_VERIFY_CACHE=1)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on its test split",
        description="Rewrite RUN/eval.json and RUN/predictions.csv from a checkpoint.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--checkpoint",
        choices=["last", "best"],
        default="last",
        help="which checkpoint to evaluate: the last epoch's weights or the best validation epoch's (default: last)",
    )
    p.add_argument(
        "--tta", choices=["none", "flip", "flip_shift"], help="test-time augmentation (default: the config's)"
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "datasets",
        help="list the data sets and how to provide them offline",
        description="List the data sets, or `datasets preview CONFIG --out fig.png`: a picture of "
        "training images and augmented copies drawn by the config's data.augment.",
    )
    p.add_argument("action", nargs="?", choices=["preview"], help="preview: draw the config's augmentation")
    p.add_argument("config", nargs="?", help="experiment config (YAML), for preview")
    p.add_argument("--out", metavar="FIG.png", help="the PNG to write (its description goes to FIG.json)")
    p.add_argument("--count", type=int, default=8, help="training images, one per row (default 8)")
    p.add_argument("--copies", type=int, default=4, help="augmented copies per image (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentation draws (default 0)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.augment.flip.p=1 (repeatable)",
    )
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "models",
        help="list model presets with parameters and MACs per image",
        description="List presets, or show one layer by layer.",
    )
    p.add_argument("name", nargs="?", help="a preset to show in detail")
    p.add_argument("--input", type=int, nargs=3, metavar=("C", "H", "W"), help="input shape (default: the preset's)")
    p.add_argument(
        "--classes", type=int, default=10, help="number of output classes the model is built with (default 10)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="options.KEY=VALUE",
        help="a preset option, e.g. --set options.kernel=7 (repeatable)",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "import",
        help="wrap any nn.Module and its weights in a run folder",
        description="Build MODULE:FACTORY(**kwargs), load --weights (weights_only), write a run "
        "folder on --data and evaluate it on the test split.",
    )
    p.add_argument(
        "factory",
        metavar="MODULE:FACTORY",
        help="function or class returning the nn.Module, e.g. pkg.models:make; or a preset such as resnet50, "
        "whose state_dict keys are torchvision's",
    )
    p.add_argument("--weights", metavar="W.pt", help="state_dict to load (default: the factory's own weights)")
    p.add_argument("--data", default="digits", help="registered data set (`convlens datasets`; default: digits)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    p.add_argument(
        "--kwarg", action="append", default=[], metavar="KEY=VALUE", help="factory keyword argument (repeatable)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set data.test_subset=500 (repeatable)",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "demo",
        help="train, analyse and explain a small CNN on the bundled digits, then write its report "
        "(offline, seconds on 2 idle cores, minutes on busy ones)",
    )
    p.add_argument("--out", help="run folder (default: runs/demo-<time>)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "compare",
        help="compare runs: config, curves, metrics, classes, and per layer how alike the networks are",
        description="Compare every RUN with the first: config diff, overlaid curves, metric and per-class "
        "changes, the confusion difference, linear CKA per shared layer on the same test images, and per "
        "filter the top-k overlap and selectivity change (from topk / classnorms results of both runs).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two or more; the first is the reference)")
    p.add_argument("--out", help="folder to write compare.html, compare.json and figures into")
    p.add_argument("--json", action="store_true", help="also print the comparison as JSON")
    p.add_argument(
        "--cka-images",
        type=int,
        default=500,
        metavar="N",
        help="how many test images (the first N) linear CKA compares the layers on (default 500)",
    )
    p.add_argument("--no-cka", action="store_true", help="skip the representation similarity")
    p.set_defaults(func=cmd_compare)

    for module in PLUGINS:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        print("error: give a COMMAND (listed above)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConvlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a read-only or full disk, a file where a folder should be
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
