"""Per-layer summary: output shape, parameters, multiply-accumulates and exact receptive fields.

Receptive fields are computed from the module graph (kernel, stride, padding, dilation of every
conv and pool), not guessed from names. For a layer with receptive field ``size``, ``jump`` (its
stride in input pixels) and ``start`` (the input coordinate of the top-left pixel seen by output
position 0, negative inside the padding), output position ``i`` sees input pixels
``start + i * jump`` to ``start + i * jump + size - 1`` along each axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ReceptiveField:
    size: int
    jump: int
    start: int

    def window(self, i: int, j: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Input rows [top, bottom) and columns [left, right) seen by output (i, j), clipped."""
        top, left = self.start + i * self.jump, self.start + j * self.jump
        return max(top, 0), min(top + self.size, height), max(left, 0), min(left + self.size, width)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def receptive_fields(model: nn.Module) -> dict[str, ReceptiveField]:
    """Receptive field of every spatial layer of a sequential model, by dotted name.

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
    """One row per top-level layer, from one forward pass of a single zero image."""
    rows: list[LayerRow] = []
    rf = receptive_fields(model)
    x = torch.zeros(1, *in_shape, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for name, m in model.named_children():
                y = m(x)
                rows.append(LayerRow(
                    name, type(m).__name__, list(y.shape[1:]), sum(p.numel() for p in m.parameters()),
                    _macs(m, x, y), rf[name].size if name in rf else None,
                ))  # fmt: skip
                x = y
    finally:
        model.train(was_training)
    return rows


def totals(rows: list[LayerRow]) -> dict[str, int]:
    return {"params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}


def format_table(rows: list[LayerRow]) -> str:
    head = f"{'layer':<12} {'type':<12} {'output':<16} {'params':>11} {'MACs':>13} {'RF':>4}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rf = "" if r.receptive_field is None else str(r.receptive_field)
        lines.append(f"{r.name:<12} {r.type:<12} {'x'.join(map(str, r.output_shape)):<16} {r.params:>11,} {r.macs:>13,} {rf:>4}")
    t = totals(rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':<42} {t['params']:>11,} {t['macs']:>13,}")
    return "\n".join(lines)
