"""`convlens diagnose`: what went wrong (or right) in a run, in plain words, with the evidence.

Each check is one small function that reads the run folder (``metrics.jsonl``, ``status.json``,
``eval.json``, ``analysis/stats.json``) and returns findings; nothing is recomputed from the model.
The checks are the problems the course reports found by hand: overfitting after an early peak,
a diverged or collapsed classifier (Adam at lr 0.1: 10% accuracy, everything "airplane"), an
unstable one (a learning rate so high that the losses spike and the training accuracy stalls,
which a train-validation gap alone would mistake for overfitting), training accuracy below
validation accuracy (augmentation and dropout at work, not a problem), dead filters, training
stopped while still improving, a learning rate too low to move the loss, and the class pairs the
model mixes up (cat/dog, airplane/bird).
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..run import Run
from ..run import schema

# Thresholds, in one place so the report can state them.
OVERFIT_GAP = 0.10  # train minus validation accuracy at the end
OVERFIT_DROP = 0.02  # validation accuracy fallen this far below its peak...
OVERFIT_LOSS_RISE = 0.10  # ...while the validation loss rose this much above its minimum
COLLAPSE_SHARE = 0.90  # one class predicted for at least this share of the test images,
COLLAPSE_SHARE_AT_CHANCE = 0.50  # or for half of them while accuracy is at chance level
CHANCE_FACTOR = 1.5  # accuracy at most this many times 1/classes counts as chance level
EXPLODE_FACTOR = 3.0  # a later epoch's loss this many times the first epoch's loss
FLAT_DROP = 0.10  # train loss fell by less than this fraction from the first epoch to the last...
LEARNED_MARGIN = 0.10  # ...and no accuracy got this share of the way from chance to 100%
VAL_EXPLODE = 5.0  # a validation loss this many times ln(classes) (uniform guessing) while...
FITS_TRAIN = 0.90  # ...training accuracy is below this: unstable, not memorising
SPIKE_FACTOR = 1.5  # an epoch's train loss this many times the lowest before it: a spike
NEGATIVE_GAP = 0.05  # training accuracy this far below validation accuracy at the end
IMPROVING_GAIN = 0.01  # validation accuracy still gained this much over the last epochs

SEVERITIES = ("problem", "warning", "hint", "info")
# Codes judged from the test predictions (eval.json): a run without them is no evidence either way.
NEEDS_TEST = ("collapsed", "chance_level", "confused_pairs")


@dataclass
class Finding:
    """One diagnosis: ``code`` is stable (tests and scripts match on it), ``title`` and ``text`` are
    for people, ``evidence`` holds the numbers behind the claim."""

    code: str
    severity: str
    title: str
    text: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> float | None:
    """A finite float, or None (JSON writes NaN and infinity as null)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


class Facts:
    """What the checks read, loaded once."""

    def __init__(self, run: Run):
        self.run = run
        self.status = run.status
        self.rows = run.metrics()
        self.eval = run.eval
        try:
            self.classes = run.classes
        except Exception:  # a run that never loaded its data: the eval file may still name them
            self.classes = list((self.eval or {}).get("classes", []))
        self.stats: schema.Stats | None = _read_stats(run)
        try:
            self.lr = _num(run.config.train.optimizer.lr)
            self.optimizer = run.config.train.optimizer.name
        except Exception:
            self.lr, self.optimizer = None, None

    def series(self, key: str) -> list[tuple[int, float | None]]:
        return [(int(r.get("epoch", i + 1)), _num(r.get(key))) for i, r in enumerate(self.rows)]

    def known(self, key: str) -> list[tuple[int, float]]:
        return [(e, v) for e, v in self.series(key) if v is not None]

    @property
    def num_classes(self) -> int:
        return len(self.classes) or 10


# ----------------------------------------------------------------------------------------------
# the checks

CHECKS: list[Callable[[Facts], list[Finding]]] = []


