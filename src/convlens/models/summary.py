"""Per-layer summary: output shape, parameters, multiply-accumulates and exact receptive fields.

Receptive fields are measured on the traced module graph (``graph.py``) for any model whose
input shape is known, and computed analytically from kernel, stride, padding and dilation for a
flat sequential model (:func:`analytic_receptive_fields`, which every preset's measured field
equals). For a layer with receptive field ``size``, ``jump`` (its stride in input pixels) and
``start`` (the input coordinate of the top-left pixel seen by output position 0, negative inside
the padding), output position ``i`` sees input pixels ``start + i * jump`` to
``start + i * jump + size - 1`` along each axis (``size_x``, ``jump_x``, ``start_x`` for the
columns when they differ from the rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..trace import borrowed


@dataclass(frozen=True)
class ReceptiveField:
    size: int
    jump: int
    start: int
    size_x: int | None = None  # columns, when they differ from the rows
    jump_x: int | None = None
    start_x: int | None = None

    @property
    def cols(self) -> tuple[int, int, int]:
        """(size, jump, start) along the columns."""
        if self.size_x is None:
            return self.size, self.jump, self.start
        return self.size_x, self.jump_x, self.start_x  # type: ignore[return-value]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Input rows [top, bottom) and columns [left, right) seen by output (i, j), unclipped."""
        size_x, jump_x, start_x = self.cols
        top, left = self.start + i * self.jump, start_x + j * jump_x
        return top, top + self.size, left, left + size_x

    def window(self, i: int, j: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Input rows [top, bottom) and columns [left, right) seen by output (i, j), clipped."""
        top, bottom, left, right = self.box(i, j)
        return max(top, 0), min(bottom, height), max(left, 0), min(right, width)

    def to_dict(self) -> dict[str, int]:
        out = {"size": self.size, "jump": self.jump, "start": self.start}
        if self.size_x is not None:
            out.update(size_x=self.size_x, jump_x=self.jump_x, start_x=self.start_x)  # type: ignore[arg-type]
        return out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def receptive_fields(model: nn.Module, in_shape: tuple[int, int, int] | None = None) -> dict[str, ReceptiveField]:
    """Receptive field of every module with a (N, C, H, W) output, by dotted name.

    Measured on the traced graph when the (C, H, W) input shape is given or known for the model
    (any module graph); else computed analytically for a flat sequential model.
    """
    from .graph import known_shape, trace_graph

    shape = tuple(in_shape) if in_shape is not None else known_shape(model)
    if shape is None or _analytic(model):
        return analytic_receptive_fields(model)  # exact here, and free: no probe passes
    return dict(trace_graph(model, shape).fields)  # type: ignore[arg-type]


ELEMENTWISE = (
    nn.modules.batchnorm._BatchNorm,  # in eval mode: a scale and shift per channel
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Mish,
    nn.Hardswish,
    nn.PReLU,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


def is_elementwise(m: nn.Module) -> bool:
    """A layer that maps each pixel and channel on its own (in eval mode); Normalize and Scale
    (convlens.models.builder) do too."""
    return isinstance(m, ELEMENTWISE) or type(m).__name__ in ("Normalize", "Scale")


def _analytic(model: nn.Module) -> bool:
    """A flat sequential model of square convs and pools, element-wise layers and a head: the
    layer walk of :func:`analytic_receptive_fields` is exact for it."""
    if not isinstance(model, nn.Sequential):
        return False
    for m in model.children():
        if isinstance(m, (nn.Flatten, nn.Linear, nn.RNNBase)) or type(m).__name__ in ("GlobalPool", "RowReader"):
            return True
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            geometry = [m.kernel_size, m.stride or m.kernel_size, getattr(m, "dilation", 1)]
            geometry += [] if isinstance(m.padding, str) else [m.padding]
            if any(not isinstance(v, int) and v[0] != v[1] for v in geometry) or getattr(m, "ceil_mode", False):
                return False
            if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                return False
        elif not is_elementwise(m):
            return False
    return True


def analytic_receptive_fields(model: nn.Module) -> dict[str, ReceptiveField]:
    """Receptive field of every spatial layer of a flat sequential model, by dotted name.

    Elementwise layers (norms, activations, dropout) inherit the field of their input. The walk
    stops at the first layer that mixes all positions (flatten, global pool, linear, recurrent).
    Square kernels are assumed, as every built-in layer uses them.
    """
    size, jump, start = 1, 1, 0
    out: dict[str, ReceptiveField] = {}
    for name, m in model.named_children():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(m.kernel_size)[0], _pair(m.stride)[0]
            d = _pair(getattr(m, "dilation", 1))[0]
            if isinstance(m.padding, str):  # nn.Conv2d(padding="same" | "valid"), stride 1
                p = (k - 1) * d // 2 if m.padding == "same" else 0
            else:
                p = _pair(m.padding)[0]
            size += (k - 1) * d * jump
            start -= p * jump
            jump *= s
        elif isinstance(m, (nn.Flatten, nn.Linear, nn.RNNBase)) or type(m).__name__ in ("GlobalPool", "RowReader"):
            break
        out[name] = ReceptiveField(size, jump, start)
    return out


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int
    receptive_field: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def _macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        return int(out[0].numel() * k)
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    rnn = getattr(m, "rnn", None)
    if isinstance(rnn, nn.RNNBase):
        gates = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}[rnn.mode]
        steps = inp.shape[2]
        dirs = 2 if rnn.bidirectional else 1
        total, n_in = 0, rnn.input_size
        for _ in range(rnn.num_layers):
            total += dirs * steps * gates * (n_in * rnn.hidden_size + rnn.hidden_size**2)
            n_in = rnn.hidden_size * dirs
        return total
    return 0


def summarize(model: nn.Module, in_shape: tuple[int, int, int]) -> list[LayerRow]:
    """One row per layer, in execution order, from one forward pass of a single zero image.

    A sequential model gets one row per child; any other model one row per module that holds
    parameters itself or has no children (so the parameter total counts each parameter once).
    A row's MACs are those of every call, in that pass, of the convs and linear layers it holds
    (a nested block counts its layers; a conv that ``forward()`` calls twice counts twice); its
    output shape is its first call's. Modules that ``forward()`` never calls come last, with an
    empty output shape.
    """
    from .graph import remember_shape

    remember_shape(model, in_shape)
    if isinstance(model, nn.Sequential):
        units = [(n, m, True) for n, m in model.named_children()]
    else:
        units = [
            (n, m, False)
            for n, m in model.named_modules()
            if n and (not list(m.children()) or any(True for _ in m.parameters(recurse=False)))
        ]
    rf = receptive_fields(model, in_shape)
    seen: dict[str, LayerRow] = {}
    owner = _owners(model, [n for n, _, _ in units])
    macs: dict[str, int] = {}

    def count(name):  # every module, every call: its MACs go to the row that holds it
        def fn(m, inputs, output):
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if isinstance(output, torch.Tensor) and inp is not None and name in owner:
                macs[owner[name]] = macs.get(owner[name], 0) + _macs(m, inp, output)

        return fn

    def hook(name, recurse):
        def fn(m, inputs, output):
            if name in seen:
                return
            shape = list(output.shape[1:]) if isinstance(output, torch.Tensor) else []
            params = sum(p.numel() for p in m.parameters(recurse=recurse))
            seen[name] = LayerRow(name, type(m).__name__, shape, params, 0, rf[name].size if name in rf else None)

        return fn

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with borrowed(model, grad=False):  # the hooks go with it
        for name, m in model.named_modules():
            if name:
                m.register_forward_hook(count(name))
        for name, m, recurse in units:
            m.register_forward_hook(hook(name, recurse))
        model(torch.zeros(1, *in_shape, device=device))
    rows = list(seen.values())
    for r in rows:
        r.macs = macs.get(r.name, 0)
    rows += [
        LayerRow(n, type(m).__name__, [], sum(p.numel() for p in m.parameters(recurse=r)), 0, None)
        for n, m, r in units
        if n not in seen
    ]
    return rows


def _owners(model: nn.Module, units: list[str]) -> dict[str, str]:
    """For each module, the row that counts its MACs: the innermost row at or above it, else (a
    container none is above, e.g. a recurrent wrapper without parameters of its own) the first
    row inside it."""
    rows = set(units)
    owner: dict[str, str] = {}
    for name, _ in model.named_modules():
        if not name:
            continue
        parts = name.split(".")
        above = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in rows), None)
        inside = next((u for u in units if u.startswith(name + ".")), None)
        if above or inside:
            owner[name] = above or inside  # type: ignore[assignment]
    return owner


def totals(rows: list[LayerRow]) -> dict[str, int]:
    return {"params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}


def format_table(rows: list[LayerRow]) -> str:
    nw = max([12] + [len(r.name) for r in rows])
    tw = max([12] + [len(r.type) for r in rows])
    head = f"{'layer':<{nw}} {'type':<{tw}} {'output':<16} {'params':>11} {'MACs':>13} {'RF':>4}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rf = "" if r.receptive_field is None else str(r.receptive_field)
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<{nw}} {r.type:<{tw}} {shape:<16} {r.params:>11,} {r.macs:>13,} {rf:>4}")
    t = totals(rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':<{nw + tw + 18}} {t['params']:>11,} {t['macs']:>13,}")
    return "\n".join(lines)
