"""One registry and one command-line generator for every job: analyses and explanation methods.

A job is a named dataclass of options (its fields; the same names, dashed, on the command line)
declared with :func:`job` in a torch-free options module (``analyses/options.py``,
``explain/options.py``), and an implementation named by ``"module:Class"`` that is imported only
when the job runs. ``convlens analyze`` and ``convlens explain`` build their flags from the same
fields by :func:`add_job_flags`, so defaults live in one place and ``--help`` never imports torch.

Flags shared by both commands: ``--images 0,1`` (or ``0 1``), ``--layers conv1,conv2``,
``--filters 0,3`` (or ``conv1:0,3``), ``--split``, ``--checkpoint``, ``--device``,
``--batch-size``, ``--data-root``, ``--verbose``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConvlensError


class AnalysisError(ConvlensError):
    """An analysis cannot run on this model or with these options."""


class ExplainError(ConvlensError, ValueError):
    """Bad input to an explanation method: the message names the value and what is allowed."""


KINDS = {"analysis": AnalysisError, "method": ExplainError}

# the one vocabulary of ``--scale`` (filter weights, heat maps): one scale for all panels of a
# figure (``shared``) or one per panel (``each``: per filter, per image); heat maps also take
# ``fixed``. The older names stay accepted.
SCALES = ("shared", "each")
SCALE_ALIASES = {"filter": "each", "per_filter": "each", "per_image": "each"}
SCALE_HELP = "one colour scale for all panels (shared) or one per panel (each)"


# ----------------------------------------------------------------------------------------------
# options


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    aliases: dict[str, str] | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (``--name``); ``aliases`` are older
    names of ``choices``, accepted silently and stored as the choice they stand for."""
    meta = {"help": help, "choices": choices, "parse": parse, "metavar": metavar, "aliases": aliases}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def comma_ints(text: str) -> list[int]:
    try:
        return [int(t) for t in comma_list(text)]
    except ValueError:
        raise AnalysisError(f"expected comma-separated integers, got {text!r}") from None


def comma_floats(text: str) -> list[float]:
    try:
        values = [float(t) for t in comma_list(text)]
    except ValueError:
        raise ConvlensError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConvlensError(f"expected comma-separated finite numbers, got {text!r} (NaN and infinity are no setting)")
    return values


def filter_spec(spec: Any) -> dict[str, list[int]] | list[int] | None:
    """``"0,3,5-7"`` (filters of the ``--layers``) -> ``[0, 3, 5, 6, 7]``; ``"conv1:0,1 conv3:5-7"``
    (layers separated by spaces or ``;``) -> ``{"conv1": [0, 1], "conv3": [5, 6, 7]}``."""
    if spec is None or isinstance(spec, (dict, list, tuple)):
        return spec if not isinstance(spec, tuple) else list(spec)
    text = str(spec).replace(";", " ")
    if ":" not in text and re.fullmatch(r"[\d,\s-]+", text):
        return _indices(text.replace(" ", ","), text, signed=True)
    out: dict[str, list[int]] = {}
    for part in text.split():
        layer, sep, idx = part.partition(":")
        if not sep or not idx or not layer:
            raise AnalysisError(f"cannot read filters {part!r}; write LAYER:I,J,K-L, e.g. conv2:0,3,5-7")
        out.setdefault(layer, []).extend(_indices(idx, part))
    return {k: sorted(set(v)) for k, v in out.items()}


def _indices(text: str, part: str, signed: bool = False) -> list[int]:
    """``0,3,5-7`` -> ``[0, 3, 5, 6, 7]``; ``signed``: ``-1`` is an index (that the layer refuses)."""
    out: list[int] = []
    for item in comma_list(text):
        if signed and re.fullmatch(r"-\d+", item):
            out.append(int(item))
            continue
        lo, dash, hi = item.partition("-")
        try:
            rng = range(int(lo), int(hi) + 1) if dash else [int(lo)]
        except ValueError:
            raise AnalysisError(
                f"{item!r} in {part!r} is not a filter index or range I-J; filters are numbered from 0"
            ) from None
        if not rng:
            raise AnalysisError(f"range {item!r} in {part!r} is empty; write the lower index first")
        out.extend(rng)
    return out


def canonical(f: dataclasses.Field, value: Any) -> Any:
    """``value`` of the option ``f`` with an alias replaced by the choice it stands for."""
    aliases = f.metadata.get("aliases") or {}
    return aliases.get(value, value) if isinstance(value, str) else value


def check_choices(obj: Any, error: type[Exception], label: str) -> None:
    """Every field with ``choices`` holds one of them (an options dataclass' ``__post_init__``)."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = canonical(f, getattr(obj, f.name))
        setattr(obj, f.name, value)
        if choices and value not in choices:
            raise error(f"{label}: {f.name}={value!r} is not allowed; allowed: {', '.join(map(str, choices))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{label}: {f.name}={value!r} is not a finite number; NaN and infinity are no setting")


# ----------------------------------------------------------------------------------------------
# the registry


@dataclass
class Job:
    """A registered job: its kind (``analysis`` or ``method``), options class and implementation."""

    name: str
    kind: str
    options: type
    impl: str  # "module:Class", imported on first use
    summary: str

    def load(self) -> type:
        module, _, attr = self.impl.partition(":")
        return getattr(importlib.import_module(module), attr)


JOBS: dict[str, Job] = {}


def job(kind: str, name: str, impl: str) -> Callable[[type], type]:
    """Class decorator for an options class: make it a dataclass and register the job."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")

    def deco(cls: type) -> type:
        cls = dataclass(cls)
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        JOBS[name] = Job(name, kind, cls, impl, summary)
        return cls

    return deco