def check(fn: Callable[[Facts], list[Finding]]) -> Callable[[Facts], list[Finding]]:
    CHECKS.append(fn)
    return fn


@check
def diverged(f: Facts) -> list[Finding]:
    """Status diverged, a NaN/infinite loss, or a loss that exploded after the first epoch."""
    losses = f.series("train_loss")
    bad = [e for e, v in losses if v is None]
    finite = [(e, v) for e, v in losses if v is not None]
    first = finite[0][1] if finite else None
    worst = max(finite, key=lambda ev: ev[1]) if finite else None
    exploded = (
        first is not None and worst is not None and worst[0] != finite[0][0] and worst[1] > EXPLODE_FACTOR * first
    )
    chance = math.log(f.num_classes)
    huge_first = first is not None and first > 10 * chance  # blew up within the first epoch
    status = f.status.get("status")
    if status != "diverged" and not bad and not exploded and not huge_first:
        return []
    ev: dict[str, Any] = {"status": status, "learning_rate": f.lr, "optimizer": f.optimizer}
    if f.status.get("message"):
        ev["status_message"] = f.status["message"]
    if bad:
        ev["nan_loss_epochs"] = bad
        where = f"the training loss became NaN or infinite in epoch {bad[0]}"
    elif exploded:
        ev.update(first_loss=first, worst_loss=worst[1], worst_epoch=worst[0])
        where = f"the training loss rose from {first:.3g} in epoch {finite[0][0]} to {worst[1]:.3g} in epoch {worst[0]}"
    elif huge_first:
        ev.update(first_loss=first, chance_loss=chance)
        where = (
            f"the training loss was {first:.3g} in epoch {finite[0][0]}, far above {chance:.3g} (guessing uniformly)"
        )
    else:
        where = f.status.get("message") or "training stopped as diverged"
    lr = f" than {f.optimizer} lr={f.lr:g}" if f.lr is not None else ""
    return [
        Finding(
            "diverged",
            "problem",
            "Training diverged",
            f"Training diverged: {where}. Try a learning rate 3-10x lower{lr}, or gradient clipping (train.grad_clip).",
            ev,
        )
    ]


def _prediction_counts(f: Facts) -> list[int] | None:
    e = f.eval or {}
    if isinstance(e.get("prediction_counts"), list):
        return [int(c) for c in e["prediction_counts"]]
    cm = e.get("confusion")
    if isinstance(cm, list) and cm:
        return [int(sum(row[j] for row in cm)) for j in range(len(cm[0]))]
    return None


@check
def collapsed(f: Facts) -> list[Finding]:
    """One class predicted for (nearly) every test image."""
    counts = _prediction_counts(f)
    if not counts or sum(counts) == 0 or len(counts) < 2:
        return []
    total = sum(counts)
    top = max(range(len(counts)), key=counts.__getitem__)
    share = counts[top] / total
    acc = _num((f.eval or {}).get("accuracy"))
    at_chance = acc is not None and acc <= CHANCE_FACTOR / len(counts)
    if share < COLLAPSE_SHARE and not (at_chance and share >= COLLAPSE_SHARE_AT_CHANCE):
        return []
    name = f.classes[top] if top < len(f.classes) else str(top)
    losses = f.known("train_loss")
    flat = len(losses) >= 2 and (losses[0][1] - losses[-1][1]) < FLAT_DROP * losses[0][1]
    if flat and losses[0][1] <= 2 * math.log(f.num_classes):
        cause = (
            "The training loss hardly moved from the first epoch, so the network has not learned yet: "
            "raise the learning rate or train longer."
        )
    else:
        lr = f" ({f.optimizer} lr={f.lr:g})" if f.lr is not None else ""
        cause = (
            f"This is what a learning rate that is too high{lr} does: the weights are pushed into a "
            "constant output (Adam at lr 0.1 did this in one course report). Lower it 10x."
        )
    ev = {
        "class": name,
        "share": share,
        "predicted": counts[top],
        "test_images": total,
        "test_accuracy": acc,
        "prediction_counts": counts,
        "learning_rate": f.lr,
    }
    acc_txt = f" (test accuracy {_pct(acc)}, chance is {_pct(1 / len(counts))})" if acc is not None else ""
    return [
        Finding(
            "collapsed",
            "problem",
            "Collapsed classifier",
            f"The classifier predicts \u201c{name}\u201d for {counts[top]} of {total} test images "
            f"({_pct(share)}){acc_txt}. {cause}",
            ev,
        )
    ]


