"""Receptive-field arithmetic: a window op applied to a field, the box covering several fields,
and a field read off the input-gradient supports of two neighbouring units (``graph.py`` uses
all three)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .summary import ReceptiveField


def pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def make_field(rows: tuple[int, int, int], cols: tuple[int, int, int]) -> ReceptiveField:
    return ReceptiveField(*rows) if rows == cols else ReceptiveField(*rows, *cols)


def compose(f: ReceptiveField, kernel: Any, stride: Any, padding: Any, dilation: Any) -> ReceptiveField:
    """The field after a window op (kernel, stride, padding, dilation) applied to a map with ``f``."""
    k, st, d = pair(kernel), pair(stride), pair(dilation)
    if isinstance(padding, str):  # "same" pads (k - 1) d in total, the smaller half first; "valid" none
        p = tuple((kk - 1) * dd // 2 if padding == "same" else 0 for kk, dd in zip(k, d))
    else:
        p = pair(padding)
    axes = [(f.size, f.jump, f.start), f.cols]
    out = [(sz + (k[a] - 1) * d[a] * jp, jp * st[a], s0 - p[a] * jp) for a, (sz, jp, s0) in enumerate(axes)]
    return make_field(out[0], out[1])


def union(fields: list[ReceptiveField]) -> ReceptiveField | None:
    """The box covering fields with one step (a sum of positive maps sees what either sees)."""
    axes = []
    for pick in (lambda f: (f.size, f.jump, f.start), lambda f: f.cols):
        parts = [pick(f) for f in fields]
        if len({jp for _, jp, _ in parts}) != 1:
            return None
        lo, hi = min(s0 for _, _, s0 in parts), max(s0 + sz for sz, _, s0 in parts)
        axes.append((hi - lo, parts[0][1], lo))
    return make_field(axes[0], axes[1])


def window_args(module_or_args: Any, kwargs: dict | None = None) -> tuple | None:
    """(kernel, stride, padding, dilation) of a conv or pool module, or of a functional pool call."""
    m = module_or_args
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return m.kernel_size, m.stride or m.kernel_size, m.padding, getattr(m, "dilation", 1)
    if isinstance(m, tuple) and kwargs is not None:
        names = ("kernel_size", "stride", "padding", "dilation")
        given = dict(zip(names, m[1:]), **{k: v for k, v in kwargs.items() if k in names})
        if "kernel_size" not in given:
            return None
        k = given["kernel_size"]
        return k, given.get("stride") or k, given.get("padding", 0), given.get("dilation", 1)
    return None


def support(grad: torch.Tensor) -> tuple[int, int, int, int] | None:
    nz = grad.abs().sum(0).nonzero()
    if len(nz) == 0:
        return None
    return int(nz[:, 0].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].min()), int(nz[:, 1].max()) + 1


def measure(ga: torch.Tensor, gb: torch.Tensor, i: int, j: int) -> ReceptiveField | str:
    """The field from the input gradients of units (i, j) and (i + 1, j + 1), or why it cannot
    be read here (``"clipped"``: a window touches the probe image's border)."""
    a, b = support(ga), support(gb)
    if a is None or b is None:
        return "no input pixel reaches it"
    H, W = ga.shape[1:]
    if min(a[0], a[2], b[0], b[2]) <= 0 or max(a[1], b[1]) >= H or max(a[3], b[3]) >= W:
        return "clipped"
    size, size_x = a[1] - a[0], a[3] - a[2]
    jump, jump_x = b[0] - a[0], b[2] - a[2]
    if (b[1] - b[0], b[3] - b[2]) != (size, size_x) or jump < 1 or jump_x < 1:
        return "its window is not the same box shifted by a fixed step for every unit"
    start, start_x = a[0] - i * jump, a[2] - j * jump_x
    if (size_x, jump_x, start_x) == (size, jump, start):
        return ReceptiveField(size, jump, start)
    return ReceptiveField(size, jump, start, size_x, jump_x, start_x)


# ----------------------------------------------------------------------------------------------
# exact windows, unit by unit
#
# A field (size, jump, start) is one box shifted by a fixed step; the pixels a unit near the
# border really sees can be fewer: a dilated kernel's taps that fall in the padding see nothing,
# so the box clipped to the image can be wider than the unit's support. ``Spans`` follow, per
# axis and per output position, the first and last input pixel that can reach it (the rows'
# and the columns' [lo, hi), lo >= hi where none does), through the same ops as the fields.

Spans = tuple  # (rows lo, rows hi, cols lo, cols hi): numpy int arrays, one entry per position


def input_spans(height: int, width: int) -> Spans:
    r, c = np.arange(height), np.arange(width)
    return r, r + 1, c, c + 1


def _axis(lo: np.ndarray, hi: np.ndarray, taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The span of each output position from its (positions, taps) input positions."""
    n = len(lo)
    inside = (taps >= 0) & (taps < n)
    t = np.clip(taps, 0, max(n - 1, 0))
    seen = inside & (lo[t] < hi[t])
    out_lo = np.where(seen, lo[t], np.iinfo(np.int64).max).min(1)
    out_hi = np.where(seen, hi[t], -1).max(1)
    empty = ~seen.any(1)
    return np.where(empty, 0, out_lo), np.where(empty, 0, out_hi)


def window_spans(s: Spans, kernel: Any, stride: Any, padding: Any, dilation: Any, out_hw: tuple) -> Spans:
    """Spans after a window op (the taps that land in the padding see nothing)."""
    k, st, d = pair(kernel), pair(stride), pair(dilation)
    if isinstance(padding, str):
        p = tuple((kk - 1) * dd // 2 if padding == "same" else 0 for kk, dd in zip(k, d))
    else:
        p = pair(padding)
    out = []
    for a in range(2):
        taps = np.arange(out_hw[a])[:, None] * st[a] - p[a] + np.arange(k[a])[None, :] * d[a]
        out += _axis(s[2 * a], s[2 * a + 1], taps)
    return tuple(out)


def adaptive_spans(s: Spans, out_hw: tuple) -> Spans:
    """Spans after an adaptive pool: output i pools inputs floor(i L / n) to ceil((i + 1) L / n)."""
    out = []
    for a in range(2):
        n_in, n_out = len(s[2 * a]), out_hw[a]
        i = np.arange(n_out)
        first, last = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        width = int((last - first).max())
        taps = first[:, None] + np.arange(width)[None, :]
        taps = np.where(taps < last[:, None], taps, -1)
        out += _axis(s[2 * a], s[2 * a + 1], taps)
    return tuple(out)


def adaptive_window(in_hw: tuple, out_hw: tuple) -> tuple | None:
    """(kernel, stride, padding, dilation) of an adaptive pool whose windows are one box shifted
    by a fixed step (each side a multiple of the output's), else None."""
    if any(o < 1 or i % o for i, o in zip(in_hw, out_hw)):
        return None
    k = tuple(i // o for i, o in zip(in_hw, out_hw))
    return k, k, 0, 1


def union_spans(spans: list[Spans]) -> Spans:
    out = []
    for a in range(2):
        lo = np.stack([np.where(s[2 * a] < s[2 * a + 1], s[2 * a], np.iinfo(np.int64).max) for s in spans])
        hi = np.stack([s[2 * a + 1] for s in spans])
        lo, hi = lo.min(0), hi.max(0)
        out += [np.where(hi > 0, lo, 0), np.where(hi > 0, hi, 0)]
    return tuple(out)


def span_window(s: Spans, i: int, j: int) -> tuple[int, int, int, int]:
    """Input rows [top, bottom) and columns [left, right) that output (i, j) can see."""
    return int(s[0][i]), int(s[1][i]), int(s[2][j]), int(s[3][j])
