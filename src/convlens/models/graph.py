"""Layer order and geometry of any ``nn.Module``, from one traced forward pass.

``trace_graph(model, in_shape)`` runs a copy of the model once on a constant image and records,
with forward hooks on every submodule (added and removed inside ``try/finally``):

- ``order``: dotted names in the order ``forward()`` first calls them (execution order, not
  ``named_modules()`` order: a residual block that computes its shortcut first, nested
  containers and a module called twice all come out as they run);
- ``shapes`` and ``calls``: each call's output shape, how often each module ran;
- ``consumers``: which module calls took a module call's output as their input (the data flow,
  used to find the batch norm and activation that follow a conv). A module's k-th call in the
  pass is named ``name@k`` (``trace.call_name``; the first is the bare name), so a module called
  twice (one activation module after two convs) has one entry per call, and readers hook the
  call the data flow names;
- ``functions``: activations and pools written as functions in a ``forward()`` (``F.relu``,
  ``torch.relu``, ``x.relu()``), seen through a ``__torch_function__`` mode;
- ``fields``: the exact receptive field of every module with an (N, C, H, W) output.

Receptive fields are followed through the pass op by op: convs and pools (modules or functions)
compose their kernel, stride, padding and dilation; an adaptive pool at the traced input size is
a pool of kernel and step input // output when the sides divide (else the layer has no field,
and ``unresolved`` says why); element-wise ops keep the field; sums, products and concatenations
take the box covering their operands' fields. Beside each field, ``spans`` follow every unit's
exact window (the first and last input row and column that reach it, ``Graph.window``): near
the border a dilated kernel's taps in the padding see nothing, so it can be narrower than the
field's box clipped to the image. Where an op of
unknown geometry comes in between (a functional conv, a custom op), the field is measured
instead, on a copy in which every weight is a positive constant, every activation the identity
and every max pool an average pool over the same window: the network up to any layer is then a
linear map with positive coefficients, so the nonzero support of the input gradient of one
output unit is exactly the set of pixels it can see (no cancellation, no dead ReLU, no zero
weight hides one). Two neighbouring units give the step (``jump``) and the size; the probe
image grows (up to 16x) until a unit's window lies inside it. Both ways agree on every preset
(tests). The graph is cached per model structure and input shape; fields are computed on
first use.

Limits: control flow that depends on the data may take another path on the constant image;
an op whose window is not a shifted box (upsampling, attention, normalisation over positions)
leaves a layer without a field, with the reason in ``unresolved``. ``fields`` and ``shapes``
describe every call (``act@2``), keyed as above.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..trace import StopForward, call_name, split_call
from .fields import (
    adaptive_spans,
    adaptive_window,
    compose,
    input_spans,
    measure,
    union,
    span_window,
    union_spans,
    window_args,
    window_spans,
)
from .summary import ReceptiveField, is_elementwise

_ACTIVATIONS = {
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "gelu",
    "silu",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "hardtanh",
    "hardtanh_",
    "softplus",
    "mish",
    "hardswish",
    "hardsigmoid",
    "selu",
    "celu",
    "prelu",
    "rrelu",
    "threshold",
    "logsigmoid",
    "clamp_min",
}
_MAX_POOLS = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "adaptive_max_pool2d"}


class Geo(NamedTuple):
    """What the trace knows of a tensor's geometry: its field (None: unknown, so it is
    measured), its exact spans per unit (``fields.Spans``, None: unknown), and ``why`` a tensor
    has no field that measuring cannot give either (an adaptive pool with unequal windows)."""

    field: ReceptiveField | None
    spans: Any
    why: str | None


_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GROWTH = 16  # a probe image grows up to this many times the input's side


def remember_shape(model: nn.Module, in_shape: tuple[int, ...]) -> None:
    """Note the (C, H, W) input a model takes, so layer order can be traced where only the model
    is at hand (``conv_layers``); nothing is set on the model itself."""
    _SHAPES[model] = tuple(int(d) for d in in_shape)


def known_shape(model: nn.Module) -> tuple[int, int, int] | None:
    shape = _SHAPES.get(model) or getattr(model, "in_shape", None)
    return tuple(shape) if shape is not None and len(shape) == 3 else None  # type: ignore[return-value]


@dataclass
class Graph:
    order: list[str]
    shapes: dict[str, list[int] | None]
    calls: dict[str, int]
    consumers: dict[str, list[str]]
    functions: list[tuple[str, str]]  # (module whose forward() called it, function name)
    call_order: list[str] = field(default_factory=list)  # every call's name (act, act@2), in call order
    leaves: set[str] = field(default_factory=set)
    known: dict[str, ReceptiveField | None] = field(default_factory=dict)  # from the ops' geometry
    model: Any = None  # a weak reference to the traced model (fields are measured on a copy)
    in_shape: tuple[int, int, int] = (0, 0, 0)
    spans: dict[str, Any] = field(default_factory=dict)  # exact windows per unit (fields.Spans)
    why: dict[str, str] = field(default_factory=dict)  # no field, and measuring cannot give one
    _fields: dict[str, ReceptiveField] | None = None
    _unresolved: dict[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> dict[str, ReceptiveField]:
        """Receptive field of every module with an (N, C, H, W) output (measured on first use)."""
        if self._fields is None:
            with torch.enable_grad():
                self._fields, self._unresolved = _fields(self)
        return self._fields

    @property
    def unresolved(self) -> dict[str, str]:
        """Modules with a feature map but no receptive field, and why."""
        self.fields
        return self._unresolved

    def window(self, name: str, i: int, j: int) -> tuple[int, int, int, int] | None:
        """Input rows [top, bottom) and columns [left, right) that unit (i, j) of ``name`` (a call
        name) can see: exact where every op's geometry is known (a dilated kernel's taps in the
        padding see nothing), else its field's box clipped to the image; None without a field."""
        if name in self.spans:
            return span_window(self.spans[name], i, j)
        f = self.fields.get(name)
        return None if f is None else f.window(i, j, *self.in_shape[1:])

    def of_type(self, kind: type[nn.Module] | tuple[type[nn.Module], ...], model: nn.Module) -> list[str]:
        modules = dict(model.named_modules())
        return [n for n in self.order if isinstance(modules.get(n), kind)]

    def next_leaf(self, name: str) -> str | None:
        """The first leaf module (in call order) that took ``name``'s output as its input."""
        return next((c for c in self.consumers.get(name, []) if split_call(c)[0] in self.leaves), None)

    def next_leaves(self, name: str) -> list[str]:
        """Every leaf module call that took ``name``'s output (a call name) as its input."""
        return [c for c in self.consumers.get(name, []) if split_call(c)[0] in self.leaves]


