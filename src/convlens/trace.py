"""Read or edit any layer by its dotted name: the one place convlens registers forward hooks.

::

    with Trace(model, "conv2") as t:
        model(x)
    t.output                       # conv2's output for x

    with TraceDict(model, ["conv1", "conv3"], stop=True) as td:
        model(x)                   # the forward pass stops right after conv3
    td["conv1"].output

    with Trace(model, "relu4", edit_output=lambda out, name: out * mask):
        model(x)                   # relu4's output replaced on the fly

    with TraceDict(model, relus, rewrite=lambda inp, out, name: my_relu(inp)):
        model(x)                   # each ReLU's output recomputed from its input (e.g. to give
                                   # it another backward rule, as guided backprop does)

A module that ``forward()`` calls more than once (one activation module after two convs) is
addressed call by call: ``"act"`` is its first call in each forward pass, ``"act@2"`` its second
(:func:`call_name`); reading and ``edit_output`` touch that call only, so one layer name is one
tensor in every command (``rewrite``, a backward rule, applies to every call). The traced data
flow (``models.graph``) names the call that follows a given layer.

Hooks are registered in ``__enter__`` and removed in ``__exit__`` inside ``finally``, whatever
happens in between; exceptions are never swallowed (except the internal one ``stop`` raises to
cut the forward pass short).
"""

from __future__ import annotations

import contextlib
import difflib
from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from .errors import LayerError


class StopForward(Exception):
    """Raised after the last traced layer when ``stop=True``; caught by the context manager."""


def split_call(name: str) -> tuple[str, int]:
    """``"act@2"`` -> ``("act", 2)``; a bare name is the module's first call."""
    base, at, call = name.rpartition("@")
    if at and call.isdigit() and int(call) >= 1:
        return base, int(call)
    return name, 1


