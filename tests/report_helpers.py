"""Run folders for the report tests: tiny real runs, and analyses written in the layout the real
analyses and explanation methods write (``analysis/<name>.json`` with a ``figures`` list whose
entries carry ``layer`` and, per filter, ``filter``; per-filter figures named
``analysis/<name>/<layer>/f<index>[_<kind>].png``).

The analyses here are small honest computations on the real trained model (weights, activation
statistics, class-wise norms, top-k images and patches, a few steps of activation maximisation,
one ablation, an input-gradient map), drawn with Pillow in milliseconds, so the figures show real
content and the report can be tested with hostile captions and class names. Their JSON has the
fields of ``convlens analyze`` and ``convlens explain`` (src/convlens/analyses/*.py,
src/convlens/explain/outputs.py); ``test_report_of_a_real_run`` checks the report against the
real commands themselves.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import tiny_config

from convlens import runload
from convlens import plots
from convlens.run import Run
from convlens.trace import TraceDict, conv_layers
from convlens.utils import read_json, write_json

_RUNS: dict[str, Path] = {}


def trained(tmp_path_factory, key: str, **overrides) -> Path:
    """A tiny digits run, trained once per test session and shared by every test that asks."""
    if key not in _RUNS:
        from convlens.train import train

        base = tmp_path_factory.getbasetemp()
        with pytest.MonkeyPatch.context() as mp:  # the same isolation conftest gives each test
            mp.setenv("CONVLENS_DATA", str(base / "data-home"))
            mp.setenv("CONVLENS_CACHE", str(base / "array-cache"))
            torch.set_num_threads(2)
            run = train(tiny_config(**overrides), base / "report-runs" / key, echo=lambda s: None)
        _RUNS[key] = run.path
    return _RUNS[key]


# Strings that would run if the report forgot to escape them anywhere.
HOSTILE_NAME = "<script>window.__pwned = 'config'</script>"
HOSTILE_CLASSES = [
    "<script>window.__pwned = 'class'</script>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "cat & dog",
]
HOSTILE_CAPTION = " <script>window.__pwned = 'caption'</script>"


def healthy(tmp_path_factory) -> Path:
    """A run that trains normally (its config name is hostile markup)."""
    return trained(tmp_path_factory, "healthy", name=HOSTILE_NAME)


def built(tmp_path_factory) -> Path:
    """A copy of the healthy run with its report built: copies of it (``shutil.copytree`` keeps
    modification times) reuse its figures instead of drawing them again."""
    if "built" not in _RUNS:
        from convlens.report import build_report

        dst = copy_run(healthy(tmp_path_factory), tmp_path_factory.getbasetemp() / "report-runs" / "built")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CONVLENS_CACHE", str(tmp_path_factory.getbasetemp() / "array-cache"))
            build_report(dst)
        _RUNS["built"] = dst
    return _RUNS["built"]


def analysed(tmp_path_factory) -> Path:
    """A copy of the healthy run with every analysis written, hostile class names and captions."""
    if "analysed" not in _RUNS:
        dst = tmp_path_factory.getbasetemp() / "report-runs" / "analysed"
        copy_run(healthy(tmp_path_factory), dst)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CONVLENS_CACHE", str(tmp_path_factory.getbasetemp() / "array-cache"))
            write_analyses(dst, k=6, max_filters=3, caption_tag=HOSTILE_CAPTION)
        names = read_json(dst / "dataset.json")["classes"]
        rename_classes(dst, HOSTILE_CLASSES + names[len(HOSTILE_CLASSES) :])
        _RUNS["analysed"] = dst
    return _RUNS["analysed"]


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rename_classes(run_dir: Path, names: list[str]) -> None:
    """Give a run hostile class names, as an image folder with such folder names would."""
    for f in ("dataset.json", "eval.json"):
        p = Path(run_dir) / f
        if p.is_file():
            d = read_json(p)
            d["classes"] = names
            write_json(p, d)


# ----------------------------------------------------------------------------------------------
# per-filter figures are many: drawn with Pillow (a few ms each) rather than matplotlib


def _to_rgb(img, layout: str) -> np.ndarray:
    a = plots.to_display(np.asarray(img), layout)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    return (a * 255).round().astype(np.uint8)


def _png(images, path: Path, size: int = 48, layout: str | list[str] = "chw") -> None:
    """Images side by side, each scaled (nearest neighbour) to ``size`` pixels high; ``layout``
    for all images, or one per image."""
    from PIL import Image

    tiles = []
    layouts = [layout] * len(images) if isinstance(layout, str) else layout
    for img, lay in zip(images, layouts):
        a = _to_rgb(img, lay)
        h, w = a.shape[:2]
        tiles.append(np.asarray(Image.fromarray(a).resize((max(1, round(w * size / h)), size), Image.NEAREST)))
    gap = np.full((size, 2, 3), 255, np.uint8)
    row = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)


def _bars_png(values, path: Path, highlight: int) -> None:
    from PIL import Image, ImageDraw

    w, h, bw = 12 * len(values) + 8, 60, 10
    im = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(im)
    top = max(max(values), 1e-9)  # bars of negative values (a filter never above zero) stay empty
    for i, v in enumerate(values):
        x = 4 + 12 * i
        draw.rectangle(
            [x, h - 4 - int((h - 8) * max(v, 0) / top), x + bw - 1, h - 4],
            fill="#dd8452" if i == highlight else "#4c72b0",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _fig(rel: str, caption: str, layer: str | None = None, index: int | None = None) -> dict:
    """A figure entry as the analyses write it: ``layer`` on every figure of one layer, ``filter``
    on per-filter ones (whose kind, e.g. ``patches``, is in the file name only)."""
    e = {"path": rel, "caption": caption}
    if layer is not None:
        e["layer"] = layer
    if index is not None:
        e["filter"] = int(index)
    return e


def _describe(classes, index, label, probs) -> dict:
    """One explained image, as ``convlens explain`` describes it."""
    pred = int(probs.argmax())
    return {
        "index": int(index),
        "label": int(label),
        "label_name": classes[int(label)],
        "predicted": pred,
        "predicted_name": classes[pred],
        "probability": float(probs[pred]),
        "true_probability": float(probs[int(label)]),
        "split": "test",
    }


@dataclass
class _Analysed:
    """What every analysis written below reads: the run, its model and the test images."""

    run: Run
    model: torch.nn.Module
    ident: dict  # the checkpoint's identity, as the real analyses record it
    full_test: Any  # the whole test split (the errors analysis reads positions in it)
    test: Any  # the test images analysed (all, or ``limit`` evenly spaced ones)
    classes: list[str]
    convs: list[str]
    where: dict[str, tuple[str, str]]  # conv layer -> (pre, post): after the batch norm / the activation
    rf: dict
    out: Path
    tag: str
    common: dict
    k: int
    max_filters: int | None

    @property
    def n(self) -> int:
        return len(self.test)

    @property
    def nclass(self) -> int:
        return len(self.classes)

    @property
    def x_all(self) -> torch.Tensor:
        return self.test.images.float() / 255

    @property
    def labels(self) -> torch.Tensor:
        return self.test.labels

    def nf_of(self, total: int) -> int:
        return total if self.max_filters is None else min(total, self.max_filters)


def write_analyses(
    run_dir: Path, k: int = 6, max_filters: int | None = None, caption_tag: str = "", limit: int | None = None
) -> list[str]:
    """Write filters, stats, classnorms, topk, actmax, ablate, errors and saliency analyses
    (over ``limit`` evenly spaced test images, or all); ``max_filters`` caps the per-filter
    figures of each layer."""
    from convlens.analyses.base import block
    from convlens.models import receptive_fields

    run = Run(run_dir)
    model, ident = runload.load_model_info(run)  # the checkpoint eval.json evaluated, recorded as analyze does
    full_test = test = runload.load_data(run).test
    if limit is not None and limit < len(test):  # evenly spaced: a test split may be sorted by class
        test = test.take(torch.linspace(0, len(test) - 1, limit).long())
    convs = conv_layers(model)
    where = {c: (block(model, c).pre, block(model, c).post) for c in convs}  # after the batch norm / the activation
    cx = _Analysed(
        run=run,
        model=model,
        ident=ident,
        full_test=full_test,
        test=test,
        classes=run.classes,
        convs=convs,
        where=where,
        rf=receptive_fields(model),
        out=run.analysis_dir,
        tag=caption_tag,
        common={"split": "test", **ident, "n_images": len(test), "seconds": 0.1},
        k=k,
        max_filters=max_filters,
    )
    acc = _probe_statistics(cx)
    _write_filters(cx)
    _write_stats(cx, acc)
    _write_classnorms(cx, acc)
    _write_topk(cx, acc)
    _write_actmax(cx)
    _write_ablate(cx)
    _write_errors(cx)
    _write_saliency(cx)
    return ["filters", "stats", "classnorms", "topk", "actmax", "ablate", "errors", "saliency"]


def _probe_statistics(cx: _Analysed) -> dict[str, dict]:
    """Per conv layer, running sums over the test images of its responses before and after the
    activation: the maxima and where they are, moments, activity, per-image norms."""
    model, where, n, x_all = cx.model, cx.where, cx.n, cx.x_all
    probes = sorted({p for pair in where.values() for p in pair})
    acc: dict[str, dict] = {}
    with torch.no_grad(), TraceDict(model, probes) as td:
        for s in range(0, n, 500):
            model(x_all[s : s + 500])
            for c, (pre, post) in where.items():
                a, z = td[post].output.flatten(2), td[pre].output  # (B, F, HW), (B, F, H, W)
                mx, arg = z.flatten(2).max(2)
                d = acc.setdefault(
                    c,
                    {
                        "max": [],
                        "arg": [],
                        "sum": 0,
                        "sq": 0,
                        "min": None,
                        "zmax": None,
                        "active": 0,
                        "img_active": 0,
                        "post_sum": 0,
                        "post_max": None,
                        "norm": [],
                    },
                )
                d["max"].append(mx)
                d["arg"].append(arg)
                zf = z.flatten(2).double()
                d["sum"] = d["sum"] + zf.sum((0, 2))
                d["sq"] = d["sq"] + (zf**2).sum((0, 2))
                lo, hi = zf.amin((0, 2)), zf.amax((0, 2))
                d["min"] = lo if d["min"] is None else torch.minimum(d["min"], lo)
                d["zmax"] = hi if d["zmax"] is None else torch.maximum(d["zmax"], hi)
                d["active"] = d["active"] + (a > 0).double().sum((0, 2))
                d["img_active"] = d["img_active"] + (a > 0).any(2).double().sum(0)
                d["post_sum"] = d["post_sum"] + a.double().sum((0, 2))
                pm = a.amax((0, 2))
                d["post_max"] = pm if d["post_max"] is None else torch.maximum(d["post_max"], pm)
                d["norm"].append(a.norm(dim=2) / a.shape[2] ** 0.5)
                d["hw"] = list(z.shape[2:])
    return acc


def _write_filters(cx: _Analysed) -> None:
    """The weights of each conv layer: norms, ranges, one figure per filter and per layer."""
    convs, model, out, tag, common = cx.convs, cx.model, cx.out, cx.tag, cx.common
    figs, layers = [], {}
    for c in convs:
        w = model.get_submodule(c).weight.detach()
        flat = w.flatten(1)
        layers[c] = {
            "shape": list(w.shape),
            "l2": flat.norm(dim=1).tolist(),
            "l1": flat.abs().sum(1).tolist(),
            "min": flat.min(1).values.tolist(),
            "max": flat.max(1).values.tolist(),
            "bias": model.get_submodule(c).bias.tolist() if model.get_submodule(c).bias is not None else None,
            "max_abs": float(flat.abs().max()),
        }
        kern = [
            (w[i].mean(0) - w[i].mean(0).min()) / (w[i].mean(0).max() - w[i].mean(0).min() + 1e-9)
            for i in range(w.shape[0])
        ]
        _png([t.numpy() for t in kern], out / "filters" / f"{c}.png", 32, "hw")
        figs.append(_fig(f"analysis/filters/{c}.png", f"{c}: all filters, each on its own scale{tag}", c))
        for i in range(cx.nf_of(w.shape[0])):
            _png([kern[i].numpy()], out / "filters" / c / f"f{i}.png", 64, "hw")
            figs.append(_fig(f"analysis/filters/{c}/f{i}.png", f"{c} filter {i}: weights{tag}", c, i))
    write_json(
        out / "filters.json",
        {
            "analysis": "filters",
            "params": {"layers": None, "scale": "filter", "per_filter": True},
            **common,
            "layers": layers,
            "scale": "filter",
            "figures": figs,
        },
    )


def _write_stats(cx: _Analysed, acc: dict[str, dict]) -> None:
    """Activation statistics per filter, and how often each is active."""
    model, where, n = cx.model, cx.where, cx.n
    out, tag, common = cx.out, cx.tag, cx.common
    layers, figs = {}, []
    for c, d in acc.items():
        positions = n * d["hw"][0] * d["hw"][1]
        mean = d["sum"] / positions
        std = (d["sq"] / positions - mean**2).clamp(min=0).sqrt()
        active = d["active"] / positions
        wn = model.get_submodule(c).weight.detach().flatten(1).norm(dim=1)
        dead = [i for i in range(len(mean)) if active[i] == 0]
        layers[c] = {
            "measured_at": {"pre": where[c][0], "post": where[c][1]},
            "channels": len(mean),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "min": d["min"].tolist(),
            "max": d["zmax"].tolist(),
            "active_fraction": active.tolist(),
            "images_active": (d["img_active"] / n).tolist(),
            "post_mean": (d["post_sum"] / positions).tolist(),
            "post_max": d["post_max"].tolist(),
            "weight_norm": wn.tolist(),
            "dead": dead,
            "dead_reasons": {str(i): ["never active"] for i in dead},
            "thresholds": {"active": 0.0, "weight_relative": 0.001, "weight_norm": float(wn.median()) * 0.001},
        }
        _bars_png(active.tolist(), out / "stats" / f"{c}.png", -1)
        figs.append(_fig(f"analysis/stats/{c}.png", f"{c}: how often each filter is active{tag}", c))
    write_json(
        out / "stats.json",
        {
            "analysis": "stats",
            "params": {"layers": None, "active_threshold": 0.0, "weight_threshold": 0.001},
            **common,
            "layers": layers,
            "figures": figs,
        },
    )


def _write_classnorms(cx: _Analysed, acc: dict[str, dict]) -> None:
    """Class-wise average norms of the first and the last conv layer, and the experts."""
    convs, where, classes, labels = cx.convs, cx.where, cx.classes, cx.labels
    nclass, out, tag, common = cx.nclass, cx.out, cx.tag, cx.common
    # classnorms: bars per filter for the first and the last conv layer, as the analysis' default
    counts = torch.bincount(labels, minlength=nclass)
    layers, figs, ranking = {}, [], []
    measured = [convs[0], convs[-1]] if len(convs) > 1 else convs
    for c in measured:
        norms = torch.cat(acc[c]["norm"])  # (N, F)
        means = torch.stack([norms[labels == j].mean(0) for j in range(nclass)], 1)  # (F, classes)
        var, overall = means.var(1, correction=0), means.mean(1)
        cv = var.sqrt() / overall.clamp(min=1e-30)
        best = means.max(1).values
        rest = (means.sum(1) - best) / max(nclass - 1, 1)
        sel = (best - rest) / (best + rest + 1e-12)
        pref = means.argmax(1)
        quiet = [i for i in range(len(overall)) if overall[i] < 0.01 * overall.mean()]
        order = [int(f) for f in torch.argsort(sel, descending=True, stable=True) if int(f) not in quiet]
        layers[c] = {
            "measured_at": where[c][1],
            "channels": means.shape[0],
            "class_means": means.tolist(),
            "mean": overall.tolist(),
            "variance": var.tolist(),
            "cv": cv.tolist(),
            "selectivity": sel.tolist(),
            "preferred_class": [classes[int(j)] for j in pref],
            "quiet": quiet,
            "quiet_threshold": float(0.01 * overall.mean()),
            "experts": order[:10],
        }
        ranking += [
            {"layer": c, "filter": f, "selectivity": float(sel[f]), "class": classes[int(pref[f])], "cv": float(cv[f])}
            for f in order
        ]
        _bars_png(sel.tolist(), out / "classnorms" / f"{c}.png", -1)
        figs.append(_fig(f"analysis/classnorms/{c}.png", f"{c}: selectivity of each filter{tag}", c))
        for i in range(cx.nf_of(means.shape[0])):
            _bars_png(means[i].tolist(), out / "classnorms" / c / f"f{i}.png", int(pref[i]))
            figs.append(
                _fig(f"analysis/classnorms/{c}/f{i}.png", f"{c} filter {i}: class-wise average norm{tag}", c, i)
            )
    ranking.sort(key=lambda r: -r["selectivity"])
    write_json(
        out / "classnorms.json",
        {
            "analysis": "classnorms",
            "params": {"layers": None, "norm": "l2", "at": "act", "experts": 10},
            **common,
            "norm": "l2",
            "scale": "L2 / sqrt(positions)",
            "classes": classes,
            "class_counts": counts.tolist(),
            "layers": layers,
            "experts": ranking[:10],
            "figures": figs,
        },
    )


def _write_topk(cx: _Analysed, acc: dict[str, dict]) -> None:
    """Each filter's top-k test images, their receptive-field patches and classes."""
    k, n, where, rf = cx.k, cx.n, cx.where, cx.rf
    test, x_all, labels, classes = cx.test, cx.x_all, cx.labels, cx.classes
    nclass, out, tag, common = cx.nclass, cx.out, cx.tag, cx.common
    layers, figs = {}, []
    for c, d in acc.items():
        mx, arg = torch.cat(d["max"]), torch.cat(d["arg"])
        h, w = d["hw"]
        field = rf[where[c][0]]
        recs = []
        for i in range(mx.shape[1]):
            top = mx[:, i].topk(min(k, n)).indices
            hist = torch.bincount(labels[top], minlength=nclass).tolist()
            locs = [list(divmod(int(arg[t, i]), w)) for t in top.tolist()]
            windows = [list(field.window(pi, pj, x_all.shape[2], x_all.shape[3])) for pi, pj in locs]
            recs.append(
                {
                    "filter": i,
                    "positions": top.tolist(),
                    "indices": top.tolist(),
                    "labels": labels[top].tolist(),
                    "scores": mx[top, i].tolist(),
                    "locations": locs,
                    "windows": windows,
                    "class_histogram": hist,
                    "top_class": classes[max(range(nclass), key=hist.__getitem__)],
                    "mean": float(mx[top, i].mean()),
                    "max": float(mx[top[0], i]),
                }
            )
            if i < cx.nf_of(mx.shape[1]):
                patches = [
                    test.images[t, :, a0:a1, b0:b1].numpy() for t, (a0, a1, b0, b1) in zip(top.tolist(), windows)
                ]
                _png([test.images[t].numpy() for t in top.tolist()], out / "topk" / c / f"f{i}.png")
                _png(patches, out / "topk" / c / f"f{i}_patches.png")
                figs.append(_fig(f"analysis/topk/{c}/f{i}.png", f"{c} filter {i}: top-{k} test images{tag}", c, i))
                figs.append(
                    _fig(f"analysis/topk/{c}/f{i}_patches.png", f"{c} filter {i}: receptive-field patches{tag}", c, i)
                )
        _bars_png([r["max"] for r in recs], out / "topk" / f"{c}.png", -1)
        figs.append(_fig(f"analysis/topk/{c}.png", f"{c}: the largest response of each filter{tag}", c))
        layers[c] = {
            "measured_at": where[c][0],
            "channels": mx.shape[1],
            "map_size": [h, w],
            "receptive_field": {"size": field.size, "jump": field.jump, "start": field.start},
            "filters": recs,
        }
    write_json(
        out / "topk.json",
        {
            "analysis": "topk",
            "params": {"layers": None, "k": k, "score": "max", "at": "bn"},
            **common,
            "layers": layers,
            "score": "max",
            "figures": figs,
        },
    )


