"""Which part of each layer an occluding patch can reach: the plan and the geometry behind
:mod:`.incremental`.

:func:`compile_plan` splits a flat ``nn.Sequential`` into element-wise layers before the first
spatial one, *stages* (a conv or pool and the element-wise layers after it), and the rest.
:func:`plan_geometry` then follows each patch position through the stages: the changed input
range ``[a, b)`` of a layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d``
changes the outputs ``ceil((a + p - (k - 1) d) / s)`` to ``floor((b - 1 + p) / s)``; each stage
recomputes a fixed-size window covering that range for every position (shifted inward at the
borders), and each window's input is described element by element as coming from the cached
activations, from the previous stage's window, or from the layer's padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..models.summary import is_elementwise

IDENTITY_IN_EVAL = (nn.Dropout, nn.Dropout2d, nn.Identity)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass
class Stage:
    """One spatial layer and the element-wise layers after it."""

    module: nn.Module
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    in_hw: tuple[int, int] = (0, 0)
    out_hw: tuple[int, int] = (0, 0)
    in_ch: int = 0
    out_ch: int = 0
    post: list[nn.Module] = field(default_factory=list)

    def full_op(self, x: torch.Tensor) -> torch.Tensor:
        x = self.module(x)
        for p in self.post:
            x = p(x)
        return x


def _stage(m: nn.Module) -> Stage | None:
    """A Stage for a spatial layer whose padding can be reproduced by gathering, else None."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        return Stage(m, _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation), 0.0)
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.return_indices:
            return None
        return Stage(
            m,
            _pair(m.kernel_size),
            _pair(m.stride or m.kernel_size),
            _pair(m.padding),
            _pair(m.dilation),
            float("-inf"),
        )
    if isinstance(m, nn.AvgPool2d):
        pad = _pair(m.padding)
        if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
            return None
        return Stage(m, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), pad, (1, 1), 0.0)
    return None


@dataclass
class Plan:
    prefix: list[nn.Module]  # element-wise layers before the first spatial one (input normalisation)
    stages: list[Stage]
    rest: list[nn.Module]  # everything after the last spatial layer that qualified
    linear_at: int | None  # index in ``rest`` of a Linear right after a Flatten (for the update rule)


def compile_plan(model: nn.Module, in_shape: tuple[int, int, int]) -> Plan | None:
    """Split a flat ``nn.Sequential`` into prefix / stages / rest, or None if it does not fit.

    Shapes come from one forward pass of a zero image; the model must already be in eval mode.
    """
    if not isinstance(model, nn.Sequential):
        return None
    children = list(model.children())
    prefix: list[nn.Module] = []
    i = 0
    while i < len(children) and is_elementwise(children[i]):
        prefix.append(children[i])
        i += 1
    stages: list[Stage] = []
    while i < len(children):
        st = _stage(children[i])
        if st is None:
            break
        i += 1
        while i < len(children) and is_elementwise(children[i]):
            st.post.append(children[i])
            i += 1
        stages.append(st)
    if not stages:
        return None
    rest = children[i:]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    _measure_shapes(prefix, stages, in_shape, device)
    return Plan(prefix, stages, rest, _linear_after_flatten(rest))


def _measure_shapes(
    prefix: list[nn.Module], stages: list[Stage], in_shape: tuple[int, int, int], device: torch.device
) -> None:
    """Fill each stage's input and output channels and size from one forward pass of a zero image."""
    with torch.no_grad():
        x = torch.zeros(1, *in_shape, device=device)
        for m in prefix:
            x = m(x)
        for st in stages:
            st.in_ch, st.in_hw = x.shape[1], (x.shape[2], x.shape[3])
            x = st.full_op(x)
            st.out_ch, st.out_hw = x.shape[1], (x.shape[2], x.shape[3])


def _skip_identities(rest: list[nn.Module], j: int) -> int:
    """The first index from ``j`` on whose layer is not an identity in eval mode."""
    while j < len(rest) and isinstance(rest[j], IDENTITY_IN_EVAL):
        j += 1
    return j


def _linear_after_flatten(rest: list[nn.Module]) -> int | None:
    """Index in ``rest`` of a Linear that follows a Flatten(start_dim=1), identities aside; else None."""
    j = _skip_identities(rest, 0)
    if not (j < len(rest) and isinstance(rest[j], nn.Flatten) and rest[j].start_dim == 1):
        return None
    j = _skip_identities(rest, j + 1)
    return j if j < len(rest) and isinstance(rest[j], nn.Linear) else None


# ----------------------------------------------------------------------------------------------
# geometry: which window each layer recomputes for each patch position