@check
def chance_level(f: Facts) -> list[Finding]:
    """Test accuracy no better than guessing, without one dominant class (that is `collapsed`)."""
    acc = _num((f.eval or {}).get("accuracy"))
    counts = _prediction_counts(f)
    if acc is None or not counts or sum(counts) == 0 or acc > CHANCE_FACTOR / len(counts) or collapsed(f):
        return []
    lr = f" ({f.optimizer} lr={f.lr:g})" if f.lr is not None else ""
    ev = {"test_accuracy": acc, "chance": 1 / len(counts), "prediction_counts": counts, "learning_rate": f.lr}
    return [
        Finding(
            "chance_level",
            "problem",
            "No better than guessing",
            f"Test accuracy is {_pct(acc)}, where guessing gives {_pct(1 / len(counts))}: the model learned "
            f"nothing usable. Check the learning rate{lr} (too high scrambles the weights, too low never moves "
            "them) and that labels match images.",
            ev,
        )
    ]


def _learned(f: Facts) -> bool:
    """Some accuracy (training, validation or test) got clearly above guessing."""
    chance = 1 / f.num_classes
    accs = [v for _, v in f.known("train_acc") + f.known("val_acc")]
    acc = _num((f.eval or {}).get("accuracy"))
    accs += [acc] if acc is not None else []
    return bool(accs) and max(accs) >= chance + LEARNED_MARGIN * (1 - chance)


@check
def unstable(f: Facts) -> list[Finding]:
    """Spiking losses while the training accuracy stalls: a learning rate too high, not overfitting."""
    if diverged(f) or collapsed(f):  # those name the learning rate already
        return []
    chance_loss = math.log(f.num_classes)
    train_acc = dict(f.known("train_acc"))
    exploded = [
        (e, v) for e, v in f.known("val_loss") if v > VAL_EXPLODE * chance_loss and train_acc.get(e, 0.0) < FITS_TRAIN
    ]
    losses = f.known("train_loss")
    spikes = [
        (losses[i][0], v, min(x for _, x in losses[:i]))
        for i, (_, v) in enumerate(losses)
        if i and v > SPIKE_FACTOR * min(x for _, x in losses[:i])
    ]
    if not exploded and not spikes:
        return []
    ev: dict[str, Any] = {"learning_rate": f.lr, "optimizer": f.optimizer, "chance_loss": chance_loss}
    parts = []
    if exploded:
        e, v = max(exploded, key=lambda x: x[1])
        ev.update(val_loss_max=v, val_loss_max_epoch=e)
        parts.append(
            f"the validation loss reached {v:.3g} in epoch {e}, {v / chance_loss:.0f}x the {chance_loss:.3g} "
            "of guessing uniformly"
        )
    if spikes:
        e, v, low = max(spikes, key=lambda x: x[1] / x[2])
        ev.update(train_loss_spike=v, train_loss_spike_epoch=e, train_loss_before=low)
        parts.append(f"the training loss jumped to {v:.3g} in epoch {e} after having been {low:.3g}")
    if train_acc:
        peak_epoch, peak = max(train_acc.items(), key=lambda x: x[1])
        ev.update(train_acc_peak=peak, train_acc_peak_epoch=peak_epoch)
        parts.append(f"training accuracy got no higher than {_pct(peak)}")
    gap = _last_gap(f)
    why = ""
    if gap is not None and gap[0] >= OVERFIT_GAP:
        ev["gap_last"] = gap[0]
        why = (
            f" The train-validation gap of {100 * gap[0]:.1f} points is not overfitting: the weights jump too "
            "far each step to settle, on the training images as on the others."
        )
    lr = f" ({f.optimizer} lr={f.lr:g})" if f.lr is not None else ""
    return [
        Finding(
            "unstable",
            "problem",
            "Unstable training",
            f"Training is unstable: {'; '.join(parts)}. The learning rate is too high{lr}: lower it 3-10x, "
            f"or add warm-up or gradient clipping (train.grad_clip).{why}",
            ev,
        )
    ]