def _write_actmax(cx: _Analysed) -> None:
    """A few steps of signed gradient ascent on the first conv layer's filters."""
    model, convs, where, x_all = cx.model, cx.convs, cx.where, cx.x_all
    out, tag, ident = cx.out, cx.tag, cx.ident
    # actmax: a few steps of gradient ascent on each filter's mean activation, all filters at once,
    # written as `convlens explain --method actmax --layer <first conv>` writes it
    figs = []
    first = convs[0]
    post = where[first][1]
    nf = cx.nf_of(model.get_submodule(first).out_channels)
    steps = 15
    with torch.enable_grad():
        img = torch.full((nf, *x_all.shape[1:]), 0.5, requires_grad=True)
        curve = []
        for _ in range(steps + 1):
            with TraceDict(model, [post], stop=True, detach=False) as td:
                model(img.clamp(0, 1))
            per = td[post].output[torch.arange(nf), torch.arange(nf)].mean((1, 2))
            curve.append(per.detach())
            if len(curve) > steps:
                break
            (grad,) = torch.autograd.grad(per.sum(), img)
            img.data += 0.05 * grad.sign()  # signed gradient ascent
    for i in range(nf):
        _png([img[i].detach().clamp(0, 1).numpy()], out / "actmax" / first / f"f{i}.png", 64)
        figs.append(
            _fig(f"analysis/actmax/{first}/f{i}.png", f"{first} filter {i}: activation maximisation{tag}", first, i)
        )
    _png([img[i].detach().clamp(0, 1).numpy() for i in range(nf)], out / "actmax" / first / "grid.png", 48)
    figs.append(_fig(f"analysis/actmax/{first}/grid.png", f"Activation maximisation of {nf} filter(s) of {first}{tag}"))
    _bars_png(curve[-1].tolist(), out / "actmax" / first / "objective.png", -1)
    figs.append(_fig(f"analysis/actmax/{first}/objective.png", f"Objective of each filter of {first} at the end{tag}"))
    np.savez_compressed(
        out / "actmax.npz", images=img.detach().numpy(), targets=np.arange(nf), objective=torch.stack(curve).numpy()
    )
    write_json(
        out / "actmax.json",
        {
            "analysis": "actmax",
            "params": {
                "layer": first,
                "target_kind": "filter",
                "steps": steps,
                "lr": 0.05,
                "param": "pixel",
                "decorrelate": False,
            },
            "split": None,
            "targets": [{"filter": i, "initial": float(curve[0][i]), "final": float(curve[-1][i])} for i in range(nf)],
            "optimise_seconds": 0.1,
            "arrays": "analysis/actmax.npz",
            **ident,
            "seconds": 0.1,
            "figures": figs,
        },
    )