def _positive_copy(model: nn.Module) -> nn.Module:
    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in probe.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()
            for p in m.parameters(recurse=False):
                fan_in = p[0].numel() if p.dim() >= 2 else 1
                p.fill_(1.0 / fan_in)
    probe.requires_grad_(False)
    return probe


def _avg_like_max(args: tuple, kwargs: dict, name: str) -> torch.Tensor:
    """The average pool over the same windows as a max pool (every window pixel gets gradient)."""
    import torch.nn.functional as F

    x = args[0]
    if name == "adaptive_max_pool2d":
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        return F.adaptive_avg_pool2d(x, size)
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    given = dict(zip(names, args[1:]), **{k: v for k, v in kwargs.items() if k in names})
    k = given["kernel_size"]
    stride = given.get("stride") or k
    pad, dil, ceil = given.get("padding", 0), given.get("dilation", 1), given.get("ceil_mode", False)
    if dil in (1, (1, 1)):
        return F.avg_pool2d(x, k, stride, pad, ceil_mode=ceil, count_include_pad=True)
    kh, kw = (k, k) if isinstance(k, int) else k
    weight = torch.ones(x.shape[1], 1, kh, kw, dtype=x.dtype, device=x.device) / (kh * kw)
    return F.conv2d(x, weight, None, stride, pad, dil, x.shape[1])


_SAME_FIELD = _ACTIVATIONS | {
    "clone",
    "contiguous",
    "to",
    "float",
    "double",
    "half",
    "batch_norm",
    "dropout",
    "dropout2d",
    "alpha_dropout",
    "feature_dropout",
    "feature_alpha_dropout",
    "__neg__",
    "neg",
    "abs",
}
_UNION = {
    f"{pre}{op}{post}"
    for op in ("add", "sub", "mul")
    for pre, post in (("", ""), ("", "_"), ("__", "__"), ("__r", "__"), ("__i", "__"))
} | {"cat", "concat", "concatenate", "where", "maximum", "minimum"}


_WINDOW_FUNCTIONS = {"avg_pool2d", "max_pool2d", "_max_pool2d", "max_pool2d_with_indices"}


