"""ablate: silence filters and measure what the network loses (the CS7015 report's Part 2.2.2).

Set mode: zero a set of filters, evaluate, restore the exact weights. ``mode: channel`` (the
default) zeroes a filter's whole outgoing effect (conv weight and bias, and the weight and bias of
the batch norm that follows, so the channel is really silent rather than a constant); ``mode:
weights`` zeroes the conv weights only, as the CS7015 report did (the channel then carries its
bias, normalised by the batch norm, everywhere). Outputs per-class accuracy and confusion matrices before,
after and their difference, and the images whose prediction changed.

Rank mode: silence each filter of a layer alone and rank filters by the accuracy they carry. Its
evaluations are batched: per data batch, the activations up to the silenced layer are computed
once; for the last conv layer all filters are then evaluated together through the linear layer
that follows, elsewhere only the rest of the network runs again per filter. Setting the channel
after the batch norm to what a silenced filter leaves there (0; in weights mode its bias through
the batch norm) is exactly what zeroing the weights does (the test suite checks they agree).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..jobs import filter_spec
from ..utils import to_numpy
from ..train.evaluate import summarize_predictions
from ..models.graph import known_shape, trace_graph
from ..trace import Trace, call_name, check_filter, get_layer, run_from, split_call
from .options import AblateOptions
from .base import (
    ACTIVATIONS,
    AnalysisError,
    Analysis,
    Figures,
    Subject,
    block,
    keeps_constants,
    per_class,
    register,
    require_conv,
    resolve_layers,
)


def parse_filters(spec: str | dict[str, list[int]] | None) -> dict[str, list[int]] | None:
    """``"conv1:0,1 conv3:5,7-9"`` (layers separated by spaces or ``;``) -> ``{"conv1": [0, 1], ...}``:
    the shared ``--filters`` syntax (:func:`convlens.jobs.filter_spec`), with every layer named."""
    parsed = filter_spec(spec)
    if isinstance(parsed, list):
        raise AnalysisError(f"ablate: cannot read filters {spec!r} without layers; write LAYER:I,J, e.g. conv2:0,3")
    return parsed


def _check(model: nn.Module, filters: dict[str, list[int]]) -> None:
    if not filters:
        raise AnalysisError("ablate: no filters given; write e.g. conv2:0,3")
    for layer, idx in filters.items():
        require_conv(model, layer, "ablate")
        for i in idx:
            check_filter(model, layer, i)


MODES = ("channel", "weights")
MODE_WORDS = {"channel": "channels silenced (conv and batch norm zeroed)", "weights": "conv weights zeroed"}


@contextlib.contextmanager
def silenced(model: nn.Module, filters: dict[str, list[int]], mode: str = "channel") -> Iterator[nn.Module]:
    """Zero the filters inside; the exact weights are back afterwards, whatever happens.

    ``mode="channel"``: for each conv filter, its weights and bias, and in the batch norm that
    follows, its weight and bias (its running mean when the norm has no affine part), so the
    channel outputs exactly 0. ``mode="weights"``: the conv filter's weights only.
    """
    if mode not in MODES:
        raise AnalysisError(f"ablate: mode={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    _check(model, filters)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, idx in filters.items():
                conv = get_layer(model, layer)
                tensors = [conv.weight, conv.bias] if mode == "channel" else [conv.weight]
                bn_name = block(model, layer).bn
                if bn_name and mode == "channel":
                    bn = get_layer(model, bn_name)
                    tensors += [bn.weight, bn.bias] if bn.affine else [bn.running_mean]
                for t in tensors:
                    if t is not None:
                        saved.append((t, t.detach().clone()))
                        t[idx] = 0
        yield model
    finally:
        with torch.no_grad():
            for t, copy in reversed(saved):
                t.copy_(copy)


CHANNELWISE = ACTIVATIONS + (nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


def mixing_after(model: nn.Module, point: str) -> tuple[str, str] | None:
    """``(last, mix)`` when every layer between ``point`` and the next layer that mixes channels
    (a linear layer, or a plain conv) treats each channel on its own (activations, batch norm,
    pools, dropout in eval mode, global pooling, a channel-major flatten before a linear layer):
    ``last`` is the last of those (or ``point``). Otherwise ``None``."""
    names = list(model._modules)
    last, flattened = point, False
    for name in names[names.index(point) + 1 :]:
        m = model._modules[name]
        if isinstance(m, nn.Linear) or (
            isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and not flattened
        ):
            return last, name
        flat = isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
        if not (flat or isinstance(m, CHANNELWISE) or type(m).__name__ == "GlobalPool"):
            return None
        flattened = flattened or flat
        last = name
    return None


def silent_value(model: nn.Module, layer: str, mode: str = "channel") -> torch.Tensor:
    """Per channel, the value a silenced filter leaves where ablation masks it (``block.pre``).

    0 in channel mode; in weights mode the conv outputs its bias everywhere, which the batch norm
    that follows (in eval mode) maps to ``weight * (bias - running_mean) / sqrt(running_var + eps)
    + bias_bn``.
    """
    conv = get_layer(model, layer)
    value = torch.zeros(conv.out_channels, device=conv.weight.device)
    if mode == "channel":
        return value
    with torch.no_grad():
        if conv.bias is not None:
            value = conv.bias.detach().float().clone()
        bn_name = block(model, layer).bn
        if bn_name:
            bn = get_layer(model, bn_name)
            if bn.running_mean is not None:
                value = (value - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
            else:  # normalised by batch statistics: a constant map becomes 0
                value = torch.zeros_like(value)
            if bn.affine:
                value = value * bn.weight + bn.bias
    return value


def _through_mixing(
    model: nn.Module, point: str, last: str, mix: str, h: torch.Tensor, fill: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor]]:
    """Logits of every variant (row 0: nothing silenced, row f + 1: filter f) of a batch whose
    activation at ``point`` is ``h``, in chunks ``(first row, logits (rows, B, classes))``.

    Up to the mixing layer each channel travels alone, so silencing channel f changes that
    layer's input only in channel f, and (the layer being linear) its output by the layer applied
    to that change alone: one cheap product per filter, for all filters of a chunk at once,
    instead of everything from the silenced layer on.
    """
    m = model._modules[mix]
    run = (lambda v: run_from(model, point, v, until=last)) if last != point else (lambda v: v)
    z = run(h)
    b, c = h.shape[:2]
    silent = fill.to(h.dtype).view(1, -1, *([1] * (h.dim() - 2))).expand_as(h[:1]).contiguous()
    delta = run(silent) - z  # a silenced channel's value there, minus the actual one
    if isinstance(m, nn.Linear):
        y0 = m(z.reshape(b, -1))
        w, d = m.weight.view(m.out_features, c, -1), delta.reshape(b, c, -1)

        def shift(c0: int, c1: int) -> torch.Tensor:  # (filters, B, out)
            return torch.einsum("bcs,ocs->cbo", d[:, c0:c1], w[:, c0:c1])
    else:
        y0 = m(z)

        def shift(c0: int, c1: int) -> torch.Tensor:  # (filters, B, out, H, W): a grouped conv, one group per filter
            n, o = c1 - c0, m.out_channels
            wt = m.weight[:, c0:c1].transpose(0, 1).reshape(n * o, 1, *m.kernel_size)
            out = F.conv2d(delta[:, c0:c1], wt, None, m.stride, m.padding, m.dilation, groups=n)
            return out.view(b, n, o, *out.shape[2:]).transpose(0, 1)

    yield 0, run_from(model, mix, y0).unsqueeze(0)
    fmt = torch.channels_last if y0.dim() == 4 else torch.contiguous_format
    step = max(1, (1 << 22) // y0.numel())  # about 16 MB of shifted outputs at a time
    for c0 in range(0, c, step):
        y = (y0 + shift(c0, min(c, c0 + step))).flatten(0, 1).contiguous(memory_format=fmt)
        logits = run_from(model, mix, y)
        yield c0 + 1, logits.view(-1, b, logits.shape[-1])


def silence_points(model: nn.Module, layer: str, mode: str = "channel") -> dict[str, torch.Tensor]:
    """Per call of the conv ``layer``, the call whose output a silenced filter changes and, per
    channel, the value it then holds there: the batch norm that follows that call when it is
    the block's (``silent_value``), else the conv call itself (0 in channel mode; in weights
    mode its bias). A conv that ``forward()`` calls twice is silenced in both calls, as zeroing
    its weights does."""
    point = block(model, layer).pre
    shape = known_shape(model)
    if shape is None:
        return {point: silent_value(model, layer, mode)}
    graph = trace_graph(model, shape)
    modules = dict(model.named_modules())
    kind = lambda call: modules.get(split_call(call)[0]) if call else None  # noqa: E731
    bn = split_call(block(model, layer).bn or "")[0]
    conv = get_layer(model, layer)
    own = torch.zeros(conv.out_channels, device=conv.weight.device)
    if mode == "weights" and conv.bias is not None:
        own = conv.bias.detach().float().clone()
    points: dict[str, torch.Tensor] = {}
    for k in range(1, graph.calls.get(split_call(layer)[0], 1) + 1):
        call = call_name(split_call(layer)[0], k)
        nxt = graph.next_leaf(call)
        while nxt is not None and keeps_constants(kind(nxt)):  # type: ignore[arg-type]
            nxt = graph.next_leaf(nxt)
        if nxt is not None and bn and split_call(nxt)[0] == bn:
            points[nxt] = silent_value(model, layer, mode)
        else:
            points[call] = own
    return points


# elements of one edited tensor (all variants of a batch) replayed at once, about 4 MB: larger
# replays fall out of the CPU's caches (ResNet-8, one thread: 16 MB cost 1.3x, 64 MB 4x the time)
REPLAY_ELEMENTS = 1 << 20


def _replay_filters(
    reuse: Any, x: torch.Tensor, points: dict[str, torch.Tensor], n_filters: int, score: Callable
) -> None:
    """Score every variant of batch ``x`` (0: nothing silenced, f + 1: filter f) through the
    reused graph: the part no silencing changes runs once, the rest once per chunk of variants,
    the variants stacked along the batch dimension."""
    cut = reuse.cut(x)
    per_variant = max(v.numel() for v in cut.edited.values()) if cut.edited else x.numel()
    step = max(1, min(n_filters + 1, REPLAY_ELEMENTS // max(per_variant, 1))) if cut.batchable else 1
    fills = {call: v.to(x.device) for call, v in points.items()}
    for v0 in range(0, n_filters + 1, step):
        v1 = min(n_filters + 1, v0 + step)
        rows = torch.arange(v1 - v0, device=x.device)
        silenced_rows = rows[v0 + rows > 0]
        filt = v0 + silenced_rows - 1

        def edit(call: str, value: torch.Tensor) -> torch.Tensor:
            view = value.unflatten(0, (v1 - v0, -1))
            view[silenced_rows, :, filt] = fills[call][filt].to(value.dtype).view(-1, *([1] * (view.dim() - 2)))
            return value

        logits = reuse.replay(cut, edit, copies=v1 - v0)
        if not isinstance(logits, torch.Tensor) or logits.shape[0] != (v1 - v0) * len(x):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise AnalysisError(
                f"ablate: replaying {v1 - v0} variants of a batch of {len(x)} gave output {got}, not "
                f"{(v1 - v0) * len(x)} rows of logits; the model's forward() fixes its batch size"
            )
        score(v0, logits.view(v1 - v0, len(x), -1))


def _full_passes(model: nn.Module, x: torch.Tensor, layer: str, mode: str, n_filters: int, score: Callable) -> None:
    """Score every variant of batch ``x`` by a full forward pass with the filter's weights zeroed."""
    score(0, model(x).unsqueeze(0))
    for f in range(n_filters):
        with silenced(model, {layer: [f]}, mode):
            score(f + 1, model(x).unsqueeze(0))


