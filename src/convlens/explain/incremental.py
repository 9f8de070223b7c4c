"""Incremental inference for occlusion: recompute only what a patch can change.

An occluded image differs from the original only inside the patch, so a 3x3 convolution's output
differs only in the patch grown by one pixel on each side, the next one's by two, and so on
(Nakandala et al., "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019). Here, exactly (none of the paper's approximations):

1. one ordinary forward pass per image caches the activations at the input of every spatial
   layer (conv, max/avg pool) of the model's flat ``nn.Sequential``;
2. for a batch of (image, patch position) items, each spatial layer is run only on a fixed-size
   window that covers the region the patch can have reached there (the previous region grown by
   the kernel's reach, divided by the stride). The window's input is gathered in one
   ``index_select`` from three sources: the cached activations, the previous layer's windows
   (where the patch has reached) and a zero row (the layer's own padding). Element-wise layers
   (BatchNorm in eval mode, activations, dropout, the input normalisation) run on the windows;
3. once a window covers its whole map, the remaining layers run as usual on full maps. If a
   ``Flatten -> Linear`` follows while the window is still small, the linear layer is updated
   instead of recomputed: ``W x_new = W x_base + W (x_new - x_base)``, with only the window's
   columns of ``W``.

The result is the naive loop's result up to float32 summation order (tests compare both paths
to 1e-5). Which layers qualify is decided from module types; anything else (recurrent layers,
global pooling, padded pooling that excludes the padding from its average) ends the incremental
part, and a model that is not a flat ``nn.Sequential`` of such layers uses the naive path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ELEMENTWISE = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)  # fmt: skip
_IDENTITY_IN_EVAL = (nn.Dropout, nn.Dropout2d, nn.Identity)


def _elementwise(m: nn.Module) -> bool:
    # Normalize and Scale (convlens.models.builder) act per pixel and channel too
    return isinstance(m, _ELEMENTWISE) or type(m).__name__ in ("Normalize", "Scale")


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

    def window_op(self, x: torch.Tensor) -> torch.Tensor:
        """The layer without its padding (the gathered window already holds it)."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            x = F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        elif isinstance(m, nn.MaxPool2d):
            x = F.max_pool2d(x, m.kernel_size, m.stride, 0, m.dilation)
        else:
            x = F.avg_pool2d(x, m.kernel_size, m.stride, 0)
        for p in self.post:
            x = p(x)
        return x

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
        return Stage(m, _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation), float("-inf"))
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
    while i < len(children) and _elementwise(children[i]):
        prefix.append(children[i])
        i += 1
    stages: list[Stage] = []
    while i < len(children):
        st = _stage(children[i])
        if st is None:
            break
        i += 1
        while i < len(children) and _elementwise(children[i]):
            st.post.append(children[i])
            i += 1
        stages.append(st)
    if not stages:
        return None
    rest = children[i:]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        x = torch.zeros(1, *in_shape, device=device)
        for m in prefix:
            x = m(x)
        for st in stages:
            st.in_ch, st.in_hw = x.shape[1], (x.shape[2], x.shape[3])
            x = st.full_op(x)
            st.out_ch, st.out_hw = x.shape[1], (x.shape[2], x.shape[3])
    linear_at = None
    j = 0
    while j < len(rest) and isinstance(rest[j], _IDENTITY_IN_EVAL):
        j += 1
    if j < len(rest) and isinstance(rest[j], nn.Flatten) and rest[j].start_dim == 1:
        j += 1
        while j < len(rest) and isinstance(rest[j], _IDENTITY_IN_EVAL):
            j += 1
        if j < len(rest) and isinstance(rest[j], nn.Linear):
            linear_at = j
    return Plan(prefix, stages, rest, linear_at)


# ----------------------------------------------------------------------------------------------
# geometry: which window each layer recomputes for each patch position


