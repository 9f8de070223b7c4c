"""Activation maximisation of a run folder's model: the images, their yardstick, the figures.

For each filter (or class): the optimised image (at the centre unit's receptive field for the
default ``center`` objective, else the whole canvas), the top data set patches of the same
objective at the same size (one per image, where the filter responded most), their mean, and
the Pearson correlation of the picture with that mean (``agrees_with_top``), so a reader sees
whether the picture looks like what the filter finds in the data. Dead targets (the objective
never moved) and unconverged ones are named in the JSON and on the figure.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..analyses.perfilter import window_patch
from ..errors import ConvlensError
from ..utils import to_numpy
from .base import ExplainError

TOP = 9  # data set patches shown beside each picture


def _bundle(run, data_root, decorrelate: bool, clock):
    from ..data import load_data

    cfg = run.config.data
    if data_root:
        cfg = cfg.model_copy(update={"root": data_root})
    try:
        bundle = load_data(cfg)
    except ConvlensError as exc:
        if decorrelate:
            raise ExplainError(
                f"{exc}\nactmax decorrelates colours with the training data's covariance; "
                "give --data-root, or --no-decorrelate"
            ) from None
        return None  # no yardstick: the figures say so
    if clock is not None:
        clock("data")
    return bundle


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two arrays' values (None where one is constant)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else None


def tiles(am, imgs: torch.Tensor, data_split, targets, k: int = TOP) -> list[dict[str, Any]]:
    """Per target: the picture at the size the objective sees (``image``), the top data set
    patches (``patches``, with their ``top`` records) and ``mean`` of them, ``agrees_with_top``."""
    box, unit = am.field_box(), am.unit()
    rf = am.field.to_dict() if box is not None else None
    pics = to_numpy(imgs)
    out = [{"image": window_patch(p, rf, *unit) if rf else p} for p in pics]
    if data_split is None:
        return out
    vals, pos, locs = am.dataset_top(data_split.images, targets, k)
    for j, o in enumerate(out):
        patches, top = [], []
        for n in range(vals.shape[1]):
            image = to_numpy(data_split.images[int(pos[j, n])]).astype(np.float32) / 255
            ij = [int(v) for v in locs[j, n]] if locs is not None else None
            patches.append(window_patch(image, rf, *ij) if rf and ij else image)
            top.append(
                {
                    "value": float(vals[j, n]),
                    "position": int(pos[j, n]),
                    "index": int(data_split.indices[pos[j, n]]),
                    "location": ij,
                }
            )
        o["patches"], o["top"] = patches, top
        o["mean"] = np.mean(patches, 0) if patches else None
        o["agrees_with_top"] = pearson(o["image"], o["mean"]) if patches else None
    return out


def _label(
    name: str, final: float, best: float | None, dead: bool, stuck: bool, converged: bool, split: str
) -> list[str]:
    lines = [name]
    if dead:
        return lines + [f"dead: objective constant at {final:.3g}", "(nothing to show)"]
    if stuck:
        return lines + [
            f"no gradient at the grey start: constant at {final:.3g}",
            f"a {split} image reaches {best:.3g}",
        ]
    lines.append(f"reached {final:.3g}" + (f", best {split} image {best:.3g}" if best is not None else ""))
    if not converged:
        lines.append("not converged")
    return lines


def write_actmax(
    *, run, model, layer, filters, split, data_root, options, out_dir, echo, artifact, clock=None, **_: Any
) -> dict[str, Any]:
    from .actmax import ActMax
    from .actmax_figure import Block, sheet
    from .base import channel_count
    from .figures import objective_curves
    from .imageparam import colour_covariance
    from .outputs import _rel

    options = dict(options)
    decorrelate = options.pop("decorrelate", True)
    bundle = _bundle(run, data_root, decorrelate, clock)
    cov = colour_covariance(bundle.train.images) if decorrelate else None
    if layer is None:  # class logits: named after the output layer
        name = [n for n, _ in model.named_children()][-1]
        count = len(run.classes)
    else:
        name = layer
        count = channel_count(model, layer)
    targets = list(filters) if filters else list(range(count))
    from ..analyses.base import default_batch

    options.setdefault("chunk", default_batch(tuple(run.input_shape)))  # images optimised per forward pass
    am = ActMax(model, layer, colour_cov=cov, image_shape=tuple(run.input_shape), **options)
    t0 = time.perf_counter()
    imgs = am.attribute(None, targets)
    seconds = time.perf_counter() - t0
    echo(
        f"actmax {name}: {len(targets)} image(s), {am.steps} steps, {seconds:.1f} s "
        f"({seconds / len(targets):.2f} s per image)"
    )
    d = am.details
    final, flat, converged = d["final"], d["dead"], d["converged"]
    data_split = bundle.split(split) if bundle is not None else None
    shown = tiles(am, imgs, data_split, targets)
    best = [t["top"][0]["value"] if t.get("top") else None for t in shown]
    # the objective never moved: dead where the data never moves it either, else stuck at the start
    # (no gradient at the grey image, though some image of the split excites the filter)
    stuck = [
        bool(flat[j]) and best[j] is not None and abs(best[j] - float(final[j])) > 1e-4 * (1 + abs(float(final[j])))
        for j in range(len(targets))
    ]
    dead = flat & ~torch.tensor(stuck, dtype=torch.bool)
    d["dead"], d["stuck"] = dead, torch.tensor(stuck, dtype=torch.bool)
    what = "class" if layer is None else "filter"
    label = (lambda k: f"class {k} {run.classes[k]}") if layer is None else (lambda k: f"filter {k}")
    box = am.field_box()
    size = f"{box[1] - box[0]}x{box[3] - box[2]} receptive field of the centre unit" if box else "whole image"
    where = "the same unit's best over positions" if box else "the same objective"
    headers = ["actmax", f"top {TOP} {split} {'patches' if box else 'images'}", "their mean"]
    blocks = []
    for j, k in enumerate(targets):
        groups = [[shown[j]["image"]]]
        if shown[j].get("patches"):
            groups += [shown[j]["patches"], [shown[j]["mean"]]]
        color = "#c00000" if flat[j] else "#9a5200" if not converged[j] else "black"
        lines = _label(label(k), float(final[j]), best[j], bool(dead[j]), stuck[j], bool(converged[j]), split)
        blocks.append(Block(lines, groups, color))
    folder = out_dir / name
    figures = []
    for j, k in enumerate(targets):
        s = sheet([blocks[j]], folder / f"f{k}.png", title=f"actmax {name} {label(k)} ({size})", headers=headers)
        figures.append(
            {
                "path": _rel(run, s.path),
                "layer": name,
                "filter": int(k),
                "caption": f"Activation maximisation of {name} {label(k)} ({size}): {am.param} parameterisation"
                f"{', colours decorrelated' if cov is not None else ''}, {am.steps} steps; objective "
                f"{float(d['initial'][j]):.3g} -> {float(final[j]):.3g}"
                + (f" (best {split} image {best[j]:.3g}, {where})" if best[j] is not None else " (no data set)")
                + ("; dead: the objective never changed" if dead[j] else "")
                + ("; stuck: no gradient at the grey start image" if stuck[j] else "")
                + ("; not converged" if not flat[j] and not converged[j] else "")
                + ".",
            }
        )
    above = sum(1 for j in range(len(targets)) if best[j] is not None and float(final[j]) > best[j])
    n_dead, n_stuck = int(dead.sum()), sum(stuck)
    summary = (
        (f"; {above} of {len(targets)} above their best {split} image" if data_split is not None else "")
        + (f"; {n_dead} dead" if n_dead else "")
        + (f"; {n_stuck} stuck at the grey start" if n_stuck else "")
    )
    grid = sheet(
        blocks, folder / "grid.png", title=f"actmax, {name}: one picture per {what} ({size}){summary}", headers=headers
    )
    figures.append(
        {
            "path": _rel(run, grid.path),
            "caption": f"Activation maximisation of {len(targets)} {what}(s) of {name} ({size}), optimised together "
            f"as one batch, beside the top {TOP} {split} {'patches' if box else 'images'} of the same objective "
            f"and their mean; each labelled with the objective reached and the best {split} image's value "
            f"({where}){summary}.",
        }
    )
    curves = to_numpy(d["objective"])
    curve = objective_curves(
        curves, [label(k) for k in targets], folder / "objective.png", title=f"actmax {name}: objective per step"
    )
    figures.append(
        {
            "path": _rel(run, curve),
            "caption": f"Objective per step of each {what} of {name} (on the transformed image each step "
            f"optimised; the last {am.polish:.0%} untransformed).",
        }
    )
    arrays = artifact.save_arrays(images=to_numpy(imgs), targets=np.array(targets), objective=curves)
    return {
        "params": _params(am, name, what, cov),
        "split": split if data_split is not None else None,
        "targets": _per_target(am, targets, shown, split),
        "optimise_seconds": round(seconds, 2),
        "arrays": arrays,
        "figures": figures,
    }


def _params(am, name: str, what: str, cov) -> dict[str, Any]:
    return {
        "layer": name,
        "target_kind": what,
        "steps": am.steps,
        "lr": am.lr,
        "param": am.param,
        "decorrelate": cov is not None,
        "colour_covariance": cov.tolist() if cov is not None else None,
        "jitter": am.jitter,
        "scale": list(am.scale),
        "rotate": am.rotate,
        "l2": am.l2,
        "tv": am.tv,
        "objective": am.objective if am.layer is not None else "class logit",
        "polish": am.polish,
        "unit": list(am.unit()) if am.unit() else None,
        "field_box": list(am.field_box()) if am.field_box() else None,
        "seed": am.seed,
    }


def _per_target(am, targets, shown, split) -> list[dict[str, Any]]:
    d = am.details
    out = []
    for j, k in enumerate(targets):
        top = shown[j].get("top")
        out.append(
            {
                "filter": int(k),
                "initial": float(d["initial"][j]),
                "final": float(d["final"][j]),
                "dead": bool(d["dead"][j]),
                "stuck": bool(d["stuck"][j]),
                "converged": bool(d["converged"][j]),
                "best_image": None if not top else {**top[0], "split": split},
                "top": top,
                "agrees_with_top": shown[j].get("agrees_with_top"),
            }
        )
    return out