def jobs(kind: str) -> dict[str, Job]:
    """The registered jobs of one kind, in registration order (options modules loaded)."""
    importlib.import_module("convlens.analyses.options" if kind == "analysis" else "convlens.explain.options")
    return {n: j for n, j in JOBS.items() if j.kind == kind}


# ----------------------------------------------------------------------------------------------
# the command line


def _argument_type(parse: Callable[[str], Any]):
    """An option's parser as an argparse type: its error becomes argparse's one `error:` line."""

    def convert(text: str):
        try:
            return parse(text)
        except ConvlensError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def finite(text: str) -> float:
    """A number read from the command line: NaN and infinity are refused (``--active-threshold nan``
    would call every filter dead, ``--lr inf`` would end in NaN images)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give an ordinary number")
    return x


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is out of range; allowed: 1 or more")
    return n


class _Joined(argparse.Action):
    """A list flag: ``--images 0,1`` and ``--images 0 1`` give the same list."""

    def __call__(self, parser, namespace, values, option_string=None):
        sep = " " if self.dest == "filters" and any(":" in v for v in values) else ","
        try:
            setattr(namespace, self.dest, self.const(sep.join(values)))
        except ConvlensError as exc:
            parser.error(f"argument {option_string}: {exc}")


def _flag_kwargs(fields: list[tuple[str, dataclasses.Field]]) -> dict[str, Any]:
    owner, f = fields[0]
    meta, kind = f.metadata, str(f.type)
    helps = list(dict.fromkeys(fl.metadata["help"] for _, fl in fields))
    defaults = list(dict.fromkeys(repr(_default(fl)) for _, fl in fields))
    owners = ", ".join(o for o, _ in fields)
    text = helps[0] if len(helps) == 1 else "; ".join(f"{o}: {fl.metadata['help']}" for o, fl in fields)
    if len(helps) == 1 and len(defaults) == 1 and defaults[0] != "None":
        text += f" (default {defaults[0]})"
    elif len(helps) == 1 and len(defaults) > 1:
        text += " (defaults: " + ", ".join(f"{o} {_default(fl)!r}" for o, fl in fields) + ")"
    kw: dict[str, Any] = {"dest": f.name, "default": None, "help": f"[{owners}] {text}"}
    if meta.get("parse") and kind.startswith(("list", "dict")):
        kw.update(nargs="+", action=_Joined, const=meta["parse"])
    elif meta.get("parse"):
        kw["type"] = _argument_type(meta["parse"])
    elif kind.startswith("bool"):
        kw["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("int"):
        kw["type"] = int
    elif kind.startswith("float"):
        kw["type"] = finite
    if meta.get("aliases") and "type" not in kw and "action" not in kw:
        aliases = meta["aliases"]
        kw["type"] = lambda text: aliases.get(text, text)  # argparse checks the choices after this
    if meta.get("choices"):
        kw["choices"] = meta["choices"]
    if meta.get("metavar") and kw.get("action") in (None, _Joined):
        kw["metavar"] = meta["metavar"]
    return kw


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


# the flags both commands share: the same names, list syntax and meaning
SHARED = {
    "images": option(None, "image positions in the split, e.g. 0,12,40", parse=comma_ints, metavar="I,J"),
    "layers": option(
        None, "layers by name, e.g. conv1,conv3 (`convlens models` lists them)", parse=comma_list, metavar="A,B"
    ),
    "filters": option(
        None,
        "filter indices of --layers (0,3,5-7) or per layer ('conv1:0,1 conv3:5-7')",
        parse=filter_spec,
        metavar="SPEC",
    ),
}
for _name, _f in SHARED.items():
    _f.name, _f.type = _name, "list[str] | None"


def add_job_flags(p: argparse.ArgumentParser, kind: str) -> list[str]:
    """Add the shared flags and every job option of ``kind`` to ``p``; returns the option names."""
    p.add_argument("--split", default="test", help="data split: test, val or train (default test)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        help="weights to use (default: the checkpoint eval.json evaluated, else best)",
    )
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, mps")
    p.add_argument(
        "--batch-size",
        type=positive,
        metavar="N",
        help="images per batch; changes speed and memory, not results "
        "(default 256 up to 64 px, fewer for larger images: 16 at 224 px)",
    )
    p.add_argument(
        "--data-root", metavar="PATH", help="where the run's data set is, if its data.root does not resolve from here"
    )
    p.add_argument("--verbose", action="store_true", help="print where the start-up time goes")
    registered = jobs(kind)
    by_name: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for n, j in registered.items():
        for f in dataclasses.fields(j.options):
            by_name.setdefault(f.name, []).append((n, f))
    for name in SHARED:
        owners = by_name.pop(name, [])
        kw = _flag_kwargs([("all", SHARED[name])])
        kw["help"] = kw["help"].replace("[all] ", f"[{', '.join(o for o, _ in owners)}] " if owners else "")
        p.add_argument("--" + name, **kw)
    what = "analysis" if kind == "analysis" else "method"
    group = p.add_argument_group(f"{what} options (each goes to every selected {what} that has it)")
    for name, fields in by_name.items():
        group.add_argument("--" + name.replace("_", "-"), **_flag_kwargs(fields))
    return [*SHARED, *by_name]


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The job options given on the command line (``None``: not given)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


class StartupClock:
    """``--verbose``: seconds spent in each start-up step (imports, data, model) until the first
    forward pass, counted from ``t0`` (``convlens.STARTED``: when the package was imported)."""

    def __init__(self, on: bool, t0: float, echo: Callable[[str], None] = print):
        self.on, self.echo = on, echo
        self.t0 = self.last = t0

    def __call__(self, step: str) -> None:
        import time

        now = time.perf_counter()
        if self.on:
            self.echo(f"start-up: {step} {now - self.last:.2f} s (total {now - self.t0:.2f} s)")
        self.last = now
