"""Explanations of a run folder's model, written by the run-folder contract.

``explain_run(run, method, ...)`` loads the model and the chosen images, runs one method, and
writes its artifact (:meth:`convlens.run.Run.artifact`, keyed by the layer and the filters or
classes asked for, so a run for other targets never replaces this one): ``<artifact>.json``
(parameters, per-image results, a caption for every figure), ``<artifact>.npz`` (the raw arrays)
and the figures in the artifact's folder. Per-filter figures follow the filter browser's naming:
``<artifact>/<layer>/f<index>.png``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import runload
from ..utils import to_numpy
from ..results import Result
from ..run import Run, artifact_key
from ..runlock import writes_run
from . import actmax, concepts, deconv, gradcam, guided, occlusion, saliency  # noqa: F401  (fill the registry)
from .actmax_run import write_actmax
from .concept_outputs import ConceptsResult, write_concepts
from .base import METHODS, ExplainError

DEFAULT_IMAGES = 10  # by default: the first image of each class, up to this many


def _load_images(run: Run, split: str, indices: Sequence[int] | None, data_root: str | None, clock=None):
    """``(bundle, positions, images in [0, 1] (N, C, H, W), labels)``; ``clock("data")`` once loaded."""
    from ..data import load_data

    cfg = run.config.data
    if data_root:
        cfg = cfg.model_copy(update={"root": data_root})
    bundle = load_data(cfg)
    if clock is not None:
        clock("data")
    s = bundle.split(split)
    if indices:
        idx = list(indices)
    else:
        labels = s.labels.tolist()
        idx = sorted({y: i for i, y in reversed(list(enumerate(labels)))}.values())[:DEFAULT_IMAGES]
    bad = [i for i in idx if not 0 <= i < len(s)]
    if bad:
        raise ExplainError(f"image {bad[0]} is out of range for the {split} split; allowed: 0 to {len(s) - 1}")
    sub = s.take(idx)
    return bundle, idx, sub.images.float() / 255, sub.labels


def _rel(run: Run, p: Path) -> str:
    return str(p.relative_to(run.path))


@writes_run("explain")
def explain_run(
    run: str | Path | Run,
    method: str,
    *,
    images: Sequence[int] | None = None,
    split: str = "test",
    layer: str | None = None,
    filters: Sequence[int] | None = None,
    target: str = "predicted",
    checkpoint: str | None = None,
    data_root: str | None = None,
    heatmap: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
    device: str = "cpu",
    clock: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one explanation method on a run folder's model; returns the JSON written.

    ``checkpoint`` defaults to the one eval.json evaluated (best if there is none); the JSON
    records the file read (``checkpoint``, ``checkpoint_epoch``, ``checkpoint_sha256``).
    ``device`` is where the model runs; ``clock(step)``, if given, is told when the model is loaded.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; allowed: {', '.join(sorted(METHODS))}")
    run = run if isinstance(run, Run) else Run(run)
    if target not in ("predicted", "true"):
        raise ExplainError(f"target {target!r} is not one of: predicted, true")
    model, checkpoint_info = runload.load_model_info(run, checkpoint, device)
    if clock is not None:
        clock("model")
    options = dict(options or {})
    heatmap = dict(heatmap or {})
    artifact = run.artifact(method, artifact_key(layer, filters))
    out_dir = artifact.folder
    t0 = time.perf_counter()
    writer = {"occlusion": _occlusion, "actmax": write_actmax, "gradcam": _gradcam, "concepts": write_concepts}.get(
        method, _backprop
    )
    ctx = dict(
        run=run,
        model=model,
        method=method,
        split=split,
        images=images,
        layer=layer,
        filters=filters,
        target=target,
        data_root=data_root,
        heatmap=heatmap,
        options=options,
        out_dir=out_dir,
        echo=echo,
        artifact=artifact,
        clock=clock,
        checkpoint_info=checkpoint_info,
    )
    before = _explained(artifact.json)
    # a rerun for the same targets replaces their figures: the old ones are kept aside until the new
    # ones are written
    with artifact.replacing():
        result = writer(**ctx)
    result = {"analysis": method, **result, **checkpoint_info, "seconds": round(time.perf_counter() - t0, 2)}
    now = _explained(result)
    if before and now and before != now:
        split_was, was = before
        print(
            f"warning: {run.rel(artifact.json)} explained {split_was} images {_list(was)}; it now explains "
            f"{now[0]} images {_list(now[1])} instead (the earlier result is replaced: copy it aside first to "
            "keep both, or explain every image you want in one run)",
            file=sys.stderr,
        )
    artifact.write(result)
    echo(f"wrote {artifact.json} and {len(result['figures'])} figure(s) under {out_dir}")
    return (ConceptsResult if method == "concepts" else Result)(result, run.path)


def _explained(doc: Path | dict[str, Any]) -> tuple[str, list[int]] | None:
    """(split, image indices) an explanation result covers, from its JSON (a path or the document);
    None for a method without images (activation maximisation) or an unreadable file."""
    if isinstance(doc, Path):
        try:
            doc = json.loads(doc.read_text(encoding="utf-8")) if doc.is_file() else {}
        except (OSError, ValueError):
            return None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(d, dict) and "index" in d for d in images):
        return None
    return str(doc.get("split", "test")), [d["index"] for d in images]


def _list(indices: list[int]) -> str:
    return ", ".join(map(str, indices[:12])) + (f" and {len(indices) - 12} more" if len(indices) > 12 else "")


def _describe(bundle, idx, labels, probs, split) -> list[dict[str, Any]]:
    pred = probs.argmax(1)
    return [
        {
            "index": int(i),
            "label": int(y),
            "label_name": bundle.classes[int(y)],
            "predicted": int(p),
            "predicted_name": bundle.classes[int(p)],
            "probability": float(probs[k, p]),
            "true_probability": float(probs[k, y]),
            "split": split,
        }
        for k, (i, y, p) in enumerate(zip(idx, labels.tolist(), pred.tolist()))
    ]


def _title(d: dict[str, Any]) -> str:
    mark = "" if d["label"] == d["predicted"] else " (wrong)"
    return f"#{d['index']} {d['label_name']} -> {d['predicted_name']}{mark}"


# ----------------------------------------------------------------------------------------------


def default_windows(side: int) -> list[int]:
    """Patch sizes 4, 8 and 12 where they fit (at most half the image side), else a quarter and a
    half; above 32 px, the same shares of the side (8, 16 and 24 at 64 px; 28, 56 and 84 at 224),
    so a patch hides as much of the object at every size."""
    if side > 32:
        return [round(k * side / 32) for k in (4, 8, 12)]
    fit = [k for k in (4, 8, 12) if k <= side // 2]
    return fit or sorted({max(1, side // 4), max(1, side // 2)})


def default_stride(side: int) -> int:
    """2 pixels per 32 of the image side (2 up to 32 px, 14 at 224): the maps keep the shape they
    have at 32 px (13x13 for the 8-pixel patch), and a 224 px image costs the same number of
    forward passes as a 32 px one instead of 49 times as many."""
    return max(2, round(2 * side / 32))


def occlusion_drops(
    maps: dict[int, np.ndarray], base: np.ndarray, classes: list[int], heatmap: dict[str, Any]
) -> tuple[dict[int, np.ndarray], Any, str, str]:
    """One image's occlusion maps as the drop in probability a patch causes (base minus occluded;
    important = large = bright, as Captum's occlusion), on one scale for every map shown (all
    windows, the listed classes): 0 to the largest drop, or ``heatmap``'s fixed ``vmin``/``vmax``.
    ``maps`` are (classes, h, w) probabilities per window, ``base`` the unoccluded probabilities.
    Returns the normalised maps, their scale, the figure's line about it and the colour bar label."""
    from .heatmap import normalize_heatmaps

    drops = {k: base[:, None, None] - m for k, m in maps.items()}
    hm = {"sign": "none", "scale": "fixed", "percentile": 100.0, **heatmap}
    if hm["scale"] == "fixed" and "vmax" in hm:
        lo, hi = float(hm.get("vmin", 0.0)), float(hm["vmax"])
    else:  # from no change to the largest drop of any map shown
        hi = max(float(drops[k][classes].max()) for k in drops)
        lo = 0.0
    if not hi > lo:  # no patch lowered the probability (e.g. saturated at 1)
        hi = lo + 1e-3
    shown, scale = {}, None
    for k in drops:
        shown[k], scale = normalize_heatmaps(drops[k], **{**hm, "scale": "fixed", "vmin": lo, "vmax": hi})
    label = (
        f"drop in probability with the patch at each position (bright: important); one scale for every "
        f"map here, {lo:.3g} to {hi:.3g}; a rise shows as {lo:.3g}"
    )
    return shown, scale, label, f"drop in probability ({lo:.3g} to {hi:.3g})"


