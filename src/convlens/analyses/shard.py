"""The dataset-level pass sharded over processes, merged into exactly one process' result.

Under ``torchrun --nproc_per_node N convlens analyze RUN`` (or ``python -m convlens.cli``), each
of the N ranks reads every N-th batch of the split (``Subject.shard``: the same batches one
process reads, cut the same way, so every feature map is computed as it would be alone), runs
the streaming analyses (``topk``, ``stats``, ``classnorms``) over them, and hands its running
state to rank 0 (``all_gather_object``; gloo on CPUs, NCCL on GPUs), which merges the states,
finishes and writes the results under the run folder's lock; the other ranks write nothing.

What merges how: top-k candidates by (score descending, split position ascending), the order one
process keeps, so positions, scores and argmax locations are equal to the last bit; counts,
minima and maxima exactly; moments by Chan's pairwise update and class sums by addition, in
float64, equal to one process' up to float64 rounding (the order of the additions differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..distributed import process_group, world
from ..run import Run
from ..runlock import run_lock
from .base import AnalysisError, Streaming, Subject, inference
from .stats import Activity, Moments
from .topk import RunningTopK

# the running state of each streaming analysis (attributes set by its start() and observe())
STATE = {
    "topk": ("_running", "_map_size"),
    "stats": ("_moments", "_activity", "_post"),
    "classnorms": ("_sums", "_counts"),
}

Gather = Callable[[Any], list[Any]]  # this rank's object -> every rank's, in rank order


def state(reader: Streaming) -> dict[str, Any]:
    """What ``reader`` has accumulated over this shard (tensors and plain objects: picklable)."""
    return {attr: getattr(reader, attr) for attr in STATE[reader.name]}


def merge(reader: Streaming, states: list[dict[str, Any]]) -> None:
    """Set ``reader``'s running state to the merge of ``states`` (in rank order); then
    ``reader.finish(subject)`` gives the result of one pass over every shard."""
    if reader.name == "topk":
        sizes: dict[str, Any] = {}
        for s in states:
            sizes.update(s["_map_size"])
        layers = sizes.keys()
        reader._running = {
            layer: _merge_topk([s["_running"][layer] for s in states if layer in s["_running"]]) for layer in layers
        }  # type: ignore[attr-defined]
        reader._map_size = sizes  # type: ignore[attr-defined]
    elif reader.name == "stats":
        for attr in STATE["stats"]:
            merged: dict[str, Any] = {}
            for s in states:
                for probe, part in s[attr].items():
                    merged[probe] = _merge_moments(merged[probe], part) if probe in merged else part
            setattr(reader, attr, merged)
    elif reader.name == "classnorms":
        sums: dict[str, torch.Tensor] = {}
        for s in states:
            for probe, part in s["_sums"].items():
                sums[probe] = sums[probe] + part if probe in sums else part.clone()
        reader._sums = sums  # type: ignore[attr-defined]
        reader._counts = sum((s["_counts"] for s in states[1:]), states[0]["_counts"].clone())  # type: ignore[attr-defined]
    else:
        raise AnalysisError(f"{reader.name} does not merge over shards; sharded: {', '.join(STATE)}")


def _merge_topk(parts: list[RunningTopK]) -> RunningTopK:
    """The k best of every part by (score desc, position asc): what one process keeps, since its
    running buffer is that order over every image seen (ties go to the earlier image)."""
    k = parts[0].k
    values = torch.cat([p.values for p in parts], 1)
    positions = torch.cat([p.positions for p in parts], 1)
    locations = torch.cat([p.locations for p in parts], 1)
    key = torch.where(positions < 0, torch.iinfo(torch.long).max, positions)  # empty slots last
    by_pos = torch.sort(key, dim=1, stable=True).indices
    values, positions, locations = (t.gather(1, by_pos) for t in (values, positions, locations))
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    out = RunningTopK(values.shape[0], k)
    out.values, out.positions, out.locations = (t.gather(1, order) for t in (values, positions, locations))
    return out


def _merge_moments(a: Moments | Activity, b: Moments | Activity) -> Moments | Activity:
    if isinstance(a, Activity) and isinstance(b, Activity):
        out = Activity(len(a.active), a.threshold)
        out.images, out.positions = a.images + b.images, a.positions + b.positions
        out.active, out.active_images = a.active + b.active, a.active_images + b.active_images
        out.max = torch.maximum(a.max, b.max)
        return out
    assert isinstance(a, Moments) and isinstance(b, Moments)
    m = Moments(len(a.mean))
    m.n = a.n + b.n
    if m.n:  # Chan et al.: the pairwise update of mean and sum of squared deviations
        delta = b.mean - a.mean
        m.mean = a.mean + delta * (b.n / m.n)
        m.m2 = a.m2 + b.m2 + delta**2 * (a.n * b.n / m.n)
    m.min, m.max = torch.minimum(a.min, b.min), torch.maximum(a.max, b.max)
    return m


def sharded_pass(subject: Subject, readers: list[Streaming], gather: Gather) -> float:
    """Stream this rank's shard into ``readers``, gather every rank's state and merge it into
    them (on every rank); returns this rank's seconds."""
    from .stream import stream

    seconds = stream(subject, readers)
    everyone = gather([state(r) for r in readers])
    for i, r in enumerate(readers):
        merge(r, [rank_states[i] for rank_states in everyone])
    return seconds


# ----------------------------------------------------------------------------------------------
# under torchrun


def torch_gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def analyze_sharded(
    run: str | Path,
    only: Iterable[str] | None,
    rank: int,
    size: int,
    gather: Gather,
    *,
    split: str = "test",
    checkpoint: str | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    data_root: str | None = None,
    figures: bool = True,
    device: str = "cpu",
    echo: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, dict[str, Any]] | None:
    """The streaming analyses of ``run`` as rank ``rank`` of ``size``; rank 0 returns and writes
    the merged results, the others return None. ``gather`` collects one object from every rank."""
    from .pipeline import _report, build, select

    names = select(only if only is not None else list(STATE))
    other = [n for n in names if n not in STATE]
    if other:
        raise AnalysisError(
            f"analyses {', '.join(other)} do not run sharded; over several processes: {', '.join(STATE)}"
        )
    analyses = build(names, options)
    own = [a.name for a in analyses if isinstance(a, Streaming) and not a.streams()]
    if own:
        raise AnalysisError(f"{', '.join(own)} with these options need(s) gradients: a pass of its own, not sharded")
    subject = Subject.from_run(
        Run(run),
        split,
        checkpoint,
        limit=limit,
        data_root=data_root,
        device=device,
        batch_size=batch_size,
        figures=figures and rank == 0,
        progress=False,
        echo=echo if rank == 0 else None,
        shard=(rank, size),
    )
    readers = [a for a in analyses if isinstance(a, Streaming)]
    for r in readers:
        r.validate(subject)
    with inference(subject.model):
        seconds = sharded_pass(subject, readers, gather)
        if rank != 0:
            return None
        out = {}
        with run_lock(subject.root, "analyze"):
            for r in readers:
                r.clear(subject)
                out[r.name] = r.publish(subject, r.finish(subject), seconds)
                _report(subject, r, out[r.name])
    return out


def analyze_under_torchrun(run: str | Path, only: Iterable[str] | None, **kwargs: Any):
    """:func:`analyze_sharded` over the torchrun processes (gloo on CPUs, NCCL on CUDA)."""
    rank, size = world()  # type: ignore[misc]
    with process_group(kwargs.get("device", "cpu")) as device:
        return analyze_sharded(run, only, rank, size, torch_gather, **{**kwargs, "device": device})