class _Linearise(TorchFunctionMode):
    """Activations become the identity, max pools average pools; records functional calls and,
    in ``fields`` (by tensor id), the receptive field of each tensor derived from the input where
    the op is known (None where it is not: those get probed)."""

    def __init__(
        self,
        stack: list[tuple[str, bool]],
        functions: list[tuple[str, str]],
        fields: dict[int, Geo] | None = None,
        keep: list | None = None,
    ):
        super().__init__()
        self.stack, self.functions, self.fields, self.keep = stack, functions, fields, keep

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        kind = "act" if name in _ACTIVATIONS else "pool" if name in _MAX_POOLS else None
        if kind and self.stack and not self.stack[-1][1]:  # called from a container's forward()
            self.functions.append((self.stack[-1][0], name))
        if kind == "act" and args and isinstance(args[0], torch.Tensor):
            result = args[0].clone()
        elif kind == "pool" and "indices" not in name and not kwargs.get("return_indices"):
            result = _avg_like_max(args, kwargs, name)
        else:
            result = func(*args, **kwargs)
        if self.fields is not None:
            self._follow(name, args, kwargs, result)
        return result

    def _follow(self, name: str, args: tuple, kwargs: dict, result: Any) -> None:
        derived = [t for t in _tensors((args, kwargs)) if id(t) in self.fields]
        if not derived or not isinstance(result, torch.Tensor):
            return
        self.keep.append(result)
        self.fields[id(result)] = _op_geometry(
            name, args, kwargs, derived, [self.fields[id(t)] for t in derived], result
        )


_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d"}
_NONE = Geo(None, None, None)


def _op_geometry(name: str, args: tuple, kwargs: dict, derived: list, geos: list, result: torch.Tensor) -> Geo:
    """The field and spans of a functional op's result from its operands' (``_NONE``: unknown)."""
    why = next((g.why for g in geos if g.why), None)
    if result.dim() != 4 or why or any(g.field is None for g in geos):
        return Geo(None, None, why)
    same = [g for t, g in zip(derived, geos) if t.dim() == 4 and t.shape[2:] == result.shape[2:]]
    if len(same) == len(derived) and (name in _SAME_FIELD and len(same) == 1 or name in _UNION):
        if len(same) == 1:
            return same[0]
        spans = None if any(g.spans is None for g in same) else union_spans([g.spans for g in same])
        return Geo(union([g.field for g in same]), spans, None)
    if len(derived) != 1 or derived[0].dim() != 4:
        return _NONE
    g, in_hw, out_hw = geos[0], tuple(derived[0].shape[2:]), tuple(result.shape[2:])
    if name in _WINDOW_FUNCTIONS:
        geometry = window_args(args, kwargs)
        if geometry is None:
            return _NONE
        return Geo(compose(g.field, *geometry), _spans(g, window_spans, *geometry, out_hw), None)
    if name in _ADAPTIVE:
        spans = _spans(g, adaptive_spans, out_hw)
        geometry = adaptive_window(in_hw, out_hw)
        if geometry is None:
            why = f"an adaptive pool from {in_hw[0]}x{in_hw[1]} to {out_hw[0]}x{out_hw[1]} has windows of unequal size"
            return Geo(None, spans, why)
        return Geo(compose(g.field, *geometry), spans, None)
    return _NONE


def _spans(g: Geo, op: Any, *args: Any) -> Any:
    return None if g.spans is None else op(g.spans, *args)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


_PIXEL_BUDGET = 1 << 17  # probe images x pixels per backward pass: bounds the memory of one probe


def _pass(probe: nn.Module, x: torch.Tensor, wanted: set[str] | None, record: Graph | None) -> dict[str, torch.Tensor]:
    """One forward pass of the probe copy on ``x``; returns the output of each 4-D module call
    (keyed by call name) (only ``wanted`` ones if given, stopping once all of them ran). ``record`` gets the
    order, shapes, data flow, functional calls and ``known``: each module's field followed
    through the geometry of the ops it ran (convs, pools, element-wise ops, sums, concatenations),
    None where an op of unknown geometry came in between."""
    modules = dict(probe.named_modules())
    hooks = _PassHooks(x, wanted, record, {n for n, m in modules.items() if not list(m.children())})
    handles = []
    try:
        for name, m in modules.items():
            if name:
                handles.append(m.register_forward_pre_hook(hooks.pre(name)))
                handles.append(m.register_forward_hook(hooks.post(name)))
        with _Linearise(hooks.stack, record.functions if record is not None else [], hooks.fields, hooks.keep):
            try:
                probe(x)
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    return hooks.outputs