def _occlusion(
    *, run, model, split, images, data_root, heatmap, options, out_dir, echo, artifact, clock=None, **_: Any
) -> dict[str, Any]:
    from .figures import occlusion_figure
    from .occlusion import Occlusion

    windows = options.pop("windows", None)
    stride = options.pop("stride", None)
    bundle, idx, x, labels = _load_images(run, split, images, data_root, clock)
    stride = int(stride) if stride is not None else default_stride(min(x.shape[-2:]))
    from ..analyses.base import default_batch

    options.setdefault("chunk", default_batch(x.shape))  # occluded copies per forward pass
    windows = [int(k) for k in windows] if windows else default_windows(min(x.shape[-2:]))
    maps, timing = {}, {}
    for k in windows:
        occ = Occlusion(model, k, stride, **options)
        t0 = time.perf_counter()
        occ.attribute(x, labels)
        timing[k] = round(time.perf_counter() - t0, 3)
        maps[k] = to_numpy(occ.details["probabilities"])
        base = occ.details["base"]
        echo(
            f"occlusion K={k} stride {stride}: {maps[k].shape[-2]}x{maps[k].shape[-1]} map per image "
            f"({occ.details['path']}, {timing[k]} s)"
        )
    described = _describe(bundle, idx, labels, base, split)
    figures = []
    for n, d in enumerate(described):
        rows = [(f"drop of p({d['label_name']}), true", d["label"])]
        if d["predicted"] != d["label"]:
            rows.append((f"drop of p({d['predicted_name']}), predicted", d["predicted"]))
        shown, scale, label, colorbar = occlusion_drops(
            {k: maps[k][n] for k in windows}, to_numpy(base[n]), [c for _, c in rows], heatmap
        )
        path = occlusion_figure(
            to_numpy(x[n]),
            shown,
            rows,
            stride,
            options.get("padding", 0),
            out_dir / f"{split}{d['index']}.png",
            title=_title(d),
            scale=scale,
            label=label,
            colorbar=colorbar,
        )
        figures.append(
            {
                "path": _rel(run, path),
                "caption": f"Occlusion maps of {split} image {d['index']} "
                f"({d['label_name']}, predicted {d['predicted_name']}): how much the probability of the "
                f"{'true and predicted classes' if len(rows) > 1 else 'true class'} drops with a "
                f"{'/'.join(map(str, windows))}-pixel patch ({options.get('fill', 'gray')}) at stride {stride}; "
                f"{label}.",
            }
        )
        d["min_true_probability"] = {str(k): float(maps[k][n, d["label"]].min()) for k in windows}
        d["mean_true_probability"] = {str(k): float(maps[k][n, d["label"]].mean()) for k in windows}
    arrays = artifact.save_arrays(
        indices=np.array(idx),
        labels=to_numpy(labels),
        base=to_numpy(base),
        **{f"probabilities_k{k}": maps[k] for k in windows},
    )
    params = {
        "windows": windows,
        "stride": stride,
        "fill": options.get("fill", "gray"),
        "padding": options.get("padding", 0),
        "map_shapes": {str(k): list(maps[k].shape[-2:]) for k in windows},
        "seconds_per_window": {str(k): v for k, v in timing.items()},
    }
    return {"params": params, "split": split, "images": described, "arrays": arrays, "figures": figures}