def _last_gap(f: Facts) -> tuple[float, int, float, float] | None:
    """``(train - val accuracy, epoch, train, val)`` at the last validated epoch."""
    val = f.known("val_acc")
    train = dict(f.known("train_acc"))
    if not val or val[-1][0] not in train:
        return None
    e, v = val[-1]
    return train[e] - v, e, train[e], v


def _harder_training(f: Facts) -> list[str]:
    """What in the config makes training images harder than validation images."""
    try:
        cfg = f.run.config
    except Exception:
        return []
    out = []
    augment = [k for k, v in cfg.data.augment.model_dump().items() if v is not None]
    if augment:
        out.append(f"augmentation ({', '.join(augment)})")
    drops = [layer for layer in cfg.model.layers or [] if getattr(layer, "type", "") in ("dropout", "dropout2d")]
    p = [float(getattr(layer, "p", 0) or 0) for layer in drops]
    p += [float(v) for k, v in (cfg.model.options or {}).items() if "dropout" in k and isinstance(v, (int, float))]
    if any(p):
        out.append(f"dropout (p up to {max(p):g})")
    elif cfg.model.preset and not cfg.model.layers:
        from ..models import build_model

        try:  # a preset's default dropout is in its layers, not in the config
            model = build_model(cfg.model, tuple(f.run.input_shape), f.num_classes)
            p = [m.p for m in model.modules() if type(m).__name__.startswith("Dropout") and m.p > 0]
        except Exception:
            p = []
        if p:
            out.append(f"dropout (p up to {max(p):g})")
    if cfg.train.label_smoothing:
        out.append(f"label smoothing {cfg.train.label_smoothing:g}")
    return out


@check
def train_below_val(f: Facts) -> list[Finding]:
    """Training accuracy below validation accuracy: what makes training harder, and that it is fine."""
    gap = _last_gap(f)
    if gap is None or gap[0] > -NEGATIVE_GAP:
        return []
    g, e, tr, va = gap
    causes = _harder_training(f)
    ev = {"epoch": e, "train_acc": tr, "val_acc": va, "gap": g, "causes": causes}
    if causes:
        why = (
            f"The training images see {' and '.join(causes)}, which make them harder than the clean validation "
            "images, scored in eval mode"
        )
    else:
        why = "Nothing in the config makes training harder (no augmentation, dropout or label smoothing)"
    return [
        Finding(
            "train_below_val",
            "info",
            "Training accuracy below validation",
            f"At epoch {e} the model is right on {_pct(tr)} of its training images but {_pct(va)} of the "
            f"validation images, {-100 * g:.1f} points more. {why}; and training accuracy is averaged over "
            "the epoch while the weights still improve, validation accuracy is measured at its end. This "
            "is not overfitting, and no reason to regularise more.",
            ev,
        )
    ]


