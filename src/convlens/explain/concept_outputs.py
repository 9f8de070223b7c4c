"""``convlens explain RUN --method concepts``: what the run's model saw in each image, in its filters.

Per image: the layer's filters ranked by their contribution to the explained class (activation x
gradient, :class:`.concepts.Concepts`), each drawn as its own map over the image beside its top-k
dataset patches (from the run's topk of that layer, computed over the split when the run has
none), and with ``lower`` the filters one layer down that make up each top concept. Written as
``analysis/concepts[-<key>].json`` (per image: the ranked concepts, the sum of all contributions,
the logit and the remainder), its ``.npz`` (contributions, maps) and one figure per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..results import Result
from ..utils import to_numpy
from .concepts import Concepts, concept_map

CMAP = "RdBu_r"


def overlay(image: np.ndarray, m: np.ndarray, lim: float) -> np.ndarray:
    """A (H, W, 3) picture: the image in grey under ``m`` (H, W) coloured on [-lim, lim] (red: the
    filter raises the class score there, blue: lowers it)."""
    from ..plots import _colours

    gray = image.mean(0) if image.ndim == 3 else image
    colour = _colours(CMAP, m, -lim, lim).astype(np.float32) / 255
    return 0.4 * gray[..., None] + 0.6 * colour


def concept_rows(
    image: np.ndarray, maps: np.ndarray, labels: list[str], patches: list[list[np.ndarray]], n_patches: int
) -> tuple[list[np.ndarray], list[str], float]:
    """Mosaic tiles, one row per concept: its map over the image, then its patches (blank where
    fewer); returns the tiles, the layouts and the colour limit (the largest |value| of the maps)."""
    lim = float(np.abs(maps).max()) or 1e-12
    tiles, layouts = [], []
    blank = np.ones((image.shape[0], 4, 4), np.float32)
    for m, row in zip(maps, patches):
        tiles.append(overlay(image, m, lim))
        layouts.append("hwc")
        for p in (row + [blank] * n_patches)[:n_patches]:
            tiles.append(p)
            layouts.append("chw")
    return tiles, layouts, lim


def _figure(image, maps, labels, patches, n_patches, path, title) -> tuple[Path, float]:
    from ..plots import mosaic

    tiles, layouts, lim = concept_rows(image, maps, labels, patches, n_patches)
    out = mosaic(tiles, path, layout=layouts, cols=1 + n_patches, row_labels=labels, suptitle=title, tile_inches=0.7)
    return out, lim


def _patch_source(run, model, layer, split, bundle, info, echo):
    """The layer's top-k patches (a stored topk, or one computed now) and what the JSON says of them."""
    from ..analyses.base import Subject
    from ..analyses.conceptpatches import Patches, ensure_topk

    def subject():
        return Subject(
            model,
            bundle.split(split),
            list(bundle.classes),
            run.path,
            split,
            info.get("checkpoint"),
            checkpoint_epoch=info.get("checkpoint_epoch"),
            checkpoint_sha256=info.get("checkpoint_sha256"),
            echo=echo,
        )

    doc, entry, computed = ensure_topk(run.path, layer, split, subject, model=model, echo=echo)
    patches = Patches(run.path, doc, entry)
    return patches, {**patches.source(), "computed_now": computed}


