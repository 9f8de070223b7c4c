"""Re-run only what an edit changes: the graph of any traceable model, split at edited calls.

Ablating a filter edits one tensor in the middle of the network (a conv call's output channel,
after its batch norm); everything that does not depend on that tensor -- the layers before it,
and in a residual network the shortcut beside it -- is the same for every filter. ::

    r = reuse_graph(model, ["layer2.0.bn1"])       # or a string saying why it cannot
    cut = r.cut(x)                                 # one pass: what the edit does not change
    logits = r.replay(cut, edit, copies=k)         # (k * N, classes): k variants of x, where
                                                   # edit(call, value) edits the call's value
                                                   # (k * N rows, variant-major)

The model is traced symbolically (``torch.fx``) with the edited modules kept as single calls; a
call name ``name@k`` (``trace.call_name``) is the k-th call of that module in the traced graph,
as in :mod:`convlens.models.graph`. :meth:`Reuse.cut` runs, once per batch, only the nodes that
do not depend on an edited call and that something downstream of it reads (the *frontier*),
keeping their values; :meth:`Reuse.replay` runs only the nodes that depend on an edit, from the
edited values and the frontier (an edited call downstream of another one, as the second call of
a reused conv, is computed, then edited), ``copies`` variants at once: frontier tensors whose first
dimension is the batch are repeated along it (a value such as ``x.size(0)`` read beside the edit
makes the graph replay one variant at a time, :attr:`Cut.batchable`). Intermediate values are
dropped after their last reader. The caller's model is not changed: the graph calls its modules.

A model that ``torch.fx`` cannot trace (control flow on tensor values) gets a reason instead of a
:class:`Reuse`; callers fall back to full forward passes and say so.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx
from torch import nn

from ..trace import split_call

__all__ = ["Cut", "Reuse", "in_place", "reuse_graph", "run_node", "trace_fx"]

Edit = Callable[[str, torch.Tensor], torch.Tensor]  # (call name, its value) -> the value to use
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.iand, operator.ior}


class _Tracer(fx.Tracer):
    """The default tracer, with the given modules kept whole (one node per call)."""

    def __init__(self, leaves: Iterable[str]):
        super().__init__()
        self.keep = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.keep or super().is_leaf_module(m, qualname)


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trace_fx(model: nn.Module, leaves: Iterable[str] = ()) -> fx.Graph | str:
    """The ``torch.fx`` graph of ``model`` (``leaves``: modules kept as single calls), cached while
    the module structure and train/eval flags are unchanged; a string saying why when it cannot
    be traced."""
    keep = frozenset(leaves)
    # a forward() may branch on self.training (F.dropout(x, training=self.training)): traced as it is now
    sig = tuple((n, type(m), m.training) for n, m in model.named_modules())
    cached = _TRACED.get(model)
    if cached is not None and cached[0] == sig and keep in cached[1]:
        return cached[1][keep]
    try:
        graph: fx.Graph | str = _Tracer(keep).trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: not traceable
        graph = f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    if cached is None or cached[0] != sig:
        cached = (sig, {})
        _TRACED[model] = cached
    cached[1][keep] = graph
    return graph


def _attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def run_node(node: fx.Node, env: dict[fx.Node, Any], modules: dict[str, nn.Module], model: nn.Module) -> Any:
    args = fx.node.map_arg(node.args, lambda n: env[n])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)  # type: ignore[index]
    if node.op == "call_function":
        return node.target(*args, **kwargs)  # type: ignore[operator]
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)  # type: ignore[arg-type]
    if node.op == "get_attr":
        return _attr(model, node.target)  # type: ignore[arg-type]
    raise ValueError(f"cannot run a {node.op!r} node")


def in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the node may write into its first argument."""
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace"))
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("_")
    if node.op == "call_module":
        return bool(getattr(modules.get(node.target), "inplace", False))  # type: ignore[arg-type]
    return False


@dataclass
class Cut:
    """One batch's values of the frontier and of the edited calls (before any edit)."""

    frontier: dict[fx.Node, Any]
    edited: dict[str, torch.Tensor]
    batch: int
    batchable: bool  # no frontier value is a batch size (variants can share one replay)


