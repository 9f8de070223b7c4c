"""One pass over a split that feeds every streaming analysis at once.

Each batch is pushed through the model with a :class:`~convlens.trace.TraceDict` on the union of
the layers the analyses read; the hooks hand each layer's output to its readers the moment it is
computed and keep no reference, so memory holds one layer of one batch at a time, and the forward
pass stops as soon as every layer anyone reads has run (in execution order, whatever the order in
which the modules were declared; the classifier head never runs). A module that ``forward()``
calls twice is read at the call its name names (``act`` the first, ``act@2`` the second, as
``block`` names them from the traced data flow); a layer the pass never reaches is an error.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from ..trace import TraceDict
from .base import Streaming, Subject, check_spatial


def stream(subject: Subject, readers: Sequence[Streaming]) -> float:
    """Run ``readers`` over ``subject.split`` in one pass; returns the seconds it took.

    The caller holds the model in eval mode without gradients (``Analysis.__call__`` and
    ``analyze`` do).
    """
    wanted: dict[str, list[Streaming]] = {}
    for r in readers:
        r.start(subject)
        for probe in r.probes(subject):
            wanted.setdefault(probe, []).append(r)
    if not wanted:
        return 0.0
    current: dict[str, Any] = {}
    checked: set[str] = set()

    def hand_over(output: torch.Tensor, probe: str) -> torch.Tensor:
        if probe in current["handed"]:  # a module run twice by the model's own forward pass
            return output
        current["handed"].add(probe)
        if probe not in checked:
            check_spatial(output, probe, wanted[probe][0].name, subject.model)
            checked.add(probe)
        for r in wanted[probe]:
            r.observe(probe, output, current["labels"], current["positions"])
        return output

    names = "+".join(dict.fromkeys(r.name for r in readers))
    t0 = time.perf_counter()
    for x, labels, positions in subject.batches(names):
        current["labels"], current["positions"], current["handed"] = labels, positions, set()
        # entered per batch: `stop` ends each forward pass after the deepest traced layer
        with TraceDict(subject.model, wanted, stop=True, retain_output=False, edit_output=hand_over):
            subject.model(x)
    seconds = time.perf_counter() - t0
    subject.say(
        f"{names}: one pass over {len(subject.split)} {subject.split_name} images, "
        f"{len(wanted)} layers read, {seconds:.1f} s"
    )
    return seconds
