"""faithfulness: do the run's explanation maps explain the model? Two tests for every method.

1. Cascading model-parameter randomisation (Adebayo et al. 2018): the conv and linear layers of
   a copy of the model are re-initialised one at a time from the output down; after each, every
   method's maps of the same images (and the same classes: the trained model's predictions) are
   compared with the trained model's by Spearman rank correlation and SSIM (maps scaled to
   [0, 1]). A method whose maps stay alike, on average over the cascade, does not depend on
   what the network learned: verdict "changes with the weights: no".
2. Deletion and insertion (Samek et al. 2017; Petsiuk et al. 2018): the pixels are replaced by the
   baseline (stated in the JSON) in the order of the map, most relevant first (MoRF) and least
   relevant first (LeRF), and put back most relevant first into a blurred copy (insertion); the
   areas under the curves of the class probability. A random order is the yardstick: a map whose
   MoRF deletion area is below the random order's and whose insertion area is above it orders the
   pixels by what the model uses.

The measures are :mod:`convlens.explain.sanity`'s. ``convlens analyze RUN --only faithfulness``;
not part of a plain ``analyze`` (it runs every method once per layer).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..data.bundle import channel_mean
from ..jobs import AnalysisError
from ..utils import to_numpy
from .base import Analysis, Figures, Subject, register, stratified
from .options import FaithfulnessOptions

CURVES = ("deletion_morf", "deletion_lerf", "insertion_morf")


@register
class Faithfulness(Analysis, FaithfulnessOptions):
    """Do the maps explain? Weight randomisation (cascading) and deletion/insertion curves per method."""

    name = "faithfulness"
    by_default: ClassVar[bool] = False

    def __post_init__(self) -> None:
        from ..explain.sanity import METHODS

        super().__post_init__()
        bad = [m for m in self.methods or [] if m not in METHODS]
        if bad:
            raise AnalysisError(f"faithfulness: method {bad[0]!r} has no map to test; allowed: {', '.join(METHODS)}")
        if self.count < 1 or self.steps < 2 or self.seed < 0:
            raise AnalysisError(
                f"faithfulness: count={self.count} must be 1 or more, steps={self.steps} 2 or more "
                f"and seed={self.seed} 0 or more"
            )

    def _images(self, subject: Subject) -> tuple[list[int], torch.Tensor]:
        positions = stratified(subject.split.labels, self.count)
        x = subject.split.images[positions].float().div(255).to(subject.device)
        return positions, x

    def _baseline(self, subject: Subject, c: int) -> torch.Tensor:
        if self.baseline == "mean":
            values = channel_mean(subject.split.images)
        else:
            values = torch.full((c,), 0.5 if self.baseline == "gray" else 0.0)
        return values.view(1, c, 1, 1).to(subject.device)

    def compute(self, subject: Subject) -> dict[str, Any]:
        from ..explain.sanity import METHODS, cascade, method_maps, orders

        methods = list(self.methods or METHODS)
        model = subject.model
        positions, x = self._images(subject)
        side = min(x.shape[2:])
        window = max(1, min(8 if side <= 32 else round(8 * side / 32), side // 2))  # 8 per 32 px: 56 at 224
        with torch.enable_grad():
            with torch.no_grad():
                t = model(x).argmax(1)
            trained = {m: method_maps(m, model, x, t, window) for m in methods}
            baseline = self._baseline(subject, x.shape[1])
            gen = torch.Generator().manual_seed(self.seed)
            rand = orders(trained[methods[0]], "random", gen)
            random_curves = self._curves(model, x, t, {"deletion_morf": rand, "insertion_morf": rand}, baseline)
            out = {m: self._faithful(model, x, t, trained[m], baseline) for m in methods}
            layers, examples = [], {m: [to_numpy(trained[m][0])] for m in methods}
            for layer, copy in cascade(model, self.seed):
                layers.append(layer)
                for m in methods:
                    maps = method_maps(m, copy, x, t, window)
                    self._similarity(out[m], trained[m], maps)
                    examples[m].append(to_numpy(maps[0]))
        random_area = {k: float(v["area"]) for k, v in random_curves.items()}
        for m in methods:
            self._verdicts(out[m], random_area, layers)
        result: dict[str, Any] = {
            "methods": out,
            "layers_randomised": layers,
            "random_order": {
                "deletion": random_area["deletion_morf"],
                "insertion": random_area["insertion_morf"],
                "curves": {k: v["curve"] for k, v in random_curves.items()},
            },
            "baseline": {"kind": self.baseline, "values": to_numpy(baseline.flatten()).round(4).tolist()},
            "insertion_start": "the image blurred: a box filter twice (convlens.explain.sanity.blur)",
            "images": [int(p) for p in positions],
            "indices": subject.split.indices[positions].tolist(),
            "targets": t.tolist(),
            "occlusion_window": window,
        }
        figures = Figures(subject, self.name, self.key())
        if figures.on:
            self._draw(subject, result, examples, x[0], figures)
        result["figures"] = figures
        return result

    def _curves(self, model, x, t, order_of: dict[str, torch.Tensor], baseline) -> dict[str, dict[str, Any]]:
        from ..explain.sanity import area, perturbation_curves

        from ..explain.sanity import blur

        out = {}
        for name, order in order_of.items():
            insertion = name.startswith("insertion")
            start = blur(x) if insertion else baseline  # into the baseline it would retrace LeRF deletion
            curve = perturbation_curves(model, x, t, order, start, self.steps, insertion=insertion)
            out[name] = {"area": float(area(curve).mean()), "curve": to_numpy(curve.mean(0)).round(5).tolist()}
        return out

    def _faithful(self, model, x, t, relevance, baseline) -> dict[str, Any]:
        from ..explain.sanity import orders

        curves = self._curves(
            model,
            x,
            t,
            {
                "deletion_morf": orders(relevance, "morf"),
                "deletion_lerf": orders(relevance, "lerf"),
                "insertion_morf": orders(relevance, "morf"),
            },
            baseline,
        )
        return {
            **{k: v["area"] for k, v in curves.items()},
            "curves": {k: v["curve"] for k, v in curves.items()},
            "spearman": [1.0],
            "ssim": [1.0],
        }

    def _similarity(self, entry: dict[str, Any], trained: torch.Tensor, maps: torch.Tensor) -> None:
        from ..explain.sanity import spearman, ssim, unit

        entry["spearman"].append(round(float(spearman(trained, maps).mean()), 5))
        entry["ssim"].append(round(float(ssim(unit(trained), unit(maps)).mean()), 5))

    def _verdicts(self, entry: dict[str, Any], random_area: dict[str, float], layers: list[str]) -> None:
        steps = entry["spearman"][1:]  # after each re-initialisation, from the top
        entry["mean_spearman"] = round(float(np.mean(steps)), 5) if steps else None
        below = [n for n, v in zip(layers, steps) if abs(v) < self.similar]
        entry["below_from"] = below[0] if below else None
        # a map that stays alike while the top layers are random does not explain them: the verdict
        # reads the whole cascade, not only its end (where every map changes, Adebayo et al.)
        entry["changes_with_weights"] = bool(steps) and abs(entry["mean_spearman"]) < self.similar
        entry["ordering_beats_random"] = bool(
            entry["deletion_morf"] < random_area["deletion_morf"]
            and entry["insertion_morf"] > random_area["insertion_morf"]
        )

    # -- figures -------------------------------------------------------------------------------
    def _draw(self, subject: Subject, result: dict[str, Any], examples, image, figures: Figures) -> None:
        from .. import plots
        from ..explain.sanity import unit
        from .faithfulness_figures import perturbation_panels, similarity_lines

        methods = list(result["methods"])
        steps = ["trained"] + [f"-{n}" for n in result["layers_randomised"]]
        tiles, titles = [], []
        for m in methods:
            maps = unit(torch.as_tensor(np.stack(examples[m])))
            tiles += [plots._colours("inferno", to_numpy(v), 0.0, 1.0).astype(np.float32) / 255 for v in maps]
            titles += steps if m == methods[0] else [""] * len(steps)
        rows = list(methods)
        path = plots.mosaic(
            [to_numpy(image)] + [np.ones_like(to_numpy(image))] * (len(steps) - 1) + tiles,
            figures.path("randomisation.png"),
            layout=["chw"] * len(steps) + ["hwc"] * len(tiles),
            cols=len(steps),
            titles=["image"] + [""] * (len(steps) - 1) + titles,
            row_labels=["input", *rows],
            suptitle="maps of one image as the layers are re-initialised from the top (left to right), "
            "each scaled to [0, 1]",
            tile_inches=0.55,
        )
        figures.add(
            path,
            f"Cascading randomisation, {subject.split_name} image {result['indices'][0]}: each method's map on the "
            "trained model, then with the layers named above re-initialised one more at a time from the output "
            "down (each map scaled to its own [0, 1]).",
        )
        figures.add(
            similarity_lines(result, figures.path("similarity.png")),
            f"Rank correlation (Spearman) and SSIM of each method's maps with the trained model's, mean over "
            f"{len(result['images'])} images, as the layers are re-initialised from the top; a method whose "
            f"correlation stays above {self.similar} on average does not depend on the learned weights.",
        )
        base = result["baseline"]
        figures.add(
            perturbation_panels(result, figures.path("deletion.png")),
            f"Deletion (most and least relevant pixels first) and insertion (most relevant first, into a blurred "
            f"copy) curves of "
            f"p(predicted class), mean over {len(result['images'])} images, {self.steps} steps; deleted pixels "
            f"become the baseline ({base['kind']}: {', '.join(f'{v:.3g}' for v in base['values'])}); grey: "
            "a random order.",
        )

    def lines(self, result: dict[str, Any]) -> list[str]:
        return [
            f"{m}: changes with the weights {'yes' if e['changes_with_weights'] else 'no'} "
            f"(Spearman {e['mean_spearman']:.2f} over the cascade, {e['spearman'][-1]:.2f} after all layers, "
            f"below {self.similar} from {e['below_from'] or 'never'}); deletion MoRF {e['deletion_morf']:.3f}, "
            f"LeRF {e['deletion_lerf']:.3f}, insertion {e['insertion_morf']:.3f} "
            f"(random order {result['random_order']['deletion']:.3f} / {result['random_order']['insertion']:.3f})"
            for m, e in result["methods"].items()
        ]
