"""What a filter responds to everywhere: its top-k dataset patches, read from the run folder.

Concept explanations and the class atlas show, beside each filter's contribution, the input
patches under its strongest responses over a split, which the ``topk`` analysis stores
(``analysis/topk[-<key>].json`` and its ``.npz`` of top images). :func:`find_topk` picks a stored
topk that measured the layer itself (or a conv whose block output it is: the same channels);
:func:`ensure_topk` runs topk for the layer when none did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..utils import read_json
from .perfilter import topk_images, window_patch


def same_channels(model: Any, layer: str) -> set[str]:
    """``layer`` and the pre-activations of the blocks whose output it is (``bn3`` for ``relu3``): a
    topk read there ranks the same images (the ReLU keeps the order of maxima above 0)."""
    from ..trace import conv_layers
    from .base import block

    blocks = [block(model, c) for c in conv_layers(model)]
    return {layer} | {b.pre for b in blocks if b.post == layer}


def find_topk(
    root: Path, layer: str, split: str | None = None, model: Any = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(topk JSON, its entry for the layer)`` of a stored topk ranked by activation that measured
    ``layer`` (as a layer or where it read a conv; with ``model``, also a conv whose block output
    ``layer`` is), with its top images stored; None if none did."""
    from ..run import Layout

    names = same_channels(model, layer) if model is not None else {layer}

    for path in Layout(root).artifacts("topk"):
        try:
            doc = read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("score") == "contribution" or not doc.get("arrays"):
            continue
        if split is not None and doc.get("split") != split:
            continue
        for name, info in (doc.get("layers") or {}).items():
            if not isinstance(info, dict) or not info.get("receptive_field") or not info.get("filters"):
                continue
            if name == layer or info.get("measured_at") in names:
                return doc, info
    return None


def ensure_topk(
    root: Path,
    layer: str,
    split: str,
    make_subject: Callable[[], Any],
    k: int = 8,
    model: Any = None,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """A stored topk of ``layer`` on ``split`` (see :func:`find_topk`), else one computed now over
    the split (``convlens analyze RUN --only topk --layers LAYER`` does the same); returns
    ``(doc, layer entry, computed now)``."""
    found = find_topk(root, layer, split, model)
    if found is not None:
        return (*found, False)
    from .topk import TopK

    echo(f"no topk of {layer} on the {split} split in {root}; computing it (topk --layers {layer} --k {k})")
    doc = TopK(layers=[layer], k=k)(make_subject())
    return doc, doc["layers"][layer], True


class Patches:
    """Each filter's top patches of one topk layer entry, cut from its stored top images."""

    def __init__(self, root: Path, doc: dict[str, Any], info: dict[str, Any]):
        self.doc, self.info = doc, info
        self.images, self.rows = topk_images(doc, Path(root))
        self.rf = info["receptive_field"]
        self.by_filter = {int(fi["filter"]): fi for fi in info.get("filters") or []}

    def of(self, f: int, n: int) -> list[np.ndarray]:
        """Up to ``n`` (C, h, w) float patches of filter ``f``, strongest first."""
        fi = self.by_filter.get(int(f))
        if fi is None:
            return []
        out = []
        for pos, (i, j) in zip(fi["positions"][:n], fi["locations"][:n]):
            img = self.images[self.rows[int(pos)]].astype(np.float32) / 255
            out.append(window_patch(img, self.rf, int(i), int(j)))
        return out

    def source(self) -> dict[str, Any]:
        """Where the patches come from, for the JSON."""
        return {
            "measured_at": self.info.get("measured_at"),
            "split": self.doc.get("split"),
            "k": len(next(iter(self.by_filter.values()), {}).get("positions", [])),
            "score": self.doc.get("score"),
            "checkpoint_sha256": self.doc.get("checkpoint_sha256"),
        }
