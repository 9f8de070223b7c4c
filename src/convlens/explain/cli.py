"""``convlens explain RUN --method A,B``: explanation methods on a run's model and images. The
methods' options become flags, generated from their dataclass fields by :mod:`convlens.jobs`
(the same generator, shared flags and list syntax as ``analyze``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..errors import ConvlensError
from ..jobs import add_job_flags, comma_list, given, jobs

# the registered methods' names (convlens.jobs), known without importing torch
METHOD_NAMES = tuple(jobs("method"))


def _methods(text: str) -> list[str]:
    names = comma_list(text)
    known = jobs("method")
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method {(bad or [text])[0]!r}; allowed: {', '.join(sorted(known))}")
    return list(dict.fromkeys(names))


def build_runs(methods: list[str], options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(method, explain_run keyword arguments)`` for each method; an option that no selected
    method takes is an error that names who takes it, so a typo never passes silently."""
    known = jobs("method")
    fields = {m: {f.name for f in dataclasses.fields(known[m].options)} for m in methods}
    unused = [k for k in options if not any(k in fields[m] for m in methods)]
    if unused:
        takes = {n: {f.name for f in dataclasses.fields(j.options)} for n, j in known.items()}
        every = {k: [n for n, names in takes.items() if k in names] for k in unused}
        why = "; ".join(
            f"{k} is an option of {', '.join(v)}" if v else f"{k} is no method's option" for k, v in every.items()
        )
        raise ConvlensError(
            f"option(s) {', '.join(unused)} not used by the selected methods ({', '.join(methods)}): {why}"
        )
    out = []
    for m in methods:
        opts = known[m].options(**{k: v for k, v in options.items() if k in fields[m]})
        out.append((m, opts.run_kwargs()))
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    from .. import STARTED
    from ..cli import check_writable
    from ..jobs import StartupClock

    clock = StartupClock(args.verbose, STARTED)
    options = given(args, args._method_options)
    shared = {k: options.pop(k, None) for k in ("images", "layers", "filters")}
    runs = build_runs(args.method, options)  # bad options fail before torch is imported
    from .outputs import explain_run

    clock("imports")
    check_writable(args.run)
    filters, layers = shared["filters"], shared["layers"]
    if isinstance(filters, dict):  # conv1:0,1 conv3:5: the layers come with their filters
        if layers:
            raise ConvlensError("--filters names its layers (conv1:0,1); leave out --layers, or give plain indices")
        per_layer = list(filters.items())
    else:
        per_layer = [(layer, filters) for layer in layers] if layers else [(None, filters)]
    for method, kwargs in runs:
        for layer, idx in per_layer:
            kwargs = {**kwargs, "options": dict(kwargs.get("options", {}))}
            if args.batch_size is not None and method in ("occlusion", "actmax", "saliency"):
                kwargs["options"]["chunk"] = args.batch_size
            explain_run(
                args.run,
                method,
                images=shared["images"],
                split=args.split,
                layer=layer,
                filters=idx,
                checkpoint=args.checkpoint,
                data_root=args.data_root,
                device=args.device,
                clock=clock,
                **kwargs,
            )
    return 0


def add_commands(sub) -> None:
    listing = "\n".join(f"  {n:<10} {j.summary}" for n, j in jobs("method").items())
    p = sub.add_parser(
        "explain",
        help="explain a run's predictions: occlusion, actmax, deconv, guided, saliency, gradcam",
        description="Run per-image explanation methods on a run's model; each writes RUN/analysis/<method>.json, "
        ".npz and figures under RUN/analysis/<method>/. Methods:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--method",
        required=True,
        type=_methods,
        metavar="A,B",
        help=f"methods to run, in turn: {', '.join(jobs('method'))}",
    )
    names = add_job_flags(p, "method")
    p.set_defaults(func=cmd_explain, _method_options=names)