@check
def overfitting(f: Facts) -> list[Finding]:
    """A large train-validation gap at the end, or validation accuracy falling after its peak."""
    val = f.known("val_acc")
    train = dict(f.known("train_acc"))
    if len(val) < 2 or unstable(f):  # an unstable run's gap is its instability
        return []
    peak_epoch, peak = max(val, key=lambda ev: ev[1])  # first epoch with the highest accuracy
    last_epoch, last = val[-1]
    gap = train[last_epoch] - last if last_epoch in train else None
    if gap is not None and gap <= -NEGATIVE_GAP:  # training is harder than validation: see train_below_val
        return []
    drop = peak - last
    vloss = f.known("val_loss")
    min_loss_epoch, min_loss = min(vloss, key=lambda ev: ev[1]) if vloss else (None, None)
    loss_rose = vloss and min_loss_epoch != vloss[-1][0] and vloss[-1][1] > (1 + OVERFIT_LOSS_RISE) * min_loss
    # a small validation split is noisy: a drop in accuracy counts only when the loss rose as well,
    # and only while training accuracy held: falling with it, the run is noisy, not memorising
    train_fell = peak_epoch in train and last_epoch in train and train[last_epoch] < train[peak_epoch]
    if not ((gap is not None and gap >= OVERFIT_GAP) or (drop >= OVERFIT_DROP and loss_rose and not train_fell)):
        return []
    ev = {
        "train_acc_last": train.get(last_epoch),
        "val_acc_last": last,
        "gap_last": gap,
        "val_acc_peak": peak,
        "peak_epoch": peak_epoch,
        "last_epoch": last_epoch,
        "val_loss_min": min_loss,
        "val_loss_min_epoch": min_loss_epoch,
        "val_loss_last": vloss[-1][1] if vloss else None,
    }
    parts = []
    if gap is not None:
        parts.append(
            f"at epoch {last_epoch} the model is right on {_pct(train[last_epoch])} of its training images "
            f"but {_pct(last)} of the validation images, a gap of {100 * gap:.1f} points"
        )
    if peak_epoch != last_epoch:
        parts.append(
            f"validation accuracy peaked at {_pct(peak)} in epoch {peak_epoch} and ended {100 * drop:.1f} points lower"
        )
    else:
        parts.append(f"validation accuracy peaked in the last epoch ({_pct(peak)})")
    if loss_rose:
        parts.append(
            f"validation loss was lowest in epoch {min_loss_epoch} ({min_loss:.3f}) and rose to {vloss[-1][1]:.3f}"
        )
    advice = (
        "Use the best checkpoint (eval.checkpoint: best) or stop near the peak, and regularise: "
        "augmentation, dropout, weight decay, or fewer parameters."
    )
    return [Finding("overfitting", "warning", "Overfitting", "; ".join(parts).capitalize() + ". " + advice, ev)]


@check
def flat_loss(f: Facts) -> list[Finding]:
    """The training loss barely moved from the first epoch to the last."""
    losses = f.known("train_loss")
    if len(losses) < 3 or f.status.get("status") == "diverged":
        return []
    first, last = losses[0][1], losses[-1][1]
    # a loss can stay high while the model learns (label smoothing, dropout, augmentation, or most
    # of the learning done in the first epoch): the accuracy says whether it learned
    if first <= 0 or (first - last) >= FLAT_DROP * first or _learned(f):
        return []
    lr = f" ({f.optimizer} lr={f.lr:g})" if f.lr is not None else ""
    ev = {
        "first_epoch": losses[0][0],
        "first_loss": first,
        "last_epoch": losses[-1][0],
        "last_loss": last,
        "relative_drop": (first - last) / first,
        "learning_rate": f.lr,
    }
    return [
        Finding(
            "flat_loss",
            "warning",
            "Flat loss from the start",
            f"The training loss went only from {first:.3f} to {last:.3f} in {len(losses)} epochs "
            f"({100 * (first - last) / first:.1f}% lower). The learning rate is probably too low{lr}: "
            "try it 10x higher.",
            ev,
        )
    ]