def _evaluate(cx: _Analysed, layer: str | None = None, f: int | None = None):
    """Accuracy, loss, per-class accuracy, confusion and prediction counts on the test images, with
    filter ``f`` of ``layer`` silenced (nothing silenced without a layer); and the predictions."""
    model, where, x_all, labels, nclass = cx.model, cx.where, cx.x_all, cx.labels, cx.nclass

    def silence(o, name):
        o = o.clone()
        o[:, f] = 0
        return o

    with (
        torch.no_grad(),
        TraceDict(model, [where[layer][0]] if layer else [], edit_output=silence if layer else None),
    ):
        logits = model(x_all)
    pred = logits.argmax(1)
    cm = torch.bincount(labels * nclass + pred, minlength=nclass**2).view(nclass, nclass)
    return {
        "accuracy": float((pred == labels).double().mean()),
        "loss": float(torch.nn.functional.cross_entropy(logits, labels)),
        "per_class_accuracy": (cm.diag().double() / cm.sum(1).clamp(min=1)).tolist(),
        "confusion": cm.tolist(),
        "prediction_counts": cm.sum(0).tolist(),
    }, pred


def _write_ablate(cx: _Analysed) -> None:
    """Filter 0 of the first conv layer silenced, and the last layer's filters ranked."""
    model, convs, where, labels = cx.model, cx.convs, cx.where, cx.labels
    classes, out, tag, common = cx.classes, cx.out, cx.tag, cx.common
    first = convs[0]
    # ablate: silence filter 0 of the first conv block, and rank the last block's filters
    (b, pb), (a, pa) = _evaluate(cx), _evaluate(cx, first, 0)
    last = convs[-1]
    ranked = [_evaluate(cx, last, f)[0] for f in range(model.get_submodule(last).out_channels)]
    drop = [b["accuracy"] - r["accuracy"] for r in ranked]
    broken = torch.nonzero((pb == labels) & (pa != labels)).flatten()
    fixed = torch.nonzero((pb != labels) & (pa == labels)).flatten()
    switched = torch.nonzero((pb != labels) & (pa != labels) & (pa != pb)).flatten()
    both = torch.cat([broken, fixed, switched])
    figs = []
    for nm, m, div in (
        ("before", torch.tensor(b["confusion"]), False),
        ("diff", torch.tensor(a["confusion"]) - torch.tensor(b["confusion"]), True),
    ):
        plots.confusion(
            m.tolist(), classes, out / "ablate" / f"confusion_{nm}.png", title=f"confusion {nm}", diverging=div
        )
        figs.append(
            _fig(f"analysis/ablate/confusion_{nm}.png", f"Confusion matrix {nm} ablating {first} filter 0{tag}")
        )
    _bars_png([max(x, 0) for x in drop], out / "ablate" / f"{last}_rank.png", -1)
    figs.append(
        _fig(f"analysis/ablate/{last}_rank.png", f"{last}: accuracy lost when each filter is silenced alone{tag}", last)
    )
    write_json(
        out / "ablate.json",
        {
            "analysis": "ablate",
            "params": {"filters": {first: [0]}, "layers": None, "rank": True, "top": 3},
            **common,
            "classes": classes,
            "rank": {
                last: {
                    "silenced_at": where[last][0],
                    "method": "masked forward per filter",
                    "baseline": b["accuracy"],
                    "accuracy": [r["accuracy"] for r in ranked],
                    "drop": drop,
                    "per_class_drop": [
                        [x - y for x, y in zip(b["per_class_accuracy"], r["per_class_accuracy"])] for r in ranked
                    ],
                    "order": sorted(range(len(drop)), key=lambda f: -drop[f]),
                    "seconds": 0.1,
                    "seconds_per_filter": 0.01,
                }
            },
            "set": {
                "filters": {first: [0]},
                "chosen_by": "given",
                "before": b,
                "after": a,
                "diff": {
                    "accuracy": a["accuracy"] - b["accuracy"],
                    "per_class_accuracy": [y - x for x, y in zip(b["per_class_accuracy"], a["per_class_accuracy"])],
                    "confusion": (torch.tensor(a["confusion"]) - torch.tensor(b["confusion"])).tolist(),
                },
                "changed": {
                    "broken": broken.tolist(),
                    "fixed": fixed.tolist(),
                    "switched": switched.tolist(),
                    "before": pb[both].tolist(),
                    "after": pa[both].tolist(),
                },
            },
            "figures": figs,
        },
    )


