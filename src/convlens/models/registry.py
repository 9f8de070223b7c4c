"""The preset registry: a plain dict filled by ``@register_preset``.

A preset is a function of keyword options (its knobs, with defaults) that returns a layer list
for :func:`convlens.models.builder.build`, or, for a network that is not a flat sequence (the
residual presets), a function ``(in_shape, num_classes, mean, std) -> nn.Module``. Options are
checked against the signature, so ``model.options.widht`` fails with the allowed names.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError


@dataclass
class Preset:
    name: str
    fn: Callable[..., list[Any]]
    description: str
    example_input: tuple[int, int, int]  # (C, H, W) it was designed for
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # defaults of this preset that differ from fn's

    def layers(self, **options: Any) -> list[Any]:
        return self.fn(**{**self.overrides, **options})

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in inspect.signature(self.fn).parameters.items()} | self.overrides


PRESETS: dict[str, Preset] = {}


def register_preset(
    name: str,
    description: str,
    example_input: tuple[int, int, int],
    source: str = "",
    defaults: dict[str, Any] | None = None,
):
    """Register ``fn`` as preset ``name``; ``defaults`` overrides some of ``fn``'s own defaults, so one
    function serves several presets (``fast`` and ``fast_full`` differ only in width)."""

    def deco(fn: Callable[..., list[Any]]):
        PRESETS[name] = Preset(name, fn, description, example_input, source, dict(defaults or {}))
        return fn

    return deco


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the option, the value and what is allowed."""
    from . import presets  # noqa: F401  (fills the registry)

    preset = PRESETS[name]
    params = inspect.signature(preset.fn).parameters
    hints = typing.get_type_hints(preset.fn)
    for key, value in options.items():
        if key not in params:
            allowed = ", ".join(f"{k} (default {v!r})" for k, v in preset.defaults().items())
            raise ValueError(f"preset {name!r} has no option {key!r}; allowed: {allowed}")
        if key in hints:
            try:
                options = {**options, key: TypeAdapter(hints[key]).validate_python(value)}
            except ValidationError as exc:
                raise ValueError(f"model.options.{key}={value!r}: {exc.errors()[0]['msg']}") from None
    preset.layers(**options)  # range checks live in the preset itself and raise ValueError


def preset_layers(name: str, options: dict[str, Any]) -> list[Any]:
    from . import presets  # noqa: F401

    return PRESETS[name].layers(**options)


# The built-in presets register themselves here, whoever imports the registry first (the config's
# validator does, without going through convlens.models). Last, so register_preset exists.
from . import presets as _presets  # noqa: E402, F401