def _flat_filters(model: nn.Module, x: torch.Tensor, point: str, fill: torch.Tensor, via: Any, score: Callable) -> None:
    """Score every variant of batch ``x`` on a flat sequential net: the layers up to ``point`` run
    once; then the filters' effects are added at the next mixing layer (``via``), or the rest of
    the network runs per filter with its channel of the cached activation set to ``fill``."""
    with Trace(model, point, stop=True) as t:
        model(x)
    h = t.output
    if via:
        for row, logits in _through_mixing(model, point, *via, h, fill):
            score(row, logits)
        return
    names = list(model._modules)
    after = names[names.index(point) + 1] if names.index(point) + 1 < len(names) else None
    # an in-place first layer after the point would overwrite the cached activation
    shield = after is not None and getattr(model._modules[after], "inplace", False)
    score(0, run_from(model, point, h.clone() if shield else h).unsqueeze(0))
    for f in range(h.shape[1]):
        saved = h[:, f].clone()
        h[:, f] = fill[f]
        score(f + 1, run_from(model, point, h.clone() if shield else h).unsqueeze(0))
        h[:, f] = saved


def rank_layer(subject: Subject, layer: str, mode: str = "channel") -> dict[str, Any]:
    """Accuracy with each filter of ``layer`` silenced alone (and with none: the baseline).

    Per data batch the network runs once up to the silencing point. On a flat sequential net,
    when only channel-wise layers separate it from the next linear or conv layer (every flat
    preset), the filters' effects are then added at that layer's output (see
    :func:`_through_mixing`) and only the layers after it run per filter. On any other graph
    (residual blocks, a conv called twice, activations written as functions) the traced graph
    is split at the silenced calls (:mod:`convlens.models.reuse`): what no filter changes (the
    layers before, the shortcut beside) runs once per batch, and only the nodes that depend on
    the silenced channel run again, for many filters at once stacked along the batch. A model
    that ``torch.fx`` cannot trace is ranked by full forward passes with the weights zeroed,
    and ``method`` says why.
    """
    from ..models.reuse import reuse_graph

    model = subject.model
    conv = require_conv(model, layer, "ablate")
    point = block(model, layer).pre  # where the channel is masked: after the batch norm, if any
    fill = silent_value(model, layer, mode)  # what a silenced channel holds there
    n_filters, n_classes = conv.out_channels, len(subject.classes)
    correct = torch.zeros(n_filters + 1, n_classes, dtype=torch.long)  # row 0: nothing silenced
    changed = torch.zeros(n_filters + 1, dtype=torch.long)  # images whose prediction it changes
    totals = torch.zeros(n_classes, dtype=torch.long)
    reused = _runs_more_than_once(model, layer, point)
    flat = not reused and isinstance(model, nn.Sequential) and point in model._modules
    via = mixing_after(model, point) if flat else None
    points = reuse = None
    if not flat:
        points = silence_points(model, layer, mode)
        reuse = reuse_graph(model, list(points))
    t0 = time.perf_counter()
    for x, labels, _ in subject.batches(f"ablate {layer}"):
        labels_cpu = labels.cpu()
        totals += torch.bincount(labels_cpu, minlength=n_classes)
        base: list[torch.Tensor] = [labels]

        def score(row: int, logits: torch.Tensor) -> None:  # logits (rows, B, classes); row 0 comes first
            pred = logits.argmax(-1)
            if row == 0:
                base[0] = pred[0]
            correct[row : row + len(pred)].index_add_(1, labels_cpu, (pred == labels).long().cpu())
            changed[row : row + len(pred)] += (pred != base[0]).sum(1).cpu()

        if flat:
            _flat_filters(model, x, point, fill, via, score)
        elif isinstance(reuse, str):  # not traceable: one full pass per filter
            _full_passes(model, x, layer, mode, n_filters, score)
        else:
            _replay_filters(reuse, x, points, n_filters, score)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    if flat:
        method = f"effects added at {via[1]}" if via else "rest of the network per filter"
    elif isinstance(reuse, str):
        method = f"full forward pass per filter, weights zeroed ({reuse})"
    else:
        method = f"graph reuse: {len(reuse.replayed)} of {len(reuse.graph.nodes)} nodes re-run per filter"
    n = max(int(totals.sum()), 1)
    acc = correct.sum(1).double() / n
    class_acc = correct.double() / totals.clamp(min=1).double()
    drop = acc[0] - acc[1:]
    # by accuracy carried, then by how many predictions it changes: a dead filter (changes none)
    # never ties ahead of one that matters
    key = drop.double() * (n + 1) + changed[1:].double() / (n + 1)
    order = torch.argsort(key, descending=True, stable=True)
    return {
        "mode": mode,
        "silenced_at": point,
        "method": method,
        "baseline": float(acc[0]),
        "accuracy": acc[1:].tolist(),
        "drop": drop.tolist(),
        "per_class_drop": [per_class(row, totals) for row in (class_acc[0] - class_acc[1:])],
        "order": order.tolist(),
        "changed": changed[1:].tolist(),
        "seconds": round(seconds, 3),
        "seconds_per_filter": round(seconds / n_filters, 4),
    }


