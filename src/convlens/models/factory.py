"""Bring your own model: any ``nn.Module`` named by ``MODULE:FACTORY`` in a run folder.

``model: {factory: "pkg.models:make", kwargs: {width: 16}}`` in a config builds the model by
importing ``pkg.models`` (from ``sys.path`` or the current folder) and calling
``make(width=16)``. :func:`import_run` wraps a trained model and its weights (loaded with
``torch.load(weights_only=True)``: a weights file cannot run code) into a run folder, so
``eval``, ``analyze``, ``explain``, ``report`` and ``diagnose`` read it like a trained run.
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
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError, RunError

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


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path`` (bare, or under a ``model`` / ``state_dict`` key)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled classes, truncated files: many types
        from ..train.checkpoint import _reason  # torch's advice to load unsafely is left out

        raise RunError(
            f"cannot read weights {path} (a state_dict of tensors is needed): {_reason(exc, path)}"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"weights {path} hold no state_dict (a mapping of names to tensors), got {type(state).__name__}")
    return state


def import_run(
    factory: str,
    weights: str | Path | None,
    out: str | Path,
    data: str = "digits",
    kwargs: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    echo=None,
) -> Path:
    """Write a run folder for ``factory(**kwargs)`` with ``weights`` on data set ``data``;
    evaluates it on the test split (eval.json, predictions.csv). Returns the folder.

    ``factory`` may also name a preset (``kwargs`` are then its options): a torchvision ResNet or
    VGG checkpoint loads into ``resnet18`` ... ``vgg16``, whose keys are torchvision's."""
    from .. import __version__
    from ..config import load_config
    from ..data import load_data
    from ..run import Layout, write_status
    from ..train.loop import evaluate_run
    from . import build_model
    from .summary import summarize, totals

    from .registry import PRESETS

    if factory in PRESETS:  # a preset (torchvision's resnet50 layout, ...): kwargs are its options
        model_section: dict[str, Any] = {"preset": factory, "options": dict(kwargs or {})}
    else:
        resolve(factory)  # a bad MODULE:FACTORY fails here, with one line saying why
        model_section = {"factory": factory, "kwargs": dict(kwargs or {})}
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} already exists and is not empty; choose another --out")
    cfg = load_config({"name": out.name, "data": {"name": data}, "model": model_section}, overrides)
    bundle = load_data(cfg.data)
    cfg = cfg.model_copy(deep=True)
    cfg.data.mean, cfg.data.std = list(bundle.mean), list(bundle.std)
    if cfg.data.root and not Path(cfg.data.root).expanduser().is_absolute():
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    model = build_model(cfg.model, bundle.shape, bundle.num_classes)
    if weights is not None:
        try:
            model.load_state_dict(read_weights(weights))
        except RuntimeError as exc:
            raise RunError(f"weights {weights} do not fit {factory}: {exc}") from None
    model.eval()
    with torch.no_grad():
        try:
            y = model(torch.zeros(2, *bundle.shape))
        except Exception as exc:
            raise RunError(
                f"{factory} does not run on {bundle.name} images of shape {list(bundle.shape)}: {exc}"
            ) from None
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, bundle.num_classes):
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise RunError(
            f"{factory} returns {got} for a batch of 2, but {bundle.name} needs logits of shape "
            f"[2, {bundle.num_classes}]"
        )
    cfg.meta = {
        "convlens_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
        "imported": str(weights),
    }
    layout = Layout(out)
    layout.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    layout.write_config(cfg)
    layout.write_dataset(bundle.describe())
    rows = summarize(model, bundle.shape)
    layout.write_summary({"layers": [r.to_dict() for r in rows], **totals(rows)})
    state = {"model": model.state_dict(), "epoch": 0, "config": cfg.to_dict(), "version": __version__}
    for which in ("last", "best"):
        layout.save_checkpoint(which, state)
    write_status(out, "finished", epoch=0, epochs=0, message=f"imported from {factory}")
    evaluate_run(out, "last", echo=echo)
    return out