def _grow(a: np.ndarray, b: np.ndarray, k: int, s: int, p: int, d: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Output range [oa, ob) whose inputs intersect the changed input range [a, b)."""
    span = (k - 1) * d + 1
    oa = -((-(a + p - span + 1)) // s)  # ceil division
    ob = (b - 1 + p) // s + 1
    return np.clip(oa, 0, n_out), np.clip(ob, 0, n_out)


@dataclass
class _Gather:
    """Per position, where each element of a layer's input window comes from."""

    kind: torch.Tensor  # (P, Rh, Rw) int64: 0 padding row, 1 cached activation, 2 previous window
    base: torch.Tensor  # (P, Rh, Rw) int64: row of the cached map (y * W + x)
    win: torch.Tensor  # (P, Rh, Rw) int64: row inside the previous window
    prev_rows: int  # rows of one previous window (0: the patch fill, a single row)


def _gather_map(iy: np.ndarray, ix: np.ndarray, hw: tuple[int, int], prev_y: np.ndarray, prev_x: np.ndarray,
                prev_size: tuple[int, int] | None, patch: tuple[np.ndarray, ...] | None,
                device: torch.device) -> _Gather:  # fmt: skip
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
    return _Gather(t(kind), t(base), t(win), prev_rows)


@dataclass
class Geometry:
    """Everything that depends only on the patch positions and the model, reused for every image."""

    gathers: list[_Gather]  # one per incremental stage
    windows: list[tuple[int, int]]  # output window size per incremental stage
    origins: list[np.ndarray]  # (P, 2) output window origin per incremental stage
    n_incremental: int  # stages run on windows; the rest on full maps
    full_after: bool  # the last incremental window covers its map: no assembly needed
    assemble: _Gather | None  # full map of the last incremental stage, when it does not cover it


def plan_geometry(plan: Plan, ys: np.ndarray, xs: np.ndarray, window: int, image_hw: tuple[int, int],
                  device: torch.device) -> Geometry:  # fmt: skip
    """Windows and gather maps for patches with top-left corners (ys[i], xs[j]), row-major."""
    H, W = image_hw
    py = np.repeat(ys, len(xs)).astype(np.int64)
    px = np.tile(xs, len(ys)).astype(np.int64)
    a_y, b_y = np.clip(py, 0, H), np.clip(py + window, 0, H)
    a_x, b_x = np.clip(px, 0, W), np.clip(px + window, 0, W)
    patch = (a_y, b_y, a_x, b_x)
    gathers: list[_Gather] = []
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


# ----------------------------------------------------------------------------------------------
# execution


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C): one row per position, the layout windows are gathered from."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def chunks(n_items: int, per_image: int, chunk: int) -> list[tuple[int, int]]:
    """Item ranges (image-major order) of at most ``chunk`` items that repeat from image to
    image: whole images when ``chunk`` holds one or more, else equal parts of one image. Repeating
    ranges let the gather indices be computed once and reused."""
    if chunk >= per_image:
        step = (chunk // per_image) * per_image
        return [(s, min(s + step, n_items)) for s in range(0, n_items, step)]
    parts = -(-per_image // chunk)
    bounds = [round(i * per_image / parts) for i in range(parts + 1)]
    return [(img * per_image + a, img * per_image + b) for img in range(n_items // per_image)
            for a, b in zip(bounds[:-1], bounds[1:])]  # fmt: skip


@dataclass
class _ChunkIndex:
    """Gather indices for one chunk pattern (first position, item count), reused for every image."""

    stages: list[torch.Tensor]  # per incremental stage: (B, Rh, Rw) rows into [pad, base, previous]
    assemble: torch.Tensor | None  # (B, H, W) for the full map of the last stage
    under: torch.Tensor | None  # (B*Rh*Rw,) cached rows under the last windows (linear update)
    padded: torch.Tensor | None  # (L, most) rows of the change per map position, 0 = none
    back: torch.Tensor | None  # (B, Rh*Rw) where each row's product lands in the padded result


class IncrementalOcclusion:
    """Logits of occluded copies of a batch of images, recomputing only what each patch reaches.

    Built once per (model, images, window, stride); :meth:`logits` then evaluates items
    (image, position) in image-major order, ``chunk`` at a time.
    """

    def __init__(self, model: nn.Module, plan: Plan, images: torch.Tensor, fill: torch.Tensor,
                 ys: np.ndarray, xs: np.ndarray, window: int):  # fmt: skip
        self.model, self.plan = model, plan
        self.device = images.device
        self.geo = plan_geometry(plan, ys, xs, window, tuple(images.shape[2:]), images.device)
        self.P = len(ys) * len(xs)
        self.n_images = len(images)
        n_inc = self.geo.n_incremental
        self.ops = [_fold(st) for st in plan.stages[:n_inc]]
        self._index: dict[tuple[int, int], _ChunkIndex] = {}
        with torch.no_grad():
            x = images
            f = fill.view(1, -1, 1, 1).to(images)
            for m in plan.prefix:
                x, f = m(x), m(f)
            self.fill_row = _rows(f)
            # cached activations at the input of every incremental stage, and after the last one
            self.base: list[torch.Tensor] = []
            for st in plan.stages[:n_inc]:
                self.base.append(_rows(x))
                x = st.full_op(x)
            self.base.append(_rows(x))
            self.base_hw = [st.in_hw for st in plan.stages[:n_inc]] + [plan.stages[n_inc - 1].out_hw]
            self.weight_by_position = None
            if not self.geo.full_after and plan.linear_at is not None and n_inc == len(plan.stages):
                rh, rw = self.geo.windows[-1]
                oh, ow = plan.stages[-1].out_hw
                if rh * rw * 2 <= oh * ow:  # the update costs less than the layer
                    lin: nn.Linear = plan.rest[plan.linear_at]  # type: ignore[assignment]
                    c = plan.stages[-1].out_ch
                    # weight columns regrouped per map position: (H*W, C, out), a copy
                    w = lin.weight.detach().view(lin.out_features, c, oh, ow)
                    self.weight_by_position = w.permute(2, 3, 1, 0).reshape(oh * ow, c, -1).contiguous()
                    y = x
                    for m in plan.rest[: plan.linear_at + 1]:
                        y = m(y)
                    self.base_linear = y

    # -- indices, computed once per chunk pattern ---------------------------------------------
    def _chunk_index(self, start: int, stop: int) -> _ChunkIndex:
        key = (start % self.P, stop - start)
        if key not in self._index:
            self._index[key] = self._build_index(start, stop)
        return self._index[key]

    def _build_index(self, start: int, stop: int) -> _ChunkIndex:
        geo, dev = self.geo, self.device
        items = torch.arange(start, stop, device=dev)
        img, pos = items // self.P, items % self.P
        rel = (img - img.min()).view(-1, 1, 1)
        n_img = int(img.max() - img.min()) + 1
        b = torch.arange(len(items), device=dev).view(-1, 1, 1)

        def index(g: _Gather, hw: tuple[int, int]) -> torch.Tensor:
            hw_n = hw[0] * hw[1]
            kind = g.kind[pos]
            from_base = 1 + rel * hw_n + g.base[pos]
            from_prev = 1 + n_img * hw_n + b * g.prev_rows + g.win[pos]
            return torch.where(kind == 1, from_base, torch.where(kind == 2, from_prev, 0))

        stages = [index(g, hw) for g, hw in zip(geo.gathers, self.base_hw)]
        assemble = under = padded = back = None
        if self.weight_by_position is not None:
            under, padded, back = self._update_index(img, pos, rel.view(-1))
        elif not geo.full_after:
            assemble = index(geo.assemble, self.base_hw[-1])  # type: ignore[arg-type]
        return _ChunkIndex(stages, assemble, under, padded, back)

    def _update_index(self, img: torch.Tensor, pos: torch.Tensor, rel: torch.Tensor):
        """Indices for the linear update: rows of the change grouped by map position."""
        rh, rw = self.geo.windows[-1]
        oh, ow = self.plan.stages[-1].out_hw
        origin = self.geo.origins[-1][pos.cpu().numpy()]  # (B, 2)
        loc = ((origin[:, :1, None] + np.arange(rh)[None, :, None]) * ow
               + origin[:, 1:, None] + np.arange(rw)[None, None, :]).reshape(len(pos), -1)  # fmt: skip
        under = rel.cpu().numpy()[:, None] * (oh * ow) + loc
        flat = loc.reshape(-1)
        order = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=oh * ow)
        most = int(counts.max())
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(flat)) - first[flat[order]]
        slot = np.empty(len(flat), np.int64)
        slot[order] = flat[order] * most + rank
        padded = np.zeros(oh * ow * most, np.int64)
        padded[slot] = np.arange(len(flat)) + 1
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        return t(under.reshape(-1)), t(padded.reshape(oh * ow, most)), t(slot.reshape(len(pos), -1))

    # -- evaluation ---------------------------------------------------------------------------
    def _gather(self, index: torch.Tensor, base: torch.Tensor, hw: tuple[int, int], prev: torch.Tensor,
                lo: int, hi: int, pad_value: float) -> torch.Tensor:  # fmt: skip
        """Input windows (B, C, Rh, Rw), channels-last, from [pad row, cached rows, previous rows]."""
        hw_n = hw[0] * hw[1]
        c = base.shape[1]
        pad = torch.full((1, c), pad_value, dtype=base.dtype, device=base.device)
        src = torch.cat([pad, base[lo * hw_n : hi * hw_n], prev])
        return F.embedding(index, src).permute(0, 3, 1, 2)

    def _linear_update(self, win: torch.Tensor, ix: _ChunkIndex, lo: int, hi: int, img: torch.Tensor) -> torch.Tensor:
        """The Linear layer's output: cached output plus the weights times the window's change."""
        oh, ow = self.plan.stages[-1].out_hw
        base = self.base[-1][lo * oh * ow : hi * oh * ow]
        change = _rows(win) - F.embedding(ix.under, base)
        zero = change.new_zeros(1, change.shape[1])
        grouped = F.embedding(ix.padded, torch.cat([zero, change]))  # (H*W, most, C)
        prod = torch.bmm(grouped, self.weight_by_position)  # (H*W, most, out)
        per_row = F.embedding(ix.back, prod.view(-1, prod.shape[-1]))  # (B, Rh*Rw, out)
        return self.base_linear[img] + per_row.sum(1)

    @torch.no_grad()
    def logits(self, start: int, stop: int) -> torch.Tensor:
        """Model outputs for items ``start:stop`` (item = image * positions + position)."""
        plan, geo = self.plan, self.geo
        ix = self._chunk_index(start, stop)
        lo, hi = start // self.P, (stop - 1) // self.P + 1
        prev = self.fill_row
        for k in range(geo.n_incremental):
            x = self._gather(ix.stages[k], self.base[k], self.base_hw[k], prev, lo, hi, plan.stages[k].pad_value)
            y = self.ops[k](x)
            prev = _rows(y)
        if geo.full_after:
            for st in plan.stages[geo.n_incremental :]:
                y = st.full_op(y)
            rest = plan.rest
        elif self.weight_by_position is not None:
            img = torch.arange(start, stop, device=self.device) // self.P
            y = self._linear_update(y, ix, lo, hi, img)
            rest = plan.rest[plan.linear_at + 1 :]  # type: ignore[operator]
        else:
            y = self._gather(ix.assemble, self.base[-1], self.base_hw[-1], prev, lo, hi, 0.0)  # type: ignore[arg-type]
            rest = plan.rest
        for m in rest:
            y = m(y)
        return y


def _fold(st: Stage):
    """The stage as one function on windows; a conv followed by an eval-mode BatchNorm becomes
    one conv with rescaled weights (copies: the model's own weights are untouched)."""
    m, post = st.module, list(st.post)
    if isinstance(m, nn.Conv2d) and post and isinstance(post[0], nn.BatchNorm2d) and post[0].running_var is not None:
        bn = post.pop(0)
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
        weight = m.weight.detach() * scale.view(-1, 1, 1, 1)
        bias = ((m.bias.detach() if m.bias is not None else 0) - bn.running_mean) * scale + shift
        stride, dilation, groups = m.stride, m.dilation, m.groups

        def conv(x: torch.Tensor) -> torch.Tensor:
            x = F.conv2d(x, weight, bias, stride, 0, dilation, groups)
            for p in post:
                x = p(x)
            return x

        return conv
    return st.window_op
