"""Weight averaging: an exponential moving average (EMA) of the weights, or lookahead.

Both keep an average ``a`` of the model's floating-point tensors (parameters and batch-norm
running statistics) and, every ``every`` optimiser steps, move it towards the current weights
``w``: ``a <- decay * a + (1 - decay) * w``.

- ``ema``: that is all; training continues from ``w`` and the average is what gets evaluated
  and saved (hlb-CIFAR10).
- ``lookahead``: the weights are then set back to the average, ``w <- a``, so training continues
  from the averaged point (Zhang et al. 2019; airbench94 uses it with the ramp below).

The decay at step ``t`` of ``T`` is ``decay * (t / T) ** power``: near zero while the learning
rate is high (averaging would only drag in stale weights), close to ``decay`` as it falls to zero.
When training ends, :meth:`WeightAverage.finish` writes the average into the model, so the last
checkpoint and the test evaluation use it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..config import AverageConfig


class WeightAverage:
    def __init__(self, model: nn.Module, cfg: AverageConfig, total_steps: int):
        self.model, self.cfg, self.total = model, cfg, max(1, total_steps)
        self.step = 0
        self.average = {k: v.detach().clone() for k, v in self._tensors().items()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict(keep_vars=True).items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        return self.cfg.decay * min(1.0, step / self.total) ** self.cfg.power

    @torch.no_grad()
    def mix(self, decay: float) -> None:
        """One averaging update with this decay (for lookahead, also the pull-back)."""
        for k, w in self._tensors().items():
            a = self.average[k]
            a.lerp_(w.detach(), 1.0 - decay)
            if self.cfg.kind == "lookahead":
                w.data.copy_(a)

    def update(self) -> None:
        """Call after every optimiser step."""
        self.step += 1
        if self.step % self.cfg.every == 0:
            self.mix(self.decay_at(self.step))

    @torch.no_grad()
    def finish(self) -> None:
        """Write the average into the model (at the end of training)."""
        for k, w in self._tensors().items():
            w.data.copy_(self.average[k])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it."""
        tensors = self._tensors()
        saved = {k: w.detach().clone() for k, w in tensors.items()}
        try:
            with torch.no_grad():
                for k, w in tensors.items():
                    w.data.copy_(self.average[k])
            yield
        finally:
            with torch.no_grad():
                for k, w in tensors.items():
                    w.data.copy_(saved[k])

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The model's ``state_dict`` with the averaged tensors in place of its own (copies)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        state.update({k: a.clone() for k, a in self.average.items()})
        return state

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "average": {k: a.clone() for k, a in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        with torch.no_grad():
            for k, a in state["average"].items():
                self.average[k].copy_(a)