def _runs_more_than_once(model: nn.Module, layer: str, point: str) -> bool:
    """Whether ``forward()`` calls the conv or its batch norm more than once (traced; a shared
    conv's silenced filter is silent in every call, which masking one call cannot reproduce)."""
    shape = known_shape(model)
    if shape is None:
        return False
    calls = trace_graph(model, shape).calls
    return any(calls.get(split_call(n)[0], 1) > 1 for n in (layer, point))


def _most_accuracy(layer: str, r: dict[str, Any], top: int) -> tuple[dict[str, list[int]], str]:
    """The ``top`` filters of a ranking that carry most accuracy, skipping dead ones (whose
    silencing changes no prediction), and how they were chosen."""
    live = [f for f in r["order"] if r["changed"][f] > 0]
    dead = [f for f in r["order"] if r["changed"][f] == 0]
    if not live:
        return {layer: sorted(r["order"][:top])}, (
            f"the first {top} filters of {layer}: silencing any one alone changes no prediction"
        )
    chosen = live[:top]
    words = f"the {len(chosen)} filters of {layer} carrying most accuracy"
    if dead:
        shown = ", ".join(map(str, sorted(dead)[:8])) + (", ..." if len(dead) > 8 else "")
        words += f"; {len(dead)} dead filters skipped (silencing one alone changes no prediction: {shown})"
    return {layer: sorted(chosen)}, words