class Reuse:
    """A model's traced graph split at edited calls (see the module docstring)."""

    def __init__(self, model: nn.Module, graph: fx.Graph, calls: list[str]):
        self.model, self.graph, self.calls = model, graph, list(calls)
        self.modules = dict(model.named_modules())
        nodes = list(graph.nodes)
        self.edits = {call: _find_call(nodes, call) for call in self.calls}
        self.call_of = {n: call for call, n in self.edits.items()}
        dependent: set[fx.Node] = set()
        for node in nodes:  # topological order: a node depends on an edit when an input does
            if any(a in self.call_of or a in dependent for a in node.all_input_nodes):
                dependent.add(node)
        # edited calls that no other edit changes start the replay from their cut value
        self.sources = {call: n for call, n in self.edits.items() if n not in dependent}
        starts = set(self.sources.values())
        self.replayed = [n for n in nodes if n in dependent]
        self.frontier = list(
            dict.fromkeys(a for n in self.replayed for a in n.all_input_nodes if a not in dependent | starts)
        )
        self.output = next(n for n in nodes if n.op == "output")
        if self.output not in dependent:
            raise ValueError(f"the model's output does not depend on {', '.join(self.calls)}")
        # what the cut pass must run: the ancestors of the frontier and of the edited calls, and
        # any op that writes into one of their values in place (it changes what later ops read)
        writers = [n for n in nodes if n not in dependent and n.all_input_nodes and in_place(n, self.modules)]
        needed: set[fx.Node] = set()
        todo = list(self.frontier) + list(starts)
        while todo:
            while todo:
                n = todo.pop()
                if n not in needed:
                    needed.add(n)
                    todo.extend(n.all_input_nodes)
            todo = [w for w in writers if w not in needed and w.all_input_nodes[0] in needed]
        _check_writes(nodes, dependent, [w for w in writers if w.all_input_nodes[0] in set(self.frontier)])
        self.prefix = [n for n in nodes if n in needed]
        self._prefix_set = needed
        self.order = [n for n in nodes if n in needed or n in dependent]
        # a frontier value that a replayed node may overwrite is copied for each replay
        self.written = {n.all_input_nodes[0] for n in self.replayed if n.all_input_nodes and in_place(n, self.modules)}
        last: dict[fx.Node, fx.Node] = {}
        for n in self.replayed:
            for a in n.all_input_nodes:
                last[a] = n
        self.free_after: dict[fx.Node, list[fx.Node]] = {}
        for a, n in last.items():
            self.free_after.setdefault(n, []).append(a)

    def cut(self, x: torch.Tensor) -> Cut:
        """Run, for the batch ``x``, what no edit changes; keep the frontier and edited values.

        Each frontier value is taken where the first node that reads it would run (copied if a
        later node of the cut pass writes into it), so it is what that node read in the model's
        own forward pass."""
        env: dict[fx.Node, Any] = {}
        users = {n: len([u for u in n.users if u in self._prefix_set]) for n in self.prefix}
        keep = set(self.frontier) | set(self.sources.values())
        frontier: dict[fx.Node, Any] = {}
        for node in self.order:
            if node not in self._prefix_set:  # replayed later: take what it reads now
                for a in node.all_input_nodes:
                    if a in keep and a not in frontier and a not in self.sources.values():
                        v = env[a]
                        frontier[a] = v.clone() if isinstance(v, torch.Tensor) and self._overwritten_later(a) else v
                continue
            env[node] = x if node.op == "placeholder" else run_node(node, env, self.modules, self.model)
            for a in node.all_input_nodes:
                users[a] -= 1
                if users[a] == 0 and a not in keep:
                    del env[a]
        b = x.shape[0]
        batchable = not any(_mentions_batch(v, b) for v in frontier.values())
        return Cut({n: frontier[n] for n in self.frontier}, {c: env[n] for c, n in self.sources.items()}, b, batchable)

    def _overwritten_later(self, node: fx.Node) -> bool:
        """Whether a node of the cut pass writes into ``node``'s value after producing it."""
        return any(u in self._prefix_set and in_place(u, self.modules) and u.args[0] is node for u in node.users)

    def replay(self, cut: Cut, edit: Edit, copies: int = 1) -> Any:
        """The model's output for ``copies`` variants of the cut's batch (variant-major along the
        batch dimension), each edited call's value (``copies * N`` rows, a fresh tensor) replaced
        by ``edit(call, value)``."""
        if copies > 1 and not cut.batchable:
            raise ValueError("this graph reads the batch size beside the edit; replay one variant at a time")
        env: dict[fx.Node, Any] = {}
        for n, v in cut.frontier.items():
            env[n] = _copies(v, copies, cut.batch, n in self.written)
        for call, node in self.sources.items():
            env[node] = edit(call, _copies(cut.edited[call], copies, cut.batch, True))
        for node in self.replayed:
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: env[n])
            env[node] = run_node(node, env, self.modules, self.model)
            if node in self.call_of:
                env[node] = edit(self.call_of[node], env[node])
            for a in self.free_after.get(node, ()):
                env.pop(a, None)
        raise ValueError("the graph has no output")


def _copies(v: Any, copies: int, batch: int, fresh: bool) -> Any:
    """``copies`` copies of a batch value along its first dimension (a copy of it if ``fresh``)."""
    if not isinstance(v, torch.Tensor):
        return v
    if copies > 1 and v.dim() > 0 and v.shape[0] == batch:
        return v.repeat(copies, *([1] * (v.dim() - 1)))
    return v.clone() if fresh else v


def _check_writes(nodes: list[fx.Node], dependent: set[fx.Node], writers: list[fx.Node]) -> None:
    """A ValueError when an op outside the edit's part writes in place into a value that the
    edit's part reads both before and after the write (one kept value cannot be both)."""
    where = {n: i for i, n in enumerate(nodes)}
    for w in writers:
        a = w.all_input_nodes[0]
        reads = [where[n] for n in a.users if n in dependent]
        if reads and min(reads) < where[w] < max(reads):
            raise ValueError(f"{w.name} writes in place into {a.name} between two reads of it after the edit")


def _mentions_batch(v: Any, b: int) -> bool:
    """Whether a non-tensor value could be the batch size (an int, or a size that starts with it)."""
    if isinstance(v, bool) or isinstance(v, torch.Tensor):
        return False
    if isinstance(v, int):
        return v == b
    if isinstance(v, (tuple, list)):
        return any(_mentions_batch(e, b) for e in v)
    return False


def _find_call(nodes: list[fx.Node], call: str) -> fx.Node:
    module, k = split_call(call)
    found = [n for n in nodes if n.op == "call_module" and n.target == module]
    if len(found) < k:
        raise ValueError(f"the traced graph calls {module!r} {len(found)} time(s), so it has no call {call!r}")
    return found[k - 1]


def reuse_graph(model: nn.Module, calls: list[str]) -> Reuse | str:
    """The model's graph split at ``calls`` (module call names), or why it cannot be."""
    graph = trace_fx(model, {split_call(c)[0] for c in calls})
    if isinstance(graph, str):
        return graph
    try:
        return Reuse(model, graph, calls)
    except ValueError as exc:
        return str(exc)