def _write_errors(cx: _Analysed) -> None:
    """Example classifications and the most confident mistakes, from predictions.csv."""
    run, full_test, classes, nclass = cx.run, cx.full_test, cx.classes, cx.nclass
    out, tag, common = cx.out, cx.tag, cx.common
    from convlens.report.figures import pick_examples, pick_mistakes, read_predictions

    rows = read_predictions(run.path / "predictions.csv")
    ev = read_json(run.path / "eval.json")
    mistakes = pick_mistakes(rows, 8)
    _png([full_test.images[r["position"]].numpy() for r in pick_examples(rows, 16)], out / "errors" / "examples.png")
    _png([full_test.images[r["position"]].numpy() for r in mistakes], out / "errors" / "mistakes.png")
    cm = ev["confusion"]
    pairs = sorted(
        ((cm[i][j], i, j) for i in range(nclass) for j in range(nclass) if i != j and cm[i][j]), reverse=True
    )
    write_json(
        out / "errors.json",
        {
            "analysis": "errors",
            "params": {"examples": 16, "mistakes": 8},
            **common,
            "accuracy": ev["accuracy"],
            "per_class_accuracy": ev["per_class_accuracy"],
            "confusion": cm,
            "prediction_counts": [sum(r[j] for r in cm) for j in range(nclass)],
            "classes": classes,
            "n_wrong": sum(not r["correct"] for r in rows),
            "mistakes": [
                {
                    "position": r["position"],
                    "index": r["position"],
                    "label": classes[r["label"]],
                    "predicted": classes[r["pred"]],
                    "confidence": r["confidence"],
                    "correct": False,
                }
                for r in mistakes
            ],
            "confused_pairs": [{"true": classes[i], "predicted": classes[j], "count": c} for c, i, j in pairs[:5]],
            "figures": [
                _fig("analysis/errors/examples.png", f"Example classifications{tag}"),
                _fig("analysis/errors/mistakes.png", f"Most confident mistakes{tag}"),
            ],
        },
    )


