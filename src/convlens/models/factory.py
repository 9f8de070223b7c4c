"""Bring your own model: any ``nn.Module`` named by ``MODULE:FACTORY`` in a run folder.

``model: {factory: "pkg.models:make", kwargs: {width: 16}}`` in a config builds the model by
importing ``pkg.models`` (from ``sys.path`` or the current folder) and calling
``make(width=16)``. :func:`convlens.train.importer.import_run` wraps a trained model and its
weights (loaded with ``torch.load(weights_only=True)``: a weights file cannot run code) into a run
folder, so ``eval``, ``analyze``, ``explain``, ``report`` and ``diagnose`` read it like a trained run.
The factory's module is imported to rebuild the model each time a run is read: it runs code. A
module outside the current project (the folder convlens runs in) runs only with the user's consent:
named in ``CONVLENS_TRUSTED_FACTORIES`` (comma-separated modules or packages, ``*`` for any), or
given on the command line (``convlens import MODULE:FACTORY``). So a received run folder whose
config names ``os:system`` is refused, and the refusal says why.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import nn

from ..errors import ConfigError

_FORM = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def check_form(spec: str) -> str:
    if not _FORM.match(spec):
        raise ValueError(
            f"model.factory={spec!r} is not MODULE:FACTORY; allowed: a dotted module path, a colon and "
            "a function or class in it, e.g. mypkg.models:make"
        )
    return spec


TRUST_ENV = "CONVLENS_TRUSTED_FACTORIES"
_consented: set[str] = set()  # modules the user named on this command line (`convlens import`)


@contextlib.contextmanager
def consenting(spec: str) -> Iterator[None]:
    """The user named ``spec`` themselves: its module may be imported from anywhere in the block."""
    module = spec.partition(":")[0]
    added = module not in _consented
    _consented.add(module)
    try:
        yield
    finally:
        if added:
            _consented.discard(module)


def _trusted(module_name: str) -> bool:
    allowed = {m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()} | _consented
    parts = module_name.split(".")
    return "*" in allowed or any(".".join(parts[: i + 1]) in allowed for i in range(len(parts)))


def _where(module_name: str) -> Path | None:
    """The file or folder the module's top-level package comes from, found without running it."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module_name.split(".")[0])
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    origin = found.origin if found.origin not in (None, "built-in", "frozen") else None
    if origin is None and found.submodule_search_locations:
        origin = list(found.submodule_search_locations)[0]
    return Path(origin).resolve() if origin else Path("<built into Python>")


def check_trusted(spec: str) -> None:
    """Refuse a factory from outside the current project unless the user consented (see above)."""
    module_name = spec.partition(":")[0]
    if module_name.split(".")[0] == "convlens" or _trusted(module_name):
        return
    where = _where(module_name)
    if where is None:  # not importable: the import below says so
        return
    project = Path.cwd().resolve()
    if where != project and project in where.parents:
        return
    raise ConfigError(
        f"model.factory={spec!r} names module {module_name!r} from {where}, outside this project ({project}): "
        "importing it runs its code, and a run folder from elsewhere can name any function. If you trust it, "
        f"allow it: {TRUST_ENV}={module_name.split('.')[0]} (comma-separated; * for any)"
    )


def resolve(spec: str) -> Callable[..., Any]:
    """The callable ``spec`` names, or a ConfigError saying what is missing."""
    try:
        check_form(spec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # the folder convlens runs in, as `python -m` would
    check_trusted(spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model.factory={spec!r}: cannot import module {module_name!r} ({exc}); allowed: a module "
            "importable from the current folder or PYTHONPATH"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ConfigError(
                f"model.factory={spec!r}: {module_name} has no {attr!r}; callables there: {', '.join(names) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.factory={spec!r}: {attr} is a {type(obj).__name__}, not a function or class")
    return obj


def build_factory(spec: str, kwargs: dict[str, Any], in_shape: tuple[int, int, int]) -> nn.Module:
    from .graph import remember_shape

    fn = resolve(spec)
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model.factory={spec!r} with model.kwargs={kwargs!r} fails: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory={spec!r} returned a {type(model).__name__}, not an nn.Module")
    remember_shape(model, in_shape)
    return model