def call_name(module: str, call: int) -> str:
    """The name of a module's ``call``-th call in a forward pass: the bare name for the first."""
    return module if call == 1 else f"{module}@{call}"


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule with dotted name ``name`` (``name@k``: its k-th call, the same module), or a
    LayerError listing the names that exist."""
    name = split_call(name)[0]
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise LayerError(f"the model has no layer {name!r}.{hint} Layers: {', '.join(names)}")


def check_call(model: nn.Module, name: str) -> None:
    """A LayerError when ``name@k`` asks for a call the traced forward pass never makes (checked
    where the model's input shape is known), naming the module's calls."""
    module, call = split_call(name)
    if call == 1:
        return
    from .models.graph import known_shape, trace_graph

    shape = known_shape(model)
    if shape is None:
        return
    runs = trace_graph(model, shape).calls.get(module, 0)
    if call > runs:
        calls = ", ".join(call_name(module, k) for k in range(1, runs + 1)) or "none"
        raise LayerError(
            f"layer {name!r}: forward() calls {module!r} {runs} time(s) per image, so it has no call {call}; "
            f"its calls: {calls}"
        )


def conv_layers(model: nn.Module, in_shape: tuple[int, int, int] | None = None) -> list[str]:
    """The conv layers in execution order (traced once for the (C, H, W) input shape given or
    known for the model, see ``models.graph``); in ``named_modules()`` order when none is."""
    from .models.graph import execution_order

    order = execution_order(model, in_shape)
    modules = dict(model.named_modules())
    if order is None:
        return [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    return [n for n in order if isinstance(modules.get(n), nn.Conv2d)]


def check_filter(model: nn.Module, layer: str, index: int) -> int:
    """Validate a filter (output channel) index of a layer; returns the layer's channel count."""
    m = get_layer(model, layer)
    channels = getattr(m, "out_channels", None) or getattr(m, "num_features", None) or getattr(m, "out_features", None)
    if channels is None:
        raise LayerError(
            f"layer {layer!r} ({type(m).__name__}) has no filters; pick a conv, batch-norm or linear layer"
        )
    if not (0 <= index < channels):
        raise LayerError(
            f"filter {index} is out of range for layer {layer!r}, which has {channels} channels (0 to {channels - 1})"
        )
    return channels


Edit = Callable[[torch.Tensor, str], torch.Tensor]
# (layer input, layer output, layer name) -> the output to use instead
Rewrite = Callable[[Any, Any, str], Any]


class Trace:
    """Retain (and optionally edit) the input/output of one layer during forward passes.

    ``layer`` is a dotted name, ``name@k`` for a module's k-th call in a forward pass (bare: the
    first); calls are counted from each call of ``model`` itself."""

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        retain_output: bool = True,
        retain_input: bool = False,
        detach: bool = True,
        clone: bool = False,
        edit_output: Edit | None = None,
        rewrite: Rewrite | None = None,
        stop: bool = False,
        after: Callable[[str], None] | None = None,
    ):
        self.model, self.layer = model, layer
        self.call = split_call(layer)[1]
        self._seen = 0  # calls of the module since the model's own forward() began
        self.after = after  # called after each of the layer's calls (TraceDict's stop rule)
        self.module = get_layer(model, layer)
        check_call(model, layer)
        self.retain_output, self.retain_input = retain_output, retain_input
        self.detach, self.clone, self.edit_output, self.stop = detach, clone, edit_output, stop
        self.rewrite = rewrite
        self.output: Any = None
        self.input: Any = None
        self._handle = self._root = None

    def _keep(self, t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            if self.detach:
                t = t.detach()
            if self.clone:
                t = t.clone()
        return t

    def _reset(self, module: nn.Module, inputs: tuple) -> None:
        self._seen = 0

    def _hook(self, module: nn.Module, inputs: tuple, output: Any) -> Any:
        if self.rewrite is not None:
            output = self.rewrite(inputs[0] if len(inputs) == 1 else inputs, output, self.layer)
        self._seen += 1
        if self._seen != self.call:
            return output
        if self.edit_output is not None:
            output = self.edit_output(output, self.layer)
        if self.retain_input:
            self.input = self._keep(inputs[0] if len(inputs) == 1 else inputs)
        if self.retain_output:
            self.output = self._keep(output)
        if self.stop:
            raise StopForward
        if self.after is not None:
            self.after(self.layer)
        return output

    def __enter__(self) -> Trace:
        self._seen = 0
        self._handle = self.module.register_forward_hook(self._hook)
        if self.module is not self.model:
            try:
                self._root = self.model.register_forward_pre_hook(self._reset)
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        for handle in (self._handle, self._root):
            if handle is not None:
                handle.remove()
        self._handle = self._root = None


class TraceDict(OrderedDict):
    """Several :class:`Trace`\\ s at once, keyed by layer name.

    ``stop`` ends the forward pass as soon as every traced layer has run once, whatever the
    order in which ``forward()`` calls them; a forward pass that ends without reaching one of
    them raises a LayerError naming it (a layer is never dropped silently).
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, stop: bool = False, **kwargs: Any):
        super().__init__()
        layers = list(dict.fromkeys(layers))
        for name in layers:
            get_layer(model, name)  # fail before any hook exists
        self.stop = stop and bool(layers)
        self.reached: set[str] = set()
        after = self._reached if self.stop else None
        self._traces = [(name, Trace(model, name, after=after, **kwargs)) for name in layers]

    def _reached(self, name: str) -> None:
        self.reached.add(name)
        if len(self.reached) == len(self._traces):
            raise StopForward

    def __enter__(self) -> TraceDict:
        self.reached = set()
        try:
            for name, t in self._traces:
                t.__enter__()
                self[name] = t
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        if exc_type is None and self.stop:
            missing = [n for n, _ in self._traces if n not in self.reached]
            raise LayerError(
                f"the forward pass ended without reaching layer(s) {', '.join(missing)}: "
                f"forward() does not call them for this input"
            )
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        for _, t in self._traces:
            t.close()


def hook_count(model: nn.Module) -> int:
    """Forward (pre-)hooks and backward hooks registered on any submodule (tests use this)."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


def run_from(model: nn.Module, layer: str, value: torch.Tensor, until: str | None = None) -> torch.Tensor:
    """Continue the forward pass of a flat sequential model from ``layer``'s output ``value``.

    The layers after ``layer`` (up to and including ``until``, if given) run on ``value``; the
    ones before it do not run at all. Ablation ranking uses it to compute a batch's activations
    up to the ablated layer once, then run only the rest of the network per filter silenced
    (hooks on the later layers still fire).
    """
    names = list(model._modules) if isinstance(model, nn.Sequential) else []
    for name in (layer, until):
        if name is not None and name not in names:
            get_layer(model, name)
            raise LayerError(
                f"run_from needs a flat sequential model and its top-level layers; "
                f"{name!r} is not a top-level layer of this {type(model).__name__}"
            )
    stop = names.index(until) + 1 if until is not None else len(names)
    for name in names[names.index(layer) + 1 : stop]:
        value = model._modules[name](value)
    return value


def _hook_ids(model: nn.Module) -> list[tuple[dict, set]]:
    dicts = []
    for m in model.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            d = getattr(m, name, None)
            if d is not None:
                dicts.append((d, set(d)))
    return dicts


@contextlib.contextmanager
def borrowed(model: nn.Module, *, grad: bool = True) -> Iterator[nn.Module]:
    """Borrow ``model`` for a computation: eval mode inside; afterwards every submodule's own
    training flag is restored (a caller may have frozen some batch norms) and every hook added
    inside is removed, however the block ends. ``grad=False`` also turns gradients off."""
    flags = [(m, m.training) for m in model.modules()]
    hooks = _hook_ids(model)
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            if not grad:
                stack.enter_context(torch.no_grad())
            yield model
    finally:
        for m, flag in flags:
            m.training = flag
        for d, before in hooks:
            for key in [k for k in d if k not in before]:
                del d[key]
