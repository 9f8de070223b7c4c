"""The one interface every per-image explanation method shares.

Each method is an :class:`Explainer` subclass with one verb, ``attribute(images, target)``:
``images`` is a float (N, C, H, W) batch in pixel space ([0, 1], as every convlens model takes),
``target`` one class (or filter) per image, or ``None`` for the predicted class. The model is
borrowed, never changed: it runs in eval mode inside :func:`evaluating`, which restores every
submodule's training flag afterwards; inputs are never written to; weights are read only.
Hooks, where a method needs them, come from :mod:`convlens.trace` and are gone when
``attribute`` returns or raises.

Extra results of the last call (positions of the strongest activations, per-step objectives,
the unoccluded probabilities) are kept in ``explainer.details``, a plain dict.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..jobs import JOBS, ExplainError
from ..models.graph import known_shape
from . import options  # noqa: F401  (declares every method's job before its implementation registers)

# the implementations of the methods registered in convlens.jobs.JOBS
METHODS: dict[str, type[Explainer]] = {}


def register(name: str):
    """Class decorator: link a method's implementation to its job (its options class, declared in
    ``explain/options.py``), for ``convlens explain --method NAME``."""

    def deco(cls: type[Explainer]) -> type[Explainer]:
        known = JOBS.get(name)
        if known is None or known.kind != "method":
            raise ExplainError(f"method {name!r} has no options class: declare it in explain/options.py with @job")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore each submodule's own flag afterwards
    (a caller may have frozen some BatchNorm layers while training the rest)."""
    from ..trace import borrowed

    with borrowed(model):
        yield model


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def expected_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """The (C, H, W) a model takes: the one a convlens model was built for, or the one noted for
    any model a run folder loads (``Run.build_model``, an imported factory model too); None for a
    foreign model that nothing has told about."""
    return known_shape(model)


def check_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Validate a batch of pixel-space images; returns it as float32 on the model's device.

    The caller's tensor is never modified: methods that need gradients work on a copy.
    """
    shape = expected_shape(model)
    want = f"(N, {shape[0]}, {shape[1]}, {shape[2]})" if shape else "(N, C, H, W)"
    if not isinstance(images, torch.Tensor):
        raise ExplainError(f"images must be a float tensor of shape {want}, got {type(images).__name__}")
    if images.dim() == 3 and shape is not None and tuple(images.shape) == shape:
        raise ExplainError(
            f"images must be a batch of shape {want}; got one image of shape {tuple(images.shape)} (use images[None])"
        )
    if images.dim() != 4:
        raise ExplainError(f"images must have shape {want}, got {tuple(images.shape)}")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise ExplainError(
            f"images have shape {tuple(images.shape)}, but the model expects {want}: "
            f"{shape[0]} channel(s) of {shape[1]}x{shape[2]} pixels"
        )
    if len(images) == 0:
        raise ExplainError(f"images is an empty batch; give at least one image of shape {want}")
    if not images.is_floating_point():
        raise ExplainError(
            f"images must be float pixels in [0, 1] (got dtype {images.dtype}); divide uint8 images by 255"
        )
    return images.detach().to(model_device(model), torch.float32)


def as_index_tensor(value: Any, n: int, what: str, limit: int, device: torch.device, where: str = "") -> torch.Tensor:
    """One index per image from an int, a sequence or a tensor; each must lie in [0, limit)."""
    t = torch.as_tensor(value, dtype=torch.long, device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape[0] != n:
        raise ExplainError(f"{what} has {t.shape[0]} entries for {n} images; give one per image (or a single value)")
    bad = (t < 0) | (t >= limit)
    if bool(bad.any()):
        v = int(t[bad][0])
        raise ExplainError(f"{what} {v} is out of range{where}; allowed: 0 to {limit - 1}")
    return t


def channel_count(model: nn.Module, layer: str) -> int:
    """How many filters (channels) a layer's output has: from its parameters (conv, batch norm,
    linear), else from one forward pass of a zero image (activations, pools)."""
    from ..trace import Trace, get_layer

    m = get_layer(model, layer)
    n = getattr(m, "out_channels", None) or getattr(m, "num_features", None) or getattr(m, "out_features", None)
    if n is not None:
        return int(n)
    shape = expected_shape(model)
    if shape is None:
        raise ExplainError(
            f"cannot tell how many channels layer {layer!r} has; pick a conv, batch-norm or linear layer"
        )
    with torch.no_grad(), evaluating(model), Trace(model, layer, stop=True) as t:
        model(torch.zeros(1, *shape, device=model_device(model)))
    if not isinstance(t.output, torch.Tensor) or t.output.dim() < 2:
        raise ExplainError(
            f"layer {layer!r} has no channels to choose from (its output is not a tensor of (N, C, ...))"
        )
    return int(t.output.shape[1])


class Explainer:
    """Base class: subclasses implement :meth:`attribute`."""

    name = "explainer"

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise ExplainError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.details: dict[str, Any] = {}

    def attribute(self, images: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    # -- shared by subclasses ---------------------------------------------------------------
    def _classes(self, images: torch.Tensor, target: Any) -> torch.Tensor:
        """Resolve ``target`` to one class per image; ``None`` means the predicted class."""
        with torch.no_grad(), evaluating(self.model):
            logits = self.model(images[:1]) if target is not None else self.model(images)
        k = logits.shape[1]
        if target is None:
            return logits.argmax(1)
        return as_index_tensor(target, len(images), "target class", k, images.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
