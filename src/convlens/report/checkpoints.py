"""Which checkpoint each part of a run report shows, and whether that is still the current one.

``eval.json``, every analysis and every explanation record the checkpoint file they read
(``checkpoint``: best or last, ``checkpoint_epoch``, ``checkpoint_sha256``). The report compares
each with the file in ``checkpoints/`` now and with the checkpoint the report is about (the one
eval.json evaluated, unless ``--checkpoint`` says otherwise). A result whose hash differs from its
file's describes older weights, say of a run resumed for more epochs since: its section is marked
stale with the epoch it describes and the command that refreshes it. A result written without a
hash is stale when its file is older than the checkpoint file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import runload
from ..errors import ConvlensError
from ..explain.cli import METHOD_NAMES
from ..run import CHECKPOINTS, Run, artifact_key
from .html import Section


@dataclass
class Provenance:
    """The checkpoint one result was computed from, and what is wrong with it (if anything)."""

    name: str | None
    epoch: int | None = None
    sha256: str | None = None
    stale: bool = False  # computed from an older version of its checkpoint file
    alerts: list[str] = field(default_factory=list)  # why it is stale, or that it shows other weights

    @property
    def tag(self) -> str:
        """A few words for a caption: ``checkpoint best, epoch 3`` (``, stale`` when it is)."""
        if self.name is None:
            return "checkpoint not recorded"
        text = f"checkpoint {self.name}" + (f", epoch {self.epoch}" if self.epoch is not None else "")
        return text + (", stale" if self.stale else "")

    @property
    def detail(self) -> str:
        """The tag with the hash, for a parameter list or the headline."""
        if self.name is None:
            return "not recorded"
        text = self.name + (f", epoch {self.epoch}" if self.epoch is not None else "")
        return text + (f", sha256 {self.sha256}" if self.sha256 else ", no hash recorded")


class Checkpoints:
    """The run's checkpoint files as they are now, and the one the report is about."""

    def __init__(self, run: Run, reference: str | None = None):
        if reference is not None and reference not in CHECKPOINTS:
            raise ConvlensError(f"checkpoint {reference!r} is not one of: {', '.join(CHECKPOINTS)}")
        self.run = run
        self.reference = reference or run.eval_checkpoint
        self._files: dict[str, dict[str, Any] | None] = {}

    def file(self, name: str) -> Path:
        return self.run.checkpoint_file(name)

    def current(self, name: str) -> dict[str, Any] | None:
        """``checkpoint_info`` of ``checkpoints/<name>.pt`` now, or None if there is no such file."""
        if name not in self._files:
            info = None
            if self.file(name).is_file():
                try:
                    info = runload.checkpoint_info(self.run, name)
                except ConvlensError:
                    info = None
            self._files[name] = info
        return self._files[name]

    def reference_info(self) -> dict[str, Any] | None:
        return self.current(self.reference)

    def of(self, doc: dict[str, Any], path: Path, rerun: Callable[[str], str]) -> Provenance:
        """Where ``doc`` (read from ``path``) came from; ``rerun(name)`` is the command that
        computes it again from checkpoint ``name``."""
        name = doc.get("checkpoint")
        if name not in CHECKPOINTS:
            return Provenance(None)
        sha = doc.get("checkpoint_sha256")
        epoch = doc.get("checkpoint_epoch", doc.get("epoch"))
        prov = Provenance(name, int(epoch) if isinstance(epoch, int) else None, sha if isinstance(sha, str) else None)
        now = self.current(name)
        if now is None:
            return prov
        described = f"checkpoint {name}" + (f" of epoch {prov.epoch}" if prov.epoch is not None else "")
        is_now = (
            f"{self.run.rel(self.file(name))} is now epoch {now['checkpoint_epoch']} "
            f"(sha256 {now['checkpoint_sha256']})"
        )
        if prov.sha256 is not None and prov.sha256 != now["checkpoint_sha256"]:
            prov.stale = True
            prov.alerts.append(
                f"Stale: computed from {described} (sha256 {prov.sha256}), but {is_now}. Rerun `{rerun(name)}`."
            )
        elif prov.sha256 is None and path.stat().st_mtime < self.file(name).stat().st_mtime:
            prov.stale = True
            prov.alerts.append(
                f"Stale: written before {is_now} was saved, and it records no checkpoint hash. Rerun `{rerun(name)}`."
            )
        ref = self.reference_info()
        other = ref is not None and name != self.reference and now["checkpoint_sha256"] != ref["checkpoint_sha256"]
        if other and not prov.stale:
            prov.alerts.append(
                f"Computed from {described}, not the {self.reference} checkpoint (epoch "
                f"{ref['checkpoint_epoch']}) that this report shows elsewhere. Rerun "
                f"`{rerun(self.reference)}` to match."
            )
        return prov

    def of_analysis(self, name: str, doc: dict[str, Any], path: Path) -> Provenance:
        run = self.run.path
        explained = name in METHOD_NAMES
        base = f"convlens explain {run} --method {name}" if explained else f"convlens analyze {run} --only {name}"
        if explained and path.stem != name:  # a keyed artifact: the rerun asks for the same targets
            base += _target_flags(doc, path.stem[len(name) + 1 :])
        elif path.stem != name:  # a keyed analysis: the rerun asks for the same layers
            base += _analysis_flags(doc)
        default = self.run.eval_checkpoint  # what analyze and explain read without --checkpoint
        return self.of(doc, path, lambda which: base + ("" if which == default else f" --checkpoint {which}"))

    def of_eval(self) -> Provenance | None:
        if not self.run.eval:
            return None
        run = self.run.path
        return self.of(self.run.eval, self.run.eval_file, lambda which: f"convlens eval {run} --checkpoint {which}")