def write_concepts(
    *, run, model, split, images, layer, target, data_root, options, out_dir, echo, artifact, clock=None, **ctx: Any
) -> dict[str, Any]:
    from .base import ExplainError
    from .outputs import _describe, _load_images, _probs, _rel, _targets, _title

    if int(options.get("top", 5)) < 1 or int(options.get("patches", 5)) < 0:
        raise ExplainError(
            f"concepts: --top {options.get('top')} must be 1 or more and --patches {options.get('patches')} 0 or more"
        )
    if ctx.get("filters"):
        raise ExplainError(
            "concepts ranks every filter of the layer; leave out --filters (--top sets how many are shown)"
        )

    top, n_patches = int(options.get("top", 5)), int(options.get("patches", 5))
    down, below = bool(options.get("lower", False)), options.get("below")
    bundle, idx, x, labels = _load_images(run, split, images, data_root, clock)
    described = _describe(bundle, idx, labels, _probs(model, x), split)
    expl = Concepts(model, layer)
    t = _targets(model, x, labels, target)
    contrib = expl.attribute(x, t)
    det = expl.details
    layer = det["layer"]
    patches, source = _patch_source(run, model, layer, split, bundle, ctx.get("checkpoint_info") or {}, echo)
    top = min(top, contrib.shape[1])
    order = det["order"][:, :top]
    big = to_numpy(concept_map(det["maps"], tuple(x.shape[2:])))
    lower = None
    if down:
        lower = expl.lower(x, t, order, below)
        low_patches, low_source = _patch_source(
            run, model, det_lower(expl), split, bundle, ctx.get("checkpoint_info") or {}, echo
        )
        source = {"layer": source, "lower": {"layer": det_lower(expl), **low_source}}
    figures = []
    for n, d in enumerate(described):
        chosen = order[n].tolist()
        total = float(det["total"][n])
        d.update(
            target=int(t[n]),
            target_name=bundle.classes[int(t[n])],
            total=total,
            logit=float(det["logit"][n]),
            remainder=float(det["remainder"][n]),
            concepts=[
                {
                    "filter": int(f),
                    "contribution": float(contrib[n, f]),
                    "share": float(contrib[n, f]) / total if total else None,
                }
                for f in chosen
            ],
        )
        labels_n = [f"f{f} {float(contrib[n, f]):+.3g}" for f in chosen]
        title = (
            f"{_title(d)}: {layer} filters by contribution to {d['target_name']} "
            f"(sum of all {contrib.shape[1]}: {total:.3g}, logit {d['logit']:.3g})"
        )
        path, lim = _figure(
            to_numpy(x[n]),
            big[n, chosen],
            labels_n,
            [patches.of(f, n_patches) for f in chosen],
            n_patches,
            out_dir / f"{split}{d['index']}.png",
            title,
        )
        figures.append(
            {
                "path": _rel(run, path),
                "caption": f"Concepts of {split} image {d['index']} ({d['label_name']}, predicted "
                f"{d['predicted_name']}): the {top} {layer} filters that contribute most to the {target} class "
                f"{d['target_name']} (activation x gradient, summed over positions), each as its map over the "
                f"image (red raises the score, blue lowers it; one scale for the figure, +-{lim:.3g}) and its top "
                f"{n_patches} {source_split(source)} patches.",
            }
        )
        if lower is not None:
            figures.append(_lower_figure(run, expl, x, n, d, lower, low_patches, n_patches, out_dir, split))
    arrays = {
        "indices": np.array(idx),
        "labels": to_numpy(labels),
        "targets": to_numpy(t),
        "contributions": to_numpy(contrib),
        "maps": to_numpy(det["maps"]),
        "total": to_numpy(det["total"]),
        "logit": to_numpy(det["logit"]),
    }
    if lower is not None:
        arrays["lower_contributions"] = to_numpy(lower)
        arrays["lower_channels"] = to_numpy(order)
    params = {"layer": layer, "target": target, "top": top, "patches": n_patches, "lower": down}
    if down:
        params["below"] = det_lower(expl)
    return {
        "params": params,
        "split": split,
        "images": described,
        "patches_from": source,
        "arrays": artifact.save_arrays(**arrays),
        "figures": figures,
    }


def det_lower(expl: Concepts) -> str:
    return str(expl.details["lower_layer"])


def source_split(source: dict[str, Any]) -> str:
    inner = source.get("layer", source)
    return str(inner.get("split") or "")


def _lower_figure(run, expl, x, n, d, lower, patches, n_patches, out_dir, split) -> dict[str, Any]:
    """Per top concept of image ``n``, the three lower-layer filters that contribute most to it."""
    from .outputs import _rel, _title

    det = expl.details
    below = det_lower(expl)
    big = to_numpy(concept_map(det["lower_maps"][n], tuple(x.shape[2:])))  # (K, C_low, H, W)
    maps, labels, rows = [], [], []
    d["lower"] = []
    for k, c in enumerate(det["lower_channels"][n].tolist()):
        best = torch.argsort(lower[n, k], descending=True, stable=True)[:3].tolist()
        d["lower"].append(
            {"filter": int(c), "below": [{"filter": int(j), "contribution": float(lower[n, k, j])} for j in best]}
        )
        for j in best:
            maps.append(big[k, j])
            labels.append(f"f{c} <- f{j} {float(lower[n, k, j]):+.3g}")
            rows.append(patches.of(j, n_patches))
    path, lim = _figure(
        to_numpy(x[n]),
        np.stack(maps),
        labels,
        rows,
        n_patches,
        out_dir / below / f"{split}{d['index']}.png",
        f"{_title(d)}: {below} filters behind each top {det['layer']} concept",
    )
    return {
        "path": _rel(run, path),
        "caption": f"One layer down, {split} image {d['index']}: for each top {det['layer']} concept, the three "
        f"{below} filters that contribute most to it (activation x gradient of the concept's share, with "
        f"{det['layer']}'s gradient held fixed and masked to that filter), with their maps (one scale, "
        f"+-{lim:.3g}) and top patches.",
    }


class ConceptsResult(Result):
    """What ``explain_run(run, "concepts")`` returns: the JSON document, which a notebook shows as
    one line per image (its top filters, their contributions and shares) above its first figure."""

    def lines(self) -> list[str]:
        out = []
        for d in self.get("images") or []:
            tops = ", ".join(
                f"f{c['filter']} {c['contribution']:+.3g}" + (f" ({100 * c['share']:.0f}%)" if c.get("share") else "")
                for c in d.get("concepts") or []
            )
            out.append(
                f"#{d.get('index')} {d.get('label_name')} -> {d.get('predicted_name')}: {tops}; "
                f"sum {d.get('total', 0):.3g} of logit {d.get('logit', 0):.3g}"
            )
        return out
