"""The documents of a run folder, field by field: what writers produce and readers may rely on.

``report`` and ``diagnose`` import these instead of guessing layouts. A field marked
``NotRequired`` is written only in some cases (a message with a status, a checkpoint's identity
once it exists); every other field is always there.
(No ``from __future__ import annotations`` here: TypedDict reads ``NotRequired`` from evaluated
annotations.)
"""

from typing import Any, NotRequired, TypedDict


class Status(TypedDict):
    """``status.json``."""

    status: str  # one of folder.STATUSES
    updated: str
    epoch: NotRequired[int]
    epochs: NotRequired[int]
    best_epoch: NotRequired[int]
    message: NotRequired[str]


class Dataset(TypedDict):
    """``dataset.json``."""

    name: str
    classes: list[str]
    shape: list[int]  # C, H, W
    mean: list[float]
    std: list[float]
    source: str
    sizes: dict[str, int]  # split -> images


class Summary(TypedDict):
    """``summary.json``: one row per layer, and the totals."""

    layers: list[dict[str, Any]]  # name, type, output_shape, params, macs, receptive_field
    params: int
    macs: int


class EpochRow(TypedDict):
    """One line of ``metrics.jsonl``."""

    epoch: int
    train_loss: float | None
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    epoch_seconds: float


class Checkpointed(TypedDict):
    """Which checkpoint file a result describes."""

    checkpoint: str  # best or last
    checkpoint_epoch: int | None
    checkpoint_sha256: str


class Eval(TypedDict):
    """``eval.json`` (``predictions.csv`` beside it holds one row per image, ``examples.npz`` the
    images the report shows)."""

    n: int
    accuracy: float
    loss: float
    classes: list[str]
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    prediction_counts: list[int]
    tta: str
    precision: NotRequired[str]  # "float32" (eval.precision: fp32, the default) or "bf16 autocast"
    seconds: float
    split: str
    checkpoint: str  # best or last
    checkpoint_epoch: NotRequired[int | None]
    checkpoint_sha256: NotRequired[str]
    epoch: NotRequired[int | None]


class FigureEntry(TypedDict):
    """One entry of an artifact's ``figures`` list; per-filter figures name layer and filter."""

    path: str  # relative to the run folder
    caption: str
    layer: NotRequired[str]
    filter: NotRequired[int]
    kind: NotRequired[str]
    pending: NotRequired[bool]  # listed now, drawn when first needed (analyses/perfilter.py)


class ArtifactDoc(TypedDict):
    """``analysis/<name>[-<key>].json``: what every analysis and explanation writes."""

    analysis: str  # the producer's name
    params: dict[str, Any]
    split: str | None
    figures: list[FigureEntry]
    checkpoint: NotRequired[str]
    checkpoint_epoch: NotRequired[int | None]
    checkpoint_sha256: NotRequired[str]
    seconds: NotRequired[float]
    arrays: NotRequired[str]  # the .npz beside the JSON


class LayerStats(TypedDict):
    """``layers[<name>]`` of ``analysis/stats.json``."""

    measured_at: dict[str, str]
    channels: int
    mean: list[float]
    std: list[float]
    active_fraction: list[float]
    post_max: list[float]
    weight_norm: list[float] | None
    dead: list[int]  # indices of dead filters
    dead_reasons: dict[str, list[str]]  # filter index -> "never active" / "weights near zero"
    thresholds: dict[str, float | None]


class Stats(ArtifactDoc):
    """``analysis/stats.json``: per-layer statistics, keyed by layer name."""

    layers: dict[str, LayerStats]


def dead_filters(stats: Stats) -> dict[str, tuple[list[int], int]]:
    """``{layer: (dead filter indices, number of filters)}`` of a stats document."""
    layers = stats.get("layers")
    if not isinstance(layers, dict):
        return {}
    return {
        str(name): (sorted(int(d) for d in info["dead"]), int(info["channels"]))
        for name, info in layers.items()
        if isinstance(info, dict) and isinstance(info.get("dead"), list) and isinstance(info.get("channels"), int)
    }