def _targets(model, x, labels, target: str) -> torch.Tensor:
    if target == "true":
        return labels
    with torch.no_grad():
        from .base import evaluating, model_device

        with evaluating(model):
            return model(x.to(model_device(model))).argmax(1)


def _probs(model, x) -> torch.Tensor:
    from .base import evaluating, model_device

    with torch.no_grad(), evaluating(model):
        return torch.softmax(model(x.to(model_device(model))), 1)


def _backprop(
    *,
    run,
    model,
    method,
    split,
    images,
    layer,
    filters,
    target,
    data_root,
    heatmap,
    options,
    out_dir,
    echo,
    artifact,
    clock=None,
    **_: Any,
) -> dict[str, Any]:
    from ..models import receptive_fields
    from .figures import attribution_grid, filter_projection
    from .heatmap import normalize_heatmaps

    bundle, idx, x, labels = _load_images(run, split, images, data_root, clock)
    described = _describe(bundle, idx, labels, _probs(model, x), split)
    titles = [_title(d) for d in described]
    figures: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"indices": np.array(idx), "labels": to_numpy(labels)}
    if layer is None and filters:
        raise ExplainError("--filters needs --layers: which layer's filters to project")
    if layer is not None:
        if not filters:
            raise ExplainError(
                f"give --filters F with --layers {layer}: the filters whose strongest activations are projected"
            )
        for f in filters:
            expl = METHODS[method](model, layer=layer, **options)
            sig = expl.attribute(x, [f] * len(x))
            normed, scale = normalize_heatmaps(sig, sign="signed", reduce="none", **heatmap)
            rf = receptive_fields(model, tuple(x.shape[1:])).get(layer)
            boxes = []
            for pos in expl.details["positions"]:
                if rf is None or isinstance(pos, int):
                    boxes.append((0, x.shape[2], 0, x.shape[3]))
                else:
                    boxes.append(rf.window(pos[0], pos[1], x.shape[2], x.shape[3]))
            acts = expl.details["activations"].tolist()
            for d, pos, a in zip(described, expl.details["positions"], acts):
                d.setdefault("projections", []).append(
                    {"layer": layer, "filter": int(f), "position": pos, "activation": a}
                )
            path = filter_projection(
                to_numpy(x),
                normed,
                boxes,
                [f"{t}\nact {a:.2f}" for t, a in zip(titles, acts)],
                out_dir / layer / f"f{f}.png",
                title=f"{method}: {layer} filter {f}, strongest activation per image",
                scale=scale,
            )
            figures.append(
                {
                    "path": _rel(run, path),
                    "layer": layer,
                    "filter": int(f),
                    "caption": f"{_NAMES[method]} of the strongest activation of {layer} filter {f} in each of "
                    f"{len(x)} {split} images (box: its receptive field); {scale.label}.",
                }
            )
            arrays[f"{layer}_f{f}"] = to_numpy(sig)
        params = {"layer": layer, "filters": [int(f) for f in filters], **options}
    else:
        expl = METHODS[method](model, **options)
        t = _targets(model, x, labels, target)
        sig = expl.attribute(x, t)
        hm = {"sign": "absolute", "reduce": "max_abs", **heatmap}
        normed, scale = normalize_heatmaps(sig, **hm)
        signal = None
        if method in ("deconv", "guided"):
            signal, _ = normalize_heatmaps(
                sig,
                sign="signed",
                reduce="none",
                percentile=hm.get("percentile", 99.0),
                scale=hm.get("scale", "shared"),
            )
        for d, c in zip(described, t.tolist()):
            d["target"] = int(c)
        path = attribution_grid(
            to_numpy(x),
            normed,
            scale,
            titles,
            out_dir / "images.png",
            signal=signal,
            title=f"{_NAMES[method]} of the {target} class",
        )
        figures.append(
            {
                "path": _rel(run, path),
                "caption": f"{_NAMES[method]} of the {target} class for {len(x)} {split} images; {scale.label}.",
            }
        )
        arrays["attributions"] = to_numpy(sig)
        arrays["targets"] = to_numpy(t)
        params = {"target": target, "heatmap": {k: v for k, v in hm.items()}, **options}
    saved = artifact.save_arrays(**arrays)
    return {"params": params, "split": split, "images": described, "arrays": saved, "figures": figures}


