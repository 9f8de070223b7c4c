"""Incremental occlusion on any traced graph: per node, recompute only the window a patch reaches.

:mod:`.incremental` follows a patch through a flat ``nn.Sequential``; here the same idea runs on
the ``torch.fx`` graph of any model (residual blocks, a module called twice, activations and
sums written in ``forward()``; :mod:`convlens.models.reuse` traces it). The occluded input is
the edited node, and every node that depends on it holds, per (image, position) item, either

- a *window*: a fixed-size box of its map (shifted inward at the borders) that covers every
  value the patch can have changed, the rest being the node's value for the unoccluded image
  (cached by one ordinary forward pass), or
- its *full* value, once the window covers the whole map or an op of unknown geometry comes.

A conv or pool (module) computes its output window from the input region under it, gathered
in one ``index_select`` from [padding row, cached rows, the input's window rows]; element-wise
modules and functions (batch norm, activations, arithmetic with per-channel constants) run on
the window; a sum, product or channel concatenation of several changed nodes runs on the union
of their windows, each operand gathered there; anything else (global pooling, flatten, linear)
gets its inputs assembled in full. Results equal the plain loop's to float32 summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..models.reuse import in_place, run_node
from ..models.summary import is_elementwise

__all__ = ["GraphOcclusion"]

_POINTWISE = {
    "relu", "relu_", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "hardtanh", "relu6",
    "hardswish", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "contiguous", "clone", "neg",
    "abs", "exp",
}  # fmt: skip
_ARITHMETIC = {
    "add",
    "sub",
    "mul",
    "truediv",
    "div",
    "iadd",
    "isub",
    "imul",
    "itruediv",
    "add_",
    "sub_",
    "mul_",
    "div_",
}
_MERGE = _ARITHMETIC | {"cat"}


@dataclass
class Win:
    """A node's window for every patch position: top-left corners (P,) and a fixed size."""

    oy: np.ndarray
    ox: np.ndarray
    rh: int
    rw: int
    hw: tuple[int, int]

    @property
    def whole(self) -> bool:
        return self.rh >= self.hw[0] and self.rw >= self.hw[1]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass
class _Spatial:
    """A conv or pool module's window geometry and its op without padding."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]  # top, left
    dilation: tuple[int, int]
    pad_value: float
    module: nn.Module

    def op(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, nn.MaxPool2d):
            return F.max_pool2d(x, self.kernel, self.stride, 0, self.dilation)
        return F.avg_pool2d(x, self.kernel, self.stride, 0)


def _spatial(m: nn.Module) -> _Spatial | None:
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            return None
        pw, _, ph, _ = m._reversed_padding_repeated_twice  # left, right, top, bottom
        return _Spatial(_pair(m.kernel_size), _pair(m.stride), (ph, pw), _pair(m.dilation), 0.0, m)
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.return_indices:
            return None
        k = _pair(m.kernel_size)
        return _Spatial(k, _pair(m.stride or k), _pair(m.padding), _pair(m.dilation), float("-inf"), m)
    if isinstance(m, nn.AvgPool2d):
        pad = _pair(m.padding)
        if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
            return None
        k = _pair(m.kernel_size)
        return _Spatial(k, _pair(m.stride or k), pad, (1, 1), 0.0, m)
    return None


def _out_range(o: np.ndarray, r: int, n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> tuple[np.ndarray, int]:
    """Output window (corners, size) of a layer whose input window is [o, o + r) of n_in rows."""
    lo = np.maximum(-(-(o + p - d * (k - 1)) // s), 0)
    hi = np.minimum((o + r - 1 + p) // s, n_out - 1)
    size = max(1, min(int((hi - lo).max()) + 1, n_out))
    return np.minimum(lo, n_out - size), size


def _union(wins: list[Win]) -> Win:
    hw = wins[0].hw
    top = np.min([w.oy for w in wins], 0)
    left = np.min([w.ox for w in wins], 0)
    rh = min(int((np.max([w.oy + w.rh for w in wins], 0) - top).max()), hw[0])
    rw = min(int((np.max([w.ox + w.rw for w in wins], 0) - left).max()), hw[1])
    return Win(np.minimum(top, hw[0] - rh), np.minimum(left, hw[1] - rw), rh, rw, hw)


def _name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", "")


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class GraphOcclusion:
    """Logits of occluded copies of a batch of images through any traced graph (see the module
    docstring); :meth:`run` evaluates every (image, position) item, image-major."""

    def __init__(
        self,
        model: nn.Module,
        graph: fx.Graph,
        images: torch.Tensor,
        fill: torch.Tensor,
        ys: np.ndarray,
        xs: np.ndarray,
        window: int,
        cache: dict | None = None,
    ):
        self.model, self.graph = model, graph
        self.modules = dict(model.named_modules())
        self.nodes = [n for n in graph.nodes]
        self.P, self.n_images, self.device = len(ys) * len(xs), len(images), images.device
        self.images, self.fill = images, fill.to(images).view(1, -1, 1, 1)
        h, w = images.shape[2:]
        rh, rw = min(window, h), min(window, w)
        py, px = np.repeat(ys, len(xs)), np.tile(xs, len(ys))
        self.patch = (py, px, window)
        self.input = next(n for n in self.nodes if n.op == "placeholder")
        self.wins: dict[fx.Node, Win | None] = {
            self.input: Win(np.clip(py, 0, h - rh), np.clip(px, 0, w - rw), rh, rw, (h, w))
        }
        self.rule: dict[fx.Node, str] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        # cached activations as rows (one per pixel), where windows are gathered from
        self.rows: dict[fx.Node, torch.Tensor] = {}
        self.base = self._base_pass(images)
        # conv and pool calls that run on windows smaller than their map (0: nothing to gain)
        self.windowed = sum(1 for n, r in self.rule.items() if r == "spatial" and not self.wins[n].whole)  # type: ignore[union-attr]
        last: dict[fx.Node, fx.Node] = {}
        for n in self.rule:
            for a in n.all_input_nodes:
                last[a] = n
        self.free_after: dict[fx.Node, list[fx.Node]] = {}
        for a, n in last.items():
            self.free_after.setdefault(n, []).append(a)
        # gather indices depend on the geometry only: kept in ``cache`` (one model) between calls
        key = ("graph index", tuple(images.shape[1:]), window, tuple(ys), tuple(xs), str(images.device))
        self._index: dict[tuple, torch.Tensor] = cache.setdefault(key, {}) if cache is not None else {}

    def conv_work(self) -> tuple[int, int]:
        """Multiply-adds of the convolutions per occluded image: on their windows, and in full
        (what a whole occluded image costs); their ratio bounds the speed-up of exact
        incremental inference on this model."""
        windows = full = 0
        for node in self.nodes:
            m = self.modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
            shape = self.shapes.get(node)
            if not isinstance(m, nn.Conv2d) or shape is None:
                continue
            per_pixel = m.weight[0].numel() * m.out_channels
            full += per_pixel * shape[2] * shape[3]
            win = self.wins.get(node)
            windows += per_pixel * (win.rh * win.rw if win is not None else shape[2] * shape[3])
        return windows, full

    # -- plan ----------------------------------------------------------------------------------
    def _base_pass(self, x: torch.Tensor) -> dict[fx.Node, Any]:
        """One forward pass of the unoccluded images, planning each node that depends on the
        input as it comes (an in-place op works on a copy, so that each node keeps its own
        value). Returns the values of the nodes no patch changes; the others are kept as rows
        where a window is gathered from them, and dropped after their last reader."""
        env: dict[fx.Node, Any] = {}
        readers = {n: len(n.users) for n in self.nodes}
        for node in self.nodes:
            if node.op == "output":
                self.rule[node], self.wins[node] = "full", None
                break
            env[node] = x if node.op == "placeholder" else self._call(node, env)
            if isinstance(env[node], torch.Tensor):
                self.shapes[node] = tuple(env[node].shape)
            if node is not self.input and any(a in self.wins for a in node.all_input_nodes):
                self.rule[node], self.wins[node] = self._plan(node, env)
            if self.wins.get(node) is not None:
                self.rows[node] = _rows(env[node])
            for a in node.all_input_nodes:
                readers[a] -= 1
                if readers[a] == 0 and a in self.wins:
                    del env[a]
        return {n: v for n, v in env.items() if n not in self.wins}

    def _call(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        if in_place(node, self.modules) and isinstance(env.get(node.args[0]), torch.Tensor):  # type: ignore[arg-type]
            env = {**env, node.args[0]: env[node.args[0]].clone()}  # type: ignore[index]
        return run_node(node, env, self.modules, self.model)

    def _changed(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in self.wins]

    def _plan(self, node: fx.Node, env: dict[fx.Node, Any]) -> tuple[str, Win | None]:
        """How a node that depends on the input runs ("spatial", "pointwise", "merge", "full")
        and its window (None: full); ``env`` holds the values of the base pass so far."""
        changed = self._changed(node)
        ins = [self.wins[a] for a in changed]
        out = env.get(node)
        if node.op == "output" or not isinstance(out, torch.Tensor) or out.dim() != 4 or any(w is None for w in ins):
            return "full", None
        hw = (out.shape[2], out.shape[3])
        m = self.modules.get(node.target) if node.op == "call_module" else None  # type: ignore[arg-type]
        sp = _spatial(m) if m is not None else None
        if sp is not None and len(node.all_input_nodes) == 1:
            w = ins[0]
            oy, rh = _out_range(w.oy, w.rh, w.hw[0], hw[0], sp.kernel[0], sp.stride[0], sp.pad[0], sp.dilation[0])
            ox, rw = _out_range(w.ox, w.rw, w.hw[1], hw[1], sp.kernel[1], sp.stride[1], sp.pad[1], sp.dilation[1])
            return "spatial", Win(oy, ox, rh, rw, hw)
        if any(w.hw != hw for w in ins) or not self._constants_per_channel(node, changed, env):  # type: ignore[union-attr]
            return "full", None
        if len(changed) == 1 and ((m is not None and is_elementwise(m)) or _name(node) in _POINTWISE | _ARITHMETIC):
            return "pointwise", ins[0]
        if len(changed) > 1 and _name(node) in _MERGE and self._merge_ok(node):
            return "merge", _union(ins)  # type: ignore[arg-type]
        return "full", None

    def _constants_per_channel(self, node: fx.Node, changed: list[fx.Node], env: dict[fx.Node, Any]) -> bool:
        """Whether every other tensor operand is the same at every pixel (a number, a per-channel
        vector), so the op can run on a window."""
        for a in node.all_input_nodes:
            v = env.get(a)
            if a in changed or not isinstance(v, torch.Tensor) or v.numel() == 1:
                continue
            if v.dim() < 3 or v.shape[-2:].numel() > 1:
                return False
        return True

    def _merge_ok(self, node: fx.Node) -> bool:
        if _name(node) != "cat":
            return True
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        return dim in (1, -3)

    # -- gathering -----------------------------------------------------------------------------
    def _region(
        self, node: fx.Node, rep: Any, items: tuple[int, int], box: tuple, pad: float, key: tuple
    ) -> torch.Tensor:
        """The node's value on a box of rows/cols ``(ry (B,), rx (B,), RH, RW)`` per item, as a
        channels-last (B, C, RH, RW) batch; outside the map: ``pad``."""
        start, stop = items
        lo = start // self.P
        ry, rx, big_h, big_w = box
        h, w = self.shapes[node][2:]
        b = stop - start
        hw = h * w
        if isinstance(rep, tuple):  # (window values, Win)
            vals, win = rep
            cached = self.rows[node][lo * hw : ((stop - 1) // self.P + 1) * hw]
            win_rows = _rows(vals)
        else:  # full values of every item
            vals, win, cached, win_rows = rep, None, _rows(rep), None
        ikey = (node.name, key, start % self.P, b)
        index = self._index.get(ikey)
        if index is None:
            index = self._index[ikey] = self._build_index(items, box, (h, w), win, win is None)
        parts = [cached.new_full((1, cached.shape[1]), pad), cached] + ([win_rows] if win_rows is not None else [])
        src = torch.cat(parts)
        return src.index_select(0, index.view(-1)).view(b, big_h, big_w, -1).permute(0, 3, 1, 2)

    def _build_index(
        self, items: tuple[int, int], box: tuple, hw: tuple[int, int], win: Win | None, per_item: bool
    ) -> torch.Tensor:
        start, stop = items
        dev = self.device
        it = torch.arange(start, stop, device=dev)
        img, pos = it // self.P, it % self.P
        ry, rx, big_h, big_w = box
        h, w = hw
        yy = torch.as_tensor(ry, device=dev).view(-1, 1, 1) + torch.arange(big_h, device=dev).view(1, -1, 1)
        xx = torch.as_tensor(rx, device=dev).view(-1, 1, 1) + torch.arange(big_w, device=dev).view(1, 1, -1)
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        owner = torch.arange(len(it), device=dev) if per_item else img - start // self.P
        index = torch.where(inside, 1 + owner.view(-1, 1, 1) * h * w + yy * w + xx, 0)
        if win is not None:
            n_cached = ((stop - 1) // self.P + 1 - start // self.P) * h * w
            wy = torch.as_tensor(win.oy, device=dev)[pos].view(-1, 1, 1)
            wx = torch.as_tensor(win.ox, device=dev)[pos].view(-1, 1, 1)
            u, v = yy - wy, xx - wx
            inwin = (u >= 0) & (u < win.rh) & (v >= 0) & (v < win.rw)
            b = torch.arange(len(it), device=dev).view(-1, 1, 1)
            index = torch.where(inwin, 1 + n_cached + b * win.rh * win.rw + u * win.rw + v, index)
        return index

    def _full(self, node: fx.Node, rep: Any, items: tuple[int, int]) -> torch.Tensor:
        if not isinstance(rep, tuple):
            return rep
        h, w = self.shapes[node][2:]
        b = items[1] - items[0]
        zeros = np.zeros(b, np.int64)
        return self._region(node, rep, items, (zeros, zeros, h, w), 0.0, "full").contiguous()

    # -- evaluation ----------------------------------------------------------------------------
    def _input(self, items: tuple[int, int]) -> tuple[torch.Tensor, Win]:
        """The occluded input on its window: cached pixels, the patch's fill where it lies."""
        win = self.wins[self.input]
        pos = np.arange(*items) % self.P
        box = (win.oy[pos], win.ox[pos], win.rh, win.rw)
        region = self._region_of_images(items, box)
        py, px, k = self.patch
        dev = self.device
        u = torch.as_tensor(win.oy[pos] - py[pos], device=dev).view(-1, 1, 1) + torch.arange(win.rh, device=dev).view(
            1, -1, 1
        )
        v = torch.as_tensor(win.ox[pos] - px[pos], device=dev).view(-1, 1, 1) + torch.arange(win.rw, device=dev).view(
            1, 1, -1
        )
        covered = ((u >= 0) & (u < k) & (v >= 0) & (v < k)).unsqueeze(1)
        return torch.where(covered, self.fill, region), win

    def _region_of_images(self, items: tuple[int, int], box: tuple) -> torch.Tensor:
        img = torch.arange(*items, device=self.device) // self.P
        ry, rx, rh, rw = box
        yy = torch.as_tensor(ry, device=self.device).view(-1, 1) + torch.arange(rh, device=self.device)
        xx = torch.as_tensor(rx, device=self.device).view(-1, 1) + torch.arange(rw, device=self.device)
        x = self.images[img]  # (B, C, H, W)
        x = x.gather(2, yy.view(len(img), 1, rh, 1).expand(-1, x.shape[1], -1, x.shape[3]))
        return x.gather(3, xx.view(len(img), 1, 1, rw).expand(-1, x.shape[1], rh, -1))

    def _spatial_step(self, node: fx.Node, rep: Any, items: tuple[int, int]) -> Any:
        (src,) = node.all_input_nodes
        m = self.modules[node.target]  # type: ignore[index]
        if not isinstance(rep, tuple):
            return m(rep)
        sp = _spatial(m)
        out = self.wins[node]
        pos = np.arange(*items) % self.P
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = sp.kernel, sp.stride, sp.pad, sp.dilation  # type: ignore[union-attr]
        box = (
            out.oy[pos] * sh - ph,  # type: ignore[union-attr]
            out.ox[pos] * sw - pw,  # type: ignore[union-attr]
            (out.rh - 1) * sh + dh * (kh - 1) + 1,  # type: ignore[union-attr]
            (out.rw - 1) * sw + dw * (kw - 1) + 1,  # type: ignore[union-attr]
        )
        y = sp.op(self._region(src, rep, items, box, sp.pad_value, ("spatial", node.name)))  # type: ignore[union-attr]
        return y if out.whole else (y, out)  # type: ignore[union-attr]

    def _merge_step(self, node: fx.Node, env: dict, items: tuple[int, int]) -> Any:
        out = self.wins[node]
        pos = np.arange(*items) % self.P
        box = (out.oy[pos], out.ox[pos], out.rh, out.rw)  # type: ignore[union-attr]
        local = dict(env)
        for k, a in enumerate(self._changed(node)):
            local[a] = self._region(a, env[a], items, box, 0.0, ("merge", node.name, k))
        y = run_node(node, local, self.modules, self.model)
        return y if out.whole else (y, out)  # type: ignore[union-attr]

    def _step(self, node: fx.Node, env: dict, items: tuple[int, int]) -> Any:
        rule = self.rule[node]
        if rule == "spatial":
            return self._spatial_step(node, env[node.all_input_nodes[0]], items)
        if rule == "merge":
            return self._merge_step(node, env, items)
        if rule == "pointwise":
            (a,) = self._changed(node)
            if isinstance(env[a], tuple):
                vals, win = env[a]
                return self._call(node, {**env, a: vals}), win
            return self._call(node, env)
        local = {**env, **{a: self._full(a, env[a], items) for a in self._changed(node)}}
        return self._call(node, local)

    @torch.no_grad()
    def run(self, chunk: int) -> torch.Tensor:
        """Logits of every item (image-major), (images * positions, classes)."""
        from .incremental import chunks

        outs = []
        for items in chunks(self.n_images * self.P, self.P, chunk):
            env: dict[fx.Node, Any] = dict(self.base)
            env[self.input] = self._input(items)
            for node in self.rule:
                if node.op == "output":
                    (a,) = node.all_input_nodes
                    outs.append(self._full(a, env[a], items))
                    break
                env[node] = self._step(node, env, items)
                for a in self.free_after.get(node, ()):
                    if a in self.wins:
                        env.pop(a, None)
        return torch.cat(outs)