def _analysis_flags(doc: dict[str, Any]) -> str:
    """The ``--layers`` / ``--filters`` flags of an analysis' options that made its artifact key."""
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    layers = [str(n) for n in params.get("layers") or []] if isinstance(params.get("layers"), list) else []
    filters = params.get("filters")
    filters = [int(f) for f in filters if isinstance(f, int)] if isinstance(filters, list) else []
    split = doc.get("split") if isinstance(doc.get("split"), str) and doc.get("split") != "test" else None
    return (
        (f" --layers {','.join(layers)}" if layers else "")
        + (f" --filters {','.join(map(str, filters))}" if filters else "")
        + (f" --split {split}" if split else "")
    )


def _target_flags(doc: dict[str, Any], key: str) -> str:
    """The ``--layer`` / ``--filter`` flags whose :func:`~convlens.run.artifact_key` is ``key``."""
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    layer = params.get("layer") if isinstance(params.get("layer"), str) else None
    filters = params.get("filters") or [t.get("filter") for t in doc.get("targets") or [] if isinstance(t, dict)]
    filters = [int(f) for f in filters if isinstance(f, int)] if isinstance(filters, list) else []
    for lay in (layer, None):
        for fs in (None, filters):
            if artifact_key(lay, fs) == key:
                return (f" --layers {lay}" if lay else "") + (f" --filters {','.join(map(str, fs))}" if fs else "")
    return ""


def tag_captions(doc: dict[str, Any], prov: Provenance) -> None:
    """Append the checkpoint to the caption of every figure ``doc`` lists (section and browser)."""
    figs = doc.get("figures")
    if not isinstance(figs, list):
        return
    for i, e in enumerate(figs):
        if isinstance(e, str):
            figs[i] = e = {"path": e}
        if isinstance(e, dict) and isinstance(e.get("path"), str):
            e["caption"] = f"{e.get('caption') or Path(e['path']).stem} ({prov.tag})"


def mark(sec: Section, prov: Provenance, figures: bool = False) -> None:
    """Say in ``sec`` which checkpoint it shows: a parameter, every table caption (and figure
    caption with ``figures``), and an alert when the checkpoint is stale."""
    sec.params.insert(0, ("checkpoint", prov.detail))
    for t in sec.tables:
        t.caption = f"{t.caption} ({prov.tag})" if t.caption else prov.tag.capitalize()
    if figures:
        for f in sec.figures:
            f.caption = f"{f.caption} ({prov.tag})"
    sec.alerts.extend(prov.alerts)