_NAMES = {
    "saliency": "Saliency (input gradient)",
    "guided": "Guided backprop",
    "deconv": "Deconvnet projection",
    "gradcam": "Grad-CAM",
}


def _gradcam(
    *, run, model, split, images, layer, target, data_root, heatmap, options, out_dir, artifact, clock=None, **_: Any
) -> dict[str, Any]:
    from .figures import attribution_grid
    from .gradcam import GradCAM
    from .heatmap import normalize_heatmaps

    bundle, idx, x, labels = _load_images(run, split, images, data_root, clock)
    described = _describe(bundle, idx, labels, _probs(model, x), split)
    cam = GradCAM(model, layer, **options)
    t = _targets(model, x, labels, target)
    maps = cam.attribute(x, t)
    hm = {"sign": "positive", "scale": "each", "percentile": 100.0, **heatmap}
    normed, scale = normalize_heatmaps(maps, **hm)
    for d, c in zip(described, t.tolist()):
        d["target"] = int(c)
    path = attribution_grid(
        to_numpy(x),
        normed,
        scale,
        [_title(d) for d in described],
        out_dir / "images.png",
        title=f"Grad-CAM on {cam.layer} for the {target} class",
    )
    arrays = artifact.save_arrays(
        indices=np.array(idx),
        labels=to_numpy(labels),
        maps=to_numpy(maps),
        layer_maps=to_numpy(cam.details["maps"]),
        targets=to_numpy(t),
    )
    return {
        "params": {"layer": cam.layer, "target": target, "heatmap": hm, **options},
        "split": split,
        "images": described,
        "arrays": arrays,
        "figures": [
            {
                "path": _rel(run, path),
                "caption": f"Grad-CAM on {cam.layer} for the {target} class of {len(x)} {split} images; {scale.label}.",
            }
        ],
    }
