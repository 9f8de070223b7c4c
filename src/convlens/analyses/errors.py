"""errors: example classifications and the most confident mistakes (the CSCI-611 report's
Figures 1.2-1.10), with the confusion matrix and the most confused pairs of classes.

It needs only the model's outputs, so it applies to recurrent models too. A collapsed classifier
(the report's Adam at lr 0.1 predicting "airplane" for everything) shows at once in the
prediction counts and the example gallery.
"""

from __future__ import annotations

from typing import Any

import torch

from ..utils import to_numpy
from ..train.evaluate import summarize_predictions
from .options import ErrorsOptions
from .base import Analysis, AnalysisError, Figures, Subject, per_class, register, stratified


@register
class Errors(Analysis, ErrorsOptions):
    """Example classifications and the most confident mistakes, with true and predicted labels."""

    name = "errors"
    needs_conv = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.examples < 0 or self.mistakes < 0:
            raise AnalysisError(
                f"errors: examples={self.examples}, mistakes={self.mistakes}: out of range; allowed: 0 or more"
            )

    def compute(self, subject: Subject) -> dict[str, Any]:
        logits = [subject.model(x).float().cpu() for x, _, _ in subject.batches("errors")]
        logits = torch.cat(logits) if logits else torch.zeros(0, len(subject.classes))
        split, classes = subject.split, subject.classes
        labels = split.labels
        probs = logits.softmax(1)
        conf, pred = probs.max(1)
        summary = summarize_predictions(logits, labels, classes)
        wrong = torch.nonzero(pred != labels).flatten()
        # most confident first; equal confidence keeps split order
        worst = wrong[torch.argsort(conf[wrong], descending=True, stable=True)][: self.mistakes]

        def row(p: int) -> dict[str, Any]:
            return {
                "position": p,
                "index": int(split.indices[p]),
                "label": classes[int(labels[p])],
                "predicted": classes[int(pred[p])],
                "confidence": float(conf[p]),
                "p_label": float(probs[p, labels[p]]),
                "correct": bool(pred[p] == labels[p]),
            }

        cm = torch.tensor(summary["confusion"])
        off = cm.clone().fill_diagonal_(0)
        pairs = [
            (int(off.flatten()[i]), *divmod(int(i), len(classes)))
            for i in torch.argsort(off.flatten(), descending=True, stable=True)
        ]
        confused = [{"true": classes[t], "predicted": classes[p], "count": n} for n, t, p in pairs[:10] if n > 0]
        result = {
            "accuracy": summary["accuracy"],
            "per_class_accuracy": per_class(summary["per_class_accuracy"], torch.tensor(summary["confusion"]).sum(1)),
            "confusion": summary["confusion"],
            "prediction_counts": summary["prediction_counts"],
            "classes": classes,
            "n_wrong": len(wrong),
            "examples": [row(p) for p in stratified(labels, self.examples)],
            "mistakes": [row(int(p)) for p in worst],
            "confused_pairs": confused,
        }
        figures = Figures(subject, self.name, self.key_for(subject))
        if figures.on:
            self._draw(subject, result, figures)
        result["figures"] = figures
        return result

    def _draw(self, subject: Subject, result: dict[str, Any], figures: Figures) -> None:
        from .. import plots

        n = len(subject.split)
        for key, title in (("examples", "example classifications"), ("mistakes", "most confident mistakes")):
            rows = result[key]
            if not rows:
                continue
            imgs = to_numpy(subject.split.images[[r["position"] for r in rows]].float().div(255))
            # a right answer names its class once; a wrong one, the true class and then the prediction
            titles = [
                (r["predicted"] if r["correct"] else f"{r['label']} \u2192 {r['predicted']}")
                + f" {100 * r['confidence']:.0f}%"
                for r in rows
            ]
            colors = ["#2a9d3a" if r["correct"] else "#c44e52" for r in rows]
            p = plots.mosaic(
                list(imgs),
                figures.path(f"{key}.png"),
                layout="chw",
                cols=10,
                titles=titles,
                title_colors=colors,
                suptitle=f"{title} on {n} {subject.split_name} images (predicted class and "
                "its probability, true \u2192 predicted when wrong; green right, red wrong)",
                tile_inches=1.1,
            )
            figures.add(
                p,
                f"{title.capitalize()} on the {subject.split_name} split: true and predicted class and the "
                "predicted class's probability (green: right, red: wrong)",
            )
        p = plots.confusion(
            result["confusion"],
            result["classes"],
            figures.path("confusion.png"),
            title=f"Confusion on {subject.split_name} ({100 * result['accuracy']:.1f}%)",
        )
        figures.add(p, f"Confusion matrix on the {subject.split_name} split (rows: true class, columns: predicted)")

    def lines(self, result: dict[str, Any]) -> list[str]:
        pairs = ", ".join(f"{c['true']}>{c['predicted']} ({c['count']})" for c in result["confused_pairs"][:4])
        counts = result["prediction_counts"]
        line = f"accuracy {100 * result['accuracy']:.2f}%, {result['n_wrong']} mistakes; most confused: {pairs or '-'}"
        if counts and max(counts) == sum(counts) and len(counts) > 1:
            line += f"; COLLAPSED: every image predicted {result['classes'][counts.index(max(counts))]}"
        return [line]