@check
def still_improving(f: Facts) -> list[Finding]:
    """Validation accuracy was still climbing at the last epoch: more epochs would help."""
    val = f.known("val_acc")
    if len(val) < 2 or f.status.get("status") in ("diverged", "running"):
        return []
    best = max(v for _, v in val)
    k = max(1, len(val) // 3)  # compare with the value k evaluations before the end
    (e0, v0), (e1, v1) = val[-1 - k], val[-1]
    if v1 < best - 0.005 or v1 - v0 < IMPROVING_GAIN:
        return []
    ev = {"from_epoch": e0, "val_acc_from": v0, "last_epoch": e1, "val_acc_last": v1, "gain": v1 - v0}
    return [
        Finding(
            "still_improving",
            "hint",
            "Still improving",
            f"Validation accuracy rose from {_pct(v0)} (epoch {e0}) to {_pct(v1)} (epoch {e1}) and was "
            "still at its best in the last epoch: training longer should help.",
            ev,
        )
    ]


def _read_stats(run: Run) -> schema.Stats | None:
    """The stats analysis: ``stats.json`` (every conv layer), else the keyed results of runs for
    some layers (``stats-conv1.json``, ...), newest first, their layers merged; those of another
    split or checkpoint than the newest are left out, so one finding cites one split."""
    from ..utils import read_json

    plain = run.artifact("stats").json
    found = [plain] if plain.is_file() else []
    if not found:
        keyed = [p for p in run.artifacts("stats") if p != plain]
        found = sorted(keyed, key=lambda p: p.stat().st_mtime, reverse=True)
    docs = []
    for path in found:
        try:
            doc = read_json(path)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("layers"), dict):
            docs.append(doc)
    if not docs:
        return None
    merged = dict(docs[0])
    merged["layers"] = dict(docs[0]["layers"])
    for doc in docs[1:]:
        if (doc.get("split"), doc.get("checkpoint")) == (merged.get("split"), merged.get("checkpoint")):
            for layer, info in doc["layers"].items():
                merged["layers"].setdefault(layer, info)
    return merged  # type: ignore[return-value]


def dead_filters_by_layer(stats: schema.Stats) -> dict[str, tuple[list[int], int]]:
    """``{layer: (dead filter indices, number of filters)}`` from the stats analysis, read through
    its schema (:class:`convlens.run.schema.Stats`); a layer in another layout is left out."""
    return schema.dead_filters(stats)


@check
def dead_filters(f: Facts) -> list[Finding]:
    if not f.stats:
        return []
    layers = dead_filters_by_layer(f.stats)
    hit = {k: v for k, v in layers.items() if v[0]}
    if not hit:
        return []
    per = [
        f"{name}: {len(d)}{f' of {n}' if n else ''} ({', '.join(map(str, d[:12]))}{', ...' if len(d) > 12 else ''})"
        for name, (d, n) in hit.items()
    ]
    total = sum(len(d) for d, _ in hit.values())
    ev = {
        "dead": {k: d for k, (d, _) in hit.items()},
        "filters": {k: n for k, (_, n) in layers.items()},
        "thresholds": f.stats.get("thresholds", f.stats.get("params", {})),
        "split": f.stats.get("split"),
        "checkpoint": f.stats.get("checkpoint"),
        "checkpoint_epoch": f.stats.get("checkpoint_epoch"),
    }
    # the stats analysis also calls a filter dead when its weights are near zero; say which reason holds
    infos = f.stats.get("layers") if isinstance(f.stats.get("layers"), dict) else {}
    reasons = {
        r
        for info in infos.values()
        if isinstance(info, dict) and isinstance(info.get("dead_reasons"), dict)
        for rs in info["dead_reasons"].values()
        if isinstance(rs, list)
        for r in rs
    }
    split = f.stats.get("split", "analysed")
    if reasons - {"never active"}:
        ev["reasons"] = sorted(reasons)
        what = f"{'are' if total != 1 else 'is'} dead on the {split} split ({' or '.join(sorted(reasons))})"
    else:
        what = f"never activate{'s' if total == 1 else ''} on the {split} split"
    return [
        Finding(
            "dead_filters",
            "warning",
            "Dead filters",
            f"{total} filter{'s' if total != 1 else ''} {what} "
            f"(per layer: {'; '.join(per)}). They cost compute and carry nothing; a lower learning "
            "rate, batch norm before the ReLU, or a leaky activation keeps filters alive.",
            ev,
        )
    ]