def _write_saliency(cx: _Analysed) -> None:
    """The input gradient of the predicted class for the first six test images."""
    model, x_all, labels, classes = cx.model, cx.x_all, cx.labels, cx.classes
    out, tag, ident = cx.out, cx.tag, cx.ident
    # saliency: input gradient of the predicted class for a few images, as `convlens explain --method saliency`
    xs = x_all[:6].clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xs)
        pred = logits.argmax(1)
        logits.gather(1, pred[:, None]).sum().backward()
    probs = logits.detach().softmax(1)
    g = xs.grad.abs().amax(1)
    g = (g / (g.flatten(1).max(1).values[:, None, None] + 1e-9)).numpy()
    _png(list(x_all[:6].numpy()) + list(g), out / "saliency" / "images.png", layout=["chw"] * 6 + ["hw"] * len(g))
    np.savez_compressed(out / "saliency.npz", attributions=g, targets=pred.numpy())
    images = [{**_describe(classes, i, labels[i], probs[i]), "target": int(pred[i])} for i in range(6)]
    write_json(
        out / "saliency.json",
        {
            "analysis": "saliency",
            "params": {"target": "predicted", "heatmap": {"sign": "absolute", "scale": "per_image"}},
            "split": "test",
            "images": images,
            "arrays": "analysis/saliency.npz",
            **ident,
            "seconds": 0.1,
            "figures": [
                _fig(
                    "analysis/saliency/images.png",
                    f"Input images and the magnitude of the input gradient of their predicted class{tag}",
                )
            ],
        },
    )