def _grow(a: np.ndarray, b: np.ndarray, k: int, s: int, p: int, d: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Output range [oa, ob) whose inputs intersect the changed input range [a, b)."""
    span = (k - 1) * d + 1
    oa = -((-(a + p - span + 1)) // s)  # ceil division
    ob = (b - 1 + p) // s + 1
    return np.clip(oa, 0, n_out), np.clip(ob, 0, n_out)


@dataclass
class Gather:
    """Per position, where each element of a layer's input window comes from."""

    kind: torch.Tensor  # (P, Rh, Rw) int64: 0 padding row, 1 cached activation, 2 previous window
    base: torch.Tensor  # (P, Rh, Rw) int64: row of the cached map (y * W + x)
    win: torch.Tensor  # (P, Rh, Rw) int64: row inside the previous window
    prev_rows: int  # rows of one previous window (0: the patch fill, a single row)


def _gather_map(
    iy: np.ndarray,
    ix: np.ndarray,
    hw: tuple[int, int],
    prev_y: np.ndarray,
    prev_x: np.ndarray,
    prev_size: tuple[int, int] | None,
    patch: tuple[np.ndarray, ...] | None,
    device: torch.device,
) -> Gather:
    """``iy`` (P, Rh), ``ix`` (P, Rw): input coordinates of each window; the previous window sits
    at ``prev_y/prev_x`` (P,) with ``prev_size``, or, for the first layer, ``patch`` gives the
    occluded rectangle (y0, y1, x0, x1) filled with one constant row."""
    H, W = hw
    vy, vx = (iy >= 0) & (iy < H), (ix >= 0) & (ix < W)
    valid = vy[:, :, None] & vx[:, None, :]
    if patch is not None:
        y0, y1, x0, x1 = patch
        in_y = (iy >= y0[:, None]) & (iy < y1[:, None])
        in_x = (ix >= x0[:, None]) & (ix < x1[:, None])
        win = np.zeros(valid.shape, np.int64)
        prev_rows = 0
    else:
        rh, rw = prev_size  # type: ignore[misc]
        ry, rx = iy - prev_y[:, None], ix - prev_x[:, None]
        in_y, in_x = (ry >= 0) & (ry < rh), (rx >= 0) & (rx < rw)
        win = np.clip(ry, 0, rh - 1)[:, :, None] * rw + np.clip(rx, 0, rw - 1)[:, None, :]
        prev_rows = rh * rw
    inside = in_y[:, :, None] & in_x[:, None, :] & valid
    kind = np.where(inside, 2, np.where(valid, 1, 0))
    base = np.clip(iy, 0, H - 1)[:, :, None] * W + np.clip(ix, 0, W - 1)[:, None, :]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return Gather(t(kind), t(base), t(win), prev_rows)


@dataclass
class Geometry:
    """Everything that depends only on the patch positions and the model, reused for every image."""

    gathers: list[Gather]  # one per incremental stage
    windows: list[tuple[int, int]]  # output window size per incremental stage
    origins: list[np.ndarray]  # (P, 2) output window origin per incremental stage
    n_incremental: int  # stages run on windows; the rest on full maps
    full_after: bool  # the last incremental window covers its map: no assembly needed
    assemble: Gather | None  # full map of the last incremental stage, when it does not cover it


def plan_geometry(
    plan: Plan, ys: np.ndarray, xs: np.ndarray, window: int, image_hw: tuple[int, int], device: torch.device
) -> Geometry:
    """Windows and gather maps for patches with top-left corners (ys[i], xs[j]), row-major."""
    H, W = image_hw
    py = np.repeat(ys, len(xs)).astype(np.int64)
    px = np.tile(xs, len(ys)).astype(np.int64)
    a_y, b_y = np.clip(py, 0, H), np.clip(py + window, 0, H)
    a_x, b_x = np.clip(px, 0, W), np.clip(px + window, 0, W)
    patch = (a_y, b_y, a_x, b_x)
    gathers: list[Gather] = []
    windows: list[tuple[int, int]] = []
    origins: list[np.ndarray] = []
    prev_origin = None
    for st in plan.stages:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
        oh, ow = st.out_hw
        a_y, b_y = _grow(a_y, b_y, kh, sh, ph, dh, oh)
        a_x, b_x = _grow(a_x, b_x, kw, sw, pw, dw, ow)
        rh, rw = max(1, int((b_y - a_y).max())), max(1, int((b_x - a_x).max()))
        oy, ox = np.minimum(a_y, oh - rh), np.minimum(a_x, ow - rw)
        # input coordinates of each output window: origin * stride - padding + 0 .. reach
        iy = (oy * sh - ph)[:, None] + np.arange((rh - 1) * sh + (kh - 1) * dh + 1)[None, :]
        ix = (ox * sw - pw)[:, None] + np.arange((rw - 1) * sw + (kw - 1) * dw + 1)[None, :]
        if prev_origin is None:
            g = _gather_map(iy, ix, st.in_hw, py, px, None, patch, device)
        else:
            g = _gather_map(iy, ix, st.in_hw, prev_origin[:, 0], prev_origin[:, 1], windows[-1], None, device)
        gathers.append(g)
        windows.append((rh, rw))
        origins.append(np.stack([oy, ox], 1))
        prev_origin = origins[-1]
        if (rh, rw) == (oh, ow):  # the patch now reaches every position: plain layers from here
            return Geometry(gathers, windows, origins, len(gathers), True, None)
    oh, ow = plan.stages[-1].out_hw
    iy = np.broadcast_to(np.arange(oh), (len(py), oh))
    ix = np.broadcast_to(np.arange(ow), (len(px), ow))
    assemble = _gather_map(iy, ix, (oh, ow), prev_origin[:, 0], prev_origin[:, 1], windows[-1], None, device)
    return Geometry(gathers, windows, origins, len(gathers), False, assemble)