@check
def confused_pairs(f: Facts, top: int = 3) -> list[Finding]:
    """The class pairs mixed up most often in the test confusion matrix (both directions)."""
    cm = (f.eval or {}).get("confusion")
    if not isinstance(cm, list) or len(cm) < 2 or collapsed(f) or chance_level(f):  # its mistakes are no pairs
        return []
    k = len(cm)
    names = f.classes if len(f.classes) == k else [str(i) for i in range(k)]
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            n = int(cm[i][j]) + int(cm[j][i])
            if n:
                pairs.append((n, i, j))
    if not pairs:
        return []
    errors = sum(int(cm[i][j]) for i in range(k) for j in range(k) if i != j)
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    ev_pairs, words = [], []
    for n, i, j in pairs[:top]:
        ev_pairs.append(
            {
                "a": names[i],
                "b": names[j],
                "a_as_b": int(cm[i][j]),
                "b_as_a": int(cm[j][i]),
                "total": n,
                "share_of_errors": n / errors,
            }
        )
        words.append(
            f"{names[i]}/{names[j]} ({n}: \u201c{names[i]}\u201d taken for \u201c{names[j]}\u201d "
            f"{int(cm[i][j])} times, the reverse {int(cm[j][i])})"
        )
    share = sum(p["total"] for p in ev_pairs) / errors
    return [
        Finding(
            "confused_pairs",
            "info",
            "Most confused classes",
            f"The most confused class pairs on the test split are {'; '.join(words)}: together "
            f"{_pct(share)} of all {errors} mistakes.",
            {"pairs": ev_pairs, "errors": errors},
        )
    ]


@check
def unfinished(f: Facts) -> list[Finding]:
    status = f.status.get("status")
    if status in ("finished", "diverged", None):
        return []
    ep, n = f.status.get("epoch"), f.status.get("epochs")
    msg = f.status.get("message") or ""
    if ep is None:  # no status.json, or one without epochs: say what the folder holds instead
        ep = f.rows[-1].get("epoch") if f.rows else 0
    if not f.rows:
        what = f"has no status.json and no epoch in {f.run.rel(f.run.metrics_file)}" if status == "unknown" else ""
        text = (
            f"The run {what or f'is {status} and has no epoch in ' + f.run.rel(f.run.metrics_file)}"
            f"{': ' + msg if msg else ''}: it never completed an epoch (or its files were not copied), so "
            "there is nothing to diagnose yet."
        )
    else:
        of = f" of {n}" if n is not None else ""
        text = (
            f"The run is {status} after {ep}{of} epochs{': ' + msg if msg else ''}. Numbers below are "
            "from the epochs it completed."
        )
    return [Finding("unfinished", "info", f"Run {status}", text, {"status": status, "epoch": ep, "epochs": n})]


# ----------------------------------------------------------------------------------------------


def diagnose(run: Run | str) -> list[Finding]:
    """All findings of a run, most serious first."""
    facts = Facts(run if isinstance(run, Run) else Run(run))
    found = [x for fn in CHECKS for x in fn(facts)]
    return sorted(found, key=lambda x: SEVERITIES.index(x.severity))


def format_findings(findings: list[Finding]) -> str:
    """Plain text for the terminal."""
    if not findings:
        return "No problems found."
    lines = []
    for x in findings:
        lines.append(f"[{x.severity}] {x.title}: {x.text}")
        for key, value in x.evidence.items():
            lines.append(f"    {key}: {_short(value)}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_short(x)}" for k, x in v.items())
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return "; ".join(_short(x) for x in v)
    return str(v)