def _what(filters: dict[str, list[int]], mode: str) -> str:
    spec = " ".join(f"{k}:{','.join(map(str, v))}" for k, v in filters.items())
    return f"{spec} ({MODE_WORDS[mode]})"


def _logits(subject: Subject) -> torch.Tensor:
    out = [subject.model(x).float().cpu() for x, _, _ in subject.batches("evaluate")]
    return torch.cat(out) if out else torch.zeros(0, len(subject.classes))


@register
class Ablate(Analysis, AblateOptions):
    """Silence filters: per-class accuracy and confusion before/after; rank filters one by one."""

    name = "ablate"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.filters = filter_spec(self.filters)
        if isinstance(self.filters, list):  # indices of the given layers
            if not self.layers:
                raise AnalysisError(
                    f"ablate: filters {list(self.filters)} need layers (--layers conv2), "
                    "or name them per layer: 'conv2:0,3'"
                )
            self.filters = {layer: sorted(set(self.filters)) for layer in self.layers}
        if self.filters is None and not self.rank:
            raise AnalysisError("ablate: with rank off, give the filters to silence (filters='conv2:0,3')")

    def key(self) -> str | None:
        """Keyed by what was silenced and how: ``ablate-conv1-f0_2`` for ``--filters conv1:0,2``,
        ``ablate-conv2`` for ranking conv2, ``-weights`` appended in weights mode; the defaults
        (rank the last conv layer, silence its top filters by channel) give plain ``ablate``."""
        from ..run import artifact_key

        if self.filters:
            parts = [artifact_key([layer], idx) for layer, idx in self.filters.items()]
        else:
            parts = [artifact_key(self.layers)]
        if self.mode != "channel":
            parts.append(self.mode)
        return "-".join(p for p in parts if p) or None

    def validate(self, subject: Subject) -> None:
        super().validate(subject)
        if self.filters is not None:
            _check(subject.model, self.filters)  # fail before the long ranking, not after it

    def compute(self, subject: Subject) -> dict[str, Any]:
        model = subject.model
        ranked: dict[str, Any] = {}
        if self.rank:
            for layer in resolve_layers(model, self.layers, "last", self.name):
                ranked[layer] = rank_layer(subject, layer, self.mode)
        chosen_by = "given"
        filters = self.filters
        if filters is None:
            layer, r = next(iter(ranked.items()))
            filters, chosen_by = _most_accuracy(layer, r, self.top)
        before = _logits(subject)
        with silenced(model, filters, self.mode):
            after = _logits(subject)
        labels = subject.split.labels
        b, a = (
            summarize_predictions(before, labels, subject.classes),
            summarize_predictions(after, labels, subject.classes),
        )
        counts = torch.bincount(labels, minlength=len(subject.classes))
        for s in (b, a):  # a class without images has no accuracy (not 0)
            s["per_class_accuracy"] = per_class(s["per_class_accuracy"], counts)
        pb, pa = before.argmax(1), after.argmax(1)
        broken = torch.nonzero((pb == labels) & (pa != labels)).flatten()
        fixed = torch.nonzero((pb != labels) & (pa == labels)).flatten()
        switched = torch.nonzero((pb != labels) & (pa != labels) & (pa != pb)).flatten()
        keep = ("accuracy", "loss", "per_class_accuracy", "confusion", "prediction_counts")
        result = {
            "classes": subject.classes,
            "mode": self.mode,
            "mode_means": MODE_WORDS[self.mode],
            "rank": ranked,
            "set": {
                "filters": filters,
                "chosen_by": chosen_by,
                "before": {k: b[k] for k in keep},
                "after": {k: a[k] for k in keep},
                "diff": {
                    "accuracy": a["accuracy"] - b["accuracy"],
                    "per_class_accuracy": [
                        None if x is None else y - x for x, y in zip(b["per_class_accuracy"], a["per_class_accuracy"])
                    ],
                    "confusion": (torch.tensor(a["confusion"]) - torch.tensor(b["confusion"])).tolist(),
                },
                "changed": {
                    "broken": broken.tolist(),
                    "fixed": fixed.tolist(),
                    "switched": switched.tolist(),
                    "before": pb[torch.cat([broken, fixed, switched])].tolist(),
                    "after": pa[torch.cat([broken, fixed, switched])].tolist(),
                },
            },
        }
        figures = Figures(subject, self.name, self.key_for(subject))
        if figures.on:
            self._draw(subject, result, pb, pa, figures)
        result["figures"] = figures
        return result

    def _draw(
        self, subject: Subject, result: dict[str, Any], pb: torch.Tensor, pa: torch.Tensor, figures: Figures
    ) -> None:
        from .. import plots

        classes, s = subject.classes, result["set"]
        what = _what(s["filters"], result["mode"])
        pct = lambda values: [float("nan") if v is None else 100 * v for v in values]  # noqa: E731 (absent: no bar)
        p = plots.grouped_bars(
            {"before": pct(s["before"]["per_class_accuracy"]), "after": pct(s["after"]["per_class_accuracy"])},
            classes,
            figures.path("per_class.png"),
            ylabel="accuracy (%)",
            ylim=(0, 100),
            title=f"silencing {what}: {100 * s['before']['accuracy']:.1f}% -> {100 * s['after']['accuracy']:.1f}%",
        )
        figures.add(p, f"Per-class {subject.split_name} accuracy before and after silencing {what}")
        for key, title, diverging in (
            ("before", f"before silencing {what}", False),
            ("after", f"after silencing {what}", False),
        ):
            p = plots.confusion(
                s[key]["confusion"], classes, figures.path(f"confusion_{key}.png"), title=f"Confusion {title}"
            )
            figures.add(p, f"Confusion matrix on the {subject.split_name} split {title} (rows: true class)")
        p = plots.confusion(
            s["diff"]["confusion"],
            classes,
            figures.path("confusion_diff.png"),
            diverging=True,
            title=f"After minus before (silencing {what})",
        )
        figures.add(p, f"Change of the confusion matrix when silencing {what} (red: more images, blue: fewer)")
        ch = s["changed"]
        n_fixed = min(len(ch["fixed"]), self.changed // 4)  # show both directions when both happen
        shown = (ch["broken"][: self.changed - n_fixed] + ch["fixed"][:n_fixed] + ch["switched"])[: self.changed]
        if shown:
            imgs = to_numpy(subject.split.images[shown].float().div(255))
            labels = subject.split.labels[shown].tolist()
            titles = [f"{classes[y]}: {classes[int(pb[i])]}>{classes[int(pa[i])]}" for i, y in zip(shown, labels)]
            colors = ["#c44e52" if int(pa[i]) != y else "#2a9d3a" for i, y in zip(shown, labels)]
            p = plots.mosaic(
                list(imgs),
                figures.path("changed.png"),
                layout="chw",
                cols=10,
                titles=titles,
                title_colors=colors,
                suptitle=f"predictions changed by silencing {what} (true: before>after; red: now wrong, "
                "green: now right)",
            )
            figures.add(
                p,
                f"{subject.split_name} images whose prediction changed when silencing {what}: "
                f"{len(ch['broken'])} now wrong, {len(ch['fixed'])} now right, {len(ch['switched'])} "
                "wrong either way (first ones shown)",
            )
        for layer, r in result["rank"].items():
            p = plots.panels(
                {"accuracy drop\n(points)": [100 * d for d in r["drop"]]},
                figures.path(f"{layer}_rank.png"),
                xlabel="filter",
                highlight=r["order"][: self.top],
                highlight_label=f"top {self.top}",
                title=f"{layer}: accuracy lost when each filter is silenced alone (baseline "
                f"{100 * r['baseline']:.1f}%)",
            )
            figures.add(
                p,
                f"{layer}: {subject.split_name} accuracy lost when each filter is silenced alone "
                f"({MODE_WORDS[result['mode']]})",
                layer,
            )

    def lines(self, result: dict[str, Any]) -> list[str]:
        out = []
        for layer, r in result["rank"].items():
            best = ", ".join(f"f{f} ({-100 * r['drop'][f]:+.1f})" for f in r["order"][:5])
            out.append(
                f"rank {layer} ({result['mode']} mode): baseline {100 * r['baseline']:.1f}%; "
                f"most accuracy carried by {best} points; "
                f"{r['seconds_per_filter']:.3f} s per filter ({r.get('method', 'method not recorded')})"
            )
        s = result["set"]
        what = _what(s["filters"], result["mode"])
        diffs = s["diff"]["per_class_accuracy"]
        present = [i for i, d in enumerate(diffs) if d is not None]
        worst = min(present, key=lambda i: diffs[i]) if present else None
        ch = s["changed"]
        line = f"silencing {what}: {100 * s['before']['accuracy']:.1f}% -> {100 * s['after']['accuracy']:.1f}%"
        if worst is not None:
            line += f", worst class {result['classes'][worst]} {100 * diffs[worst]:+.1f} points"
        out.append(line + f"; {len(ch['broken'])} images now wrong, {len(ch['fixed'])} now right")
        return out