class _PassHooks:
    """The forward (pre-)hooks of one :func:`_pass`, and what they collect."""

    def __init__(self, x: torch.Tensor, wanted: set[str] | None, record: Graph | None, leaves: set[str]):
        self.wanted, self.record, self.leaves = wanted, record, leaves
        self.outputs: dict[str, torch.Tensor] = {}
        self.owner: dict[int, str] = {}
        self.keep: list[Any] = [x]
        self.fields: dict[int, Geo] | None = (
            {id(x): Geo(ReceptiveField(1, 1, 0), input_spans(*x.shape[2:]), None)} if record is not None else None
        )
        self.stack: list[tuple[str, bool]] = []
        self.count: dict[str, int] = {}
        self.current: list[str] = []  # the call names of the modules now running

    def pre(self, name: str):
        def hook(module, inputs):
            self.stack.append((name, name in self.leaves))
            self.count[name] = self.count.get(name, 0) + 1
            self.current.append(call_name(name, self.count[name]))
            if self.record is not None:
                self._note_call(self.record, name, self.current[-1], inputs)

        return hook

    def _note_call(self, record: Graph, name: str, call: str, inputs: Any) -> None:
        record.calls[name] = record.calls.get(name, 0) + 1
        if record.calls[name] == 1:
            record.order.append(name)
        record.call_order.append(call)
        for t in _tensors(inputs):
            src = self.owner.get(id(t))
            if src and call not in record.consumers.setdefault(src, []):
                record.consumers[src].append(call)

    def post(self, name: str):
        def hook(module, inputs, output):
            self.stack.pop()
            call = self.current.pop()
            if isinstance(output, torch.Tensor):
                output = self._took(call, module, inputs, output)
            elif self.record is not None:
                self.record.shapes.setdefault(call, None)
            if self.wanted is not None and self.wanted <= self.outputs.keys():
                raise StopForward
            return output

        return hook

    def _took(self, name: str, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        """Record a module's tensor output; returns the clone that goes on in its place."""
        record, fields = self.record, self.fields
        geo = _NONE
        if record is not None and fields is not None:
            geo = _module_geometry(module, _tensors(inputs), output, fields)
            if name not in record.shapes:
                record.shapes[name] = list(output.shape[1:])
                record.known[name] = geo.field
                if geo.spans is not None:
                    record.spans[name] = geo.spans
                if geo.why:
                    record.why[name] = geo.why
        # a clone goes on, so an in-place op later (out += shortcut) leaves this one intact
        kept, output = output, output.clone()
        self.keep.append(output)
        self.owner[id(output)] = name
        if fields is not None:
            fields[id(output)] = geo
        if kept.dim() == 4 and name not in self.outputs and (self.wanted is None or name in self.wanted):
            self.outputs[name] = kept
        return output


def _module_geometry(
    module: nn.Module, inputs: list[torch.Tensor], output: torch.Tensor, fields: dict[int, Geo]
) -> Geo:
    """A module's output field and spans from its input's and its geometry, or what its ops left."""
    if output.dim() != 4:
        return _NONE
    derived = [t for t in inputs if id(t) in fields]
    if len(derived) == 1 and derived[0].dim() == 4 and fields[id(derived[0])].field is not None:
        g = fields[id(derived[0])]
        geometry = window_args(module)
        if geometry is not None:
            # padding that repeats pixels (reflect, circular) sees what zero padding does not
            zeros = getattr(module, "padding_mode", "zeros") == "zeros"
            spans = _spans(g, window_spans, *geometry, tuple(output.shape[2:])) if zeros else None
            return Geo(compose(g.field, *geometry), spans, None)
        if is_elementwise(module) and derived[0].shape[2:] == output.shape[2:]:
            return g
    return fields.get(id(output), _NONE)  # passed on unchanged, or followed through its functions


def _probe(probe: nn.Module, names: list[str], shape: tuple[int, int, int]) -> dict[str, ReceptiveField | str]:
    """Fields of ``names`` (in call order) on probe images of ``shape``: two images per layer,
    as many layers per forward/backward pass as the pixel budget allows."""
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    per_pass = max(1, _PIXEL_BUDGET // (2 * shape[1] * shape[2]))
    found: dict[str, ReceptiveField | str] = {}
    for k in range(0, len(names), per_pass):
        chunk = names[k : k + per_pass]
        x = torch.ones(2 * len(chunk), *shape, device=device, requires_grad=True)
        outputs = _pass(probe, x, set(chunk), None)
        total, units = x.new_zeros(()), {}
        for n, name in enumerate(chunk):
            y = outputs.get(name)
            if y is None:
                found[name] = "not reached"
            elif min(y.shape[2:]) < 2:
                found[name] = "clipped"
            else:
                i, j = (y.shape[2] - 1) // 2, (y.shape[3] - 1) // 2
                total = total + y[2 * n, :, i, j].sum() + y[2 * n + 1, :, i + 1, j + 1].sum()
                units[name] = (n, i, j)
        if units:
            (g,) = torch.autograd.grad(total, x)
            for name, (n, i, j) in units.items():
                found[name] = measure(g[2 * n], g[2 * n + 1], i, j)
        del x, outputs, total
    return found


def _signature(model: nn.Module) -> tuple:
    return tuple((n, type(m)) for n, m in model.named_modules())


def trace_graph(model: nn.Module, in_shape: tuple[int, int, int] | None = None) -> Graph:
    """The :class:`Graph` of ``model`` for (C, H, W) inputs (default: the shape it was noted
    with); cached until the module structure changes. The caller's model is never run or changed:
    everything happens on a copy."""
    shape = tuple(in_shape) if in_shape is not None else known_shape(model)
    if shape is None:
        raise ValueError("trace_graph needs the input shape (C, H, W)")
    sig = _signature(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == sig and shape in cached[1]:
        return cached[1][shape]
    with torch.enable_grad():  # callers often hold the model under no_grad
        graph = _trace(model, shape)  # type: ignore[arg-type]
    if cached is None or cached[0] != sig:
        cached = (sig, {})
        _CACHE[model] = cached
    cached[1][shape] = graph
    return graph


def _trace(model: nn.Module, shape: tuple[int, int, int]) -> Graph:
    probe = _positive_copy(model)
    graph = Graph(
        [],
        {},
        {},
        {},
        [],
        leaves={n for n, m in model.named_modules() if n and not list(m.children())},
        model=weakref.ref(model),
        in_shape=shape,
    )
    device = next((p.device for p in probe.parameters()), torch.device("cpu"))
    with torch.no_grad():
        _pass(probe, torch.ones(1, *shape, device=device), None, graph)
    return graph


def _fields(graph: Graph) -> tuple[dict[str, ReceptiveField], dict[str, str]]:
    shape = graph.in_shape
    fields: dict[str, ReceptiveField] = {}
    unresolved: dict[str, str] = {}
    spatial = [n for n in graph.call_order if graph.shapes.get(n) is not None and len(graph.shapes[n]) == 3]  # type: ignore[arg-type]
    for name in spatial:
        if graph.known.get(name) is not None:
            fields[name] = graph.known[name]  # type: ignore[assignment]
    unresolved.update({n: graph.why[n] for n in spatial if n not in fields and n in graph.why})
    todo = [n for n in spatial if n not in fields and n not in graph.why]  # unknown geometry: measured
    model = graph.model() if graph.model is not None else None
    if todo and model is None:
        return fields, {**unresolved, **{n: "the model is gone" for n in todo}}
    probe = _positive_copy(model) if todo else None
    c, h, w = shape
    reasons: dict[str, str] = {}
    while todo:
        for name, got in _probe_safely(probe, todo, (c, h, w), enlarged=(h, w) != shape[1:]).items():
            if isinstance(got, ReceptiveField):
                fields[name] = got
                reasons.pop(name, None)
            else:
                reasons[name] = got
        todo = [n for n in todo if reasons.get(n) == "clipped"]
        if max(h, w) >= _GROWTH * max(shape[1:]):
            break
        h, w = 2 * h, 2 * w  # the field is wider than the image: grow it until a window fits
    unresolved.update(
        {n: ("larger than the largest probe image" if why == "clipped" else why) for n, why in reasons.items()}
    )
    return {n: fields[n] for n in spatial if n in fields}, unresolved


def _probe_safely(
    probe: nn.Module, names: list[str], shape: tuple[int, int, int], enlarged: bool
) -> dict[str, ReceptiveField | str]:
    try:
        return _probe(probe, names, shape)
    except Exception as exc:  # the model refuses an enlarged image
        if not enlarged:
            raise
        return {
            n: f"larger than the image, and the model does not run on {shape[1]}x{shape[2]} inputs ({exc})"
            for n in names
        }


def measure_fields(model: nn.Module, in_shape: tuple[int, int, int]) -> dict[str, ReceptiveField]:
    """Every field measured by gradient probes alone (uncached; tests check the ops' geometry
    that :func:`trace_graph` follows against it)."""
    graph = _trace(model, tuple(in_shape))  # type: ignore[arg-type]
    graph.known, graph.why, graph.spans = {}, {}, {}
    with torch.enable_grad():
        return _fields(graph)[0]


def execution_order(model: nn.Module, in_shape: tuple[int, int, int] | None = None) -> list[str] | None:
    """Module names in call order, or None when the input shape is unknown."""
    shape = tuple(in_shape) if in_shape is not None else known_shape(model)
    return None if shape is None else trace_graph(model, shape).order  # type: ignore[arg-type]