# ----------------------------------------------------------------------------------------------
# a sweep folder: trends across its trials

_NOT_SWEPT = ("seed", "name", "meta")  # differ between trials without being a setting


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if not prefix and key in _NOT_SWEPT:
            continue
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = repr(value) if isinstance(value, list) else value
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _pooled_seed_std(points: dict[tuple, list[float]]) -> float | None:
    ss = sum(sum((x - _mean(xs)) ** 2 for x in xs) for xs in points.values() if len(xs) > 1)
    dof = sum(len(xs) - 1 for xs in points.values())
    return math.sqrt(ss / dof) if dof else None


def sweep_trends(trials: list[tuple[dict[str, Any], dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    """Per config key that varies across ``trials`` (``(config, numbers)`` pairs): the mean of
    ``metric`` per value and the effect (highest mean minus lowest), largest effect first; the
    noise is the pooled standard deviation among trials that differ only in their seed."""
    flat = [(_flat(cfg), nums[metric]) for cfg, nums in trials if _num(nums.get(metric)) is not None]
    if not flat:
        return []
    keys = sorted(
        {k for f, _ in flat for k in f} - {k for k in flat[0][0] if all(f.get(k) == flat[0][0][k] for f, _ in flat)}
    )
    points: dict[tuple, list[float]] = {}
    for f, v in flat:
        points.setdefault(tuple(repr(f.get(k)) for k in keys), []).append(float(v))
    noise = _pooled_seed_std(points)
    out = []
    for key in keys:
        by: dict[str, list[float]] = {}
        for f, v in flat:
            by.setdefault(repr(f.get(key)), []).append(float(v))
        means = {value: _mean(xs) for value, xs in by.items()}
        best, worst = max(means, key=means.get), min(means, key=means.get)  # type: ignore[arg-type]
        out.append(
            {
                "key": key,
                "effect": means[best] - means[worst],
                "best": best,
                "worst": worst,
                "means": means,
                "counts": {value: len(xs) for value, xs in by.items()},
                "noise": noise,
            }
        )
    return sorted(out, key=lambda t: (-t["effect"], t["key"]))


def diagnose_sweep(path: Any, metric: str | None = None) -> list[Finding]:
    """Trends across a sweep folder's trials: which key moves the metric most and by how much,
    against the seed noise. ``metric``: test_acc when every trial has it, else best_val_acc."""
    from ..study.results import run_folders, run_numbers

    trials = []
    for folder in run_folders(Path(path)):
        run = Run(folder)
        if run.status.get("status") in ("finished", "diverged"):
            trials.append((run.config.to_dict(), run_numbers(folder)))
    if metric is None:
        metric = "test_acc" if trials and all(n.get("test_acc") is not None for _, n in trials) else "best_val_acc"
    trends = sweep_trends(trials, metric)
    if not trends:
        return [Finding("no_trend", "info", "No trend", f"{len(trials)} finished trial(s) vary no key.", {})]
    noise = trends[0]["noise"]
    found = []
    for i, t in enumerate(trends):
        means = ", ".join(f"{v}: {_pct(m)} (n={t['counts'][v]})" for v, m in t["means"].items())
        above = "" if noise is None else f", {t['effect'] / noise:.1f} times the seed noise ({_pct(noise)})"
        title = "Strongest key" if i == 0 else "Trend"
        text = f"{t['key']} moves {metric} by {_pct(t['effect'])} ({t['worst']} -> {t['best']}){above}. Means: {means}."
        if noise is None:
            text += " No point was repeated with another seed: the noise is unknown."
        elif t["effect"] <= 2 * noise:
            text += " Within twice the seed noise: not a trend."
        ev = {"key": t["key"], "metric": metric, "effect": t["effect"], "noise": noise, "trials": len(trials)}
        found.append(Finding("strongest_key" if i == 0 else "trend", "info", title, text, ev))
    return found
