"""Run folders for the report tests: tiny real runs, and analyses written the way the run-folder
contract says (``analysis/<name>.json`` with a ``figures`` list, per-filter figures named
``analysis/<name>/<layer>/f<index>[_<kind>].png``).

The analyses here are small honest computations on the real trained model (weights, activation
statistics, class-wise norms, top-k images and patches, a few steps of activation maximisation,
one ablation, an input-gradient map), so the figures show real content; they stand in for the
dataset-level analyses and explanations while testing the report, and their JSON layout is the
one the report's table renderers read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config

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
HOSTILE_CLASSES = ["<script>window.__pwned = 'class'</script>", "<img src=x onerror=\"window.__pwned='img'\">", "cat & dog"]
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
        rename_classes(dst, HOSTILE_CLASSES + names[len(HOSTILE_CLASSES):])
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


def _to_rgb(img) -> np.ndarray:
    a = plots.to_display(np.asarray(img))
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    return (a * 255).round().astype(np.uint8)


def _png(images, path: Path, size: int = 48) -> None:
    """Images side by side, each scaled (nearest neighbour) to ``size`` pixels high."""
    from PIL import Image

    tiles = []
    for img in images:
        a = _to_rgb(img)
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
    top = max(max(values), 1e-9)
    for i, v in enumerate(values):
        x = 4 + 12 * i
        draw.rectangle([x, h - 4 - int((h - 8) * v / top), x + bw - 1, h - 4], fill="#dd8452" if i == highlight else "#4c72b0")
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _relu_after(model, layer: str) -> str:
    names = [n for n, _ in model.named_children()]
    for n in names[names.index(layer) + 1 :]:
        if n.startswith("relu"):
            return n
    return layer


def _fig(rel: str, caption: str, layer: str | None = None, index: int | None = None, kind: str | None = None) -> dict:
    e = {"path": rel, "caption": caption}
    if layer is not None:
        e.update(layer=layer, filter=index)
    if kind:
        e["kind"] = kind
    return e


def write_analyses(run_dir: Path, k: int = 6, max_filters: int | None = None, caption_tag: str = "",
                   limit: int | None = None) -> list[str]:  # fmt: skip
    """Write filters, stats, classnorms, topk, actmax, ablate, errors and saliency analyses
    (over ``limit`` evenly spaced test images, or all)."""
    run = Run(run_dir)
    model = run.load_model()
    full_test = test = run.load_data().test
    if limit is not None and limit < len(test):  # evenly spaced: a test split may be sorted by class
        test = test.take(torch.linspace(0, len(test) - 1, limit).long())
    classes = run.classes
    convs = conv_layers(model)
    relus = {c: _relu_after(model, c) for c in convs}
    rf = {}
    from convlens.models import receptive_fields

    rf = receptive_fields(model)
    n = len(test)
    x_all = test.images.float() / 255
    nclass = len(classes)
    acc: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad(), TraceDict(model, list(relus.values())) as td:
        for s in range(0, n, 500):
            model(x_all[s : s + 500])
            for c, r in relus.items():
                a = td[r].output  # (B, F, H, W)
                flat = a.flatten(2)
                mx, arg = flat.max(2)
                d = acc.setdefault(c, {"max": [], "arg": [], "sum": 0, "sq": 0, "active": 0, "norm": []})
                d["max"].append(mx)
                d["arg"].append(arg)
                d["sum"] = d["sum"] + flat.sum((0, 2))
                d["sq"] = d["sq"] + (flat**2).sum((0, 2))
                d["active"] = d["active"] + (flat > 0).float().sum((0, 2))
                d["norm"].append(flat.norm(dim=2))
                d["hw"] = a.shape[2:]
    out = run.analysis_dir
    labels = test.labels
    tag = caption_tag

    # filters ---------------------------------------------------------------------------------
    figs = []
    for c in convs:
        w = model.get_submodule(c).weight.detach()
        nf = w.shape[0] if max_filters is None else min(w.shape[0], max_filters)
        kern = [(w[i].mean(0) - w[i].mean(0).min()) / (w[i].mean(0).max() - w[i].mean(0).min() + 1e-9) for i in range(w.shape[0])]
        _png([t.numpy() for t in kern], out / "filters" / f"{c}.png", 32)
        figs.append(_fig(f"analysis/filters/{c}.png", f"{c}: all filters, each on its own scale{tag}"))
        for i in range(nf):
            _png([kern[i].numpy()], out / "filters" / c / f"f{i}.png", 64)
            figs.append(_fig(f"analysis/filters/{c}/f{i}.png", f"{c} filter {i}: weights{tag}", c, i))
    write_json(out / "filters.json", {"analysis": "filters", "params": {"layers": convs, "scale": "per filter"}, "figures": figs})

    # stats -------------------------------------------------------------------------------------
    layers, figs = {}, []
    for c, d in acc.items():
        positions = n * d["hw"][0] * d["hw"][1]
        mean = d["sum"] / positions
        std = (d["sq"] / positions - mean**2).clamp(min=0).sqrt()
        active = d["active"] / positions
        mx = torch.cat(d["max"]).max(0).values
        layers[c] = {"channels": len(mean), "mean": mean.tolist(), "std": std.tolist(), "active": active.tolist(),
                     "max": mx.tolist(), "dead": [i for i in range(len(mean)) if active[i] == 0]}  # fmt: skip
        _bars_png(active.tolist(), out / "stats" / f"{c}_active.png", -1)
        figs.append(_fig(f"analysis/stats/{c}_active.png", f"{c}: how often each filter is active{tag}"))
    write_json(out / "stats.json", {"analysis": "stats", "params": {"threshold": 0.0}, "split": "test",
                                    "thresholds": {"active": 0.0}, "layers": layers, "figures": figs})  # fmt: skip

    # classnorms --------------------------------------------------------------------------------
    layers, figs, experts = {}, [], []
    for c, d in acc.items():
        norms = torch.cat(d["norm"])  # (N, F)
        per_class = torch.stack([norms[labels == j].mean(0) for j in range(nclass)], 1)  # (F, classes)
        per_class = per_class / (per_class.sum(1, keepdim=True) + 1e-9)
        var = per_class.var(1)
        sel = (per_class.max(1).values - per_class.mean(1)) / (per_class.max(1).values + per_class.mean(1) + 1e-9)
        layers[c] = {"norms": per_class.tolist(), "variance": var.tolist(), "selectivity": sel.tolist()}
        nf = per_class.shape[0] if max_filters is None else min(per_class.shape[0], max_filters)
        for i in range(nf):
            best = int(per_class[i].argmax())
            _bars_png(per_class[i].tolist(), out / "classnorms" / c / f"f{i}.png", best)
            figs.append(_fig(f"analysis/classnorms/{c}/f{i}.png", f"{c} filter {i}: class-wise average norm{tag}", c, i))
            experts.append({"layer": c, "filter": i, "class": best, "selectivity": float(sel[i]), "variance": float(var[i])})
    experts.sort(key=lambda e: -e["variance"])
    write_json(out / "classnorms.json", {"analysis": "classnorms", "params": {"norm": "l2"}, "split": "test",
                                         "layers": layers, "experts": experts[:10], "figures": figs})  # fmt: skip

    # topk ----------------------------------------------------------------------------------------
    layers, figs = {}, []
    for c, d in acc.items():
        mx, arg = torch.cat(d["max"]), torch.cat(d["arg"])
        h, w = d["hw"]
        field = rf[relus[c]]
        recs = []
        nf = mx.shape[1] if max_filters is None else min(mx.shape[1], max_filters)
        for i in range(nf):
            top = mx[:, i].topk(k).indices
            hist = torch.bincount(labels[top], minlength=nclass).tolist()
            patches = []
            for t in top.tolist():
                pi, pj = divmod(int(arg[t, i]), w)
                t0, t1, l0, l1 = field.window(pi, pj, x_all.shape[2], x_all.shape[3])
                patches.append(test.images[t, :, t0:t1, l0:l1].numpy())
            _png([test.images[t].numpy() for t in top.tolist()], out / "topk" / c / f"f{i}.png")
            _png(patches, out / "topk" / c / f"f{i}_patches.png")
            figs.append(_fig(f"analysis/topk/{c}/f{i}.png", f"{c} filter {i}: top-{k} test images{tag}", c, i))
            figs.append(_fig(f"analysis/topk/{c}/f{i}_patches.png", f"{c} filter {i}: receptive-field patches{tag}", c, i, "patches"))
            recs.append({"filter": i, "top": top.tolist(), "class_histogram": hist, "mean": float(mx[top, i].mean()),
                         "max": float(mx[top[0], i])})  # fmt: skip
        layers[c] = {"receptive_field": {"size": field.size, "jump": field.jump, "start": field.start}, "filters": recs}
    write_json(out / "topk.json", {"analysis": "topk", "params": {"k": k, "response": "max"}, "split": "test",
                                   "layers": layers, "figures": figs})  # fmt: skip

    # actmax: a few steps of gradient ascent on each filter's mean activation, all filters at once
    figs = []
    first = convs[0]
    with torch.enable_grad():
        nf = model.get_submodule(first).out_channels if max_filters is None else max_filters
        img = torch.full((nf, *x_all.shape[1:]), 0.5, requires_grad=True)
        for _ in range(15):
            with TraceDict(model, [relus[first]], stop=True, detach=False) as td:
                model(img.clamp(0, 1))
            obj = td[relus[first]].output[torch.arange(nf), torch.arange(nf)].mean()
            (grad,) = torch.autograd.grad(obj, img)
            img.data += 0.05 * grad.sign()  # signed gradient ascent
    for i in range(nf):
        _png([img[i].detach().clamp(0, 1).numpy()], out / "actmax" / first / f"f{i}.png", 64)
        figs.append(_fig(f"analysis/actmax/{first}/f{i}.png", f"{first} filter {i}: activation maximisation{tag}", first, i))
    write_json(out / "actmax.json", {"analysis": "actmax", "params": {"steps": 15, "lr": 0.05}, "figures": figs})

    # ablate: silence filter 0 of the first conv block -------------------------------------------
    def evaluate(edit=None):
        with torch.no_grad(), TraceDict(model, [relus[first]], edit_output=edit):
            pred = model(x_all).argmax(1)
        cm = torch.bincount(labels * nclass + pred, minlength=nclass**2).view(nclass, nclass)
        return pred, cm, (cm.diag().float() / cm.sum(1).clamp(min=1)).tolist(), float((pred == labels).float().mean())

    def silence(o, name):
        o = o.clone()
        o[:, 0] = 0
        return o

    p0, cm0, pc0, a0 = evaluate()
    p1, cm1, pc1, a1 = evaluate(silence)
    figs = []
    for nm, m, div in (("before", cm0, False), ("difference", cm1 - cm0, True)):
        plots.confusion(m.tolist(), classes, out / "ablate" / f"confusion_{nm}.png", title=f"confusion {nm}", diverging=div)
        figs.append(_fig(f"analysis/ablate/confusion_{nm}.png", f"Confusion matrix {nm} ablating {first} filter 0{tag}"))
    write_json(out / "ablate.json", {
        "analysis": "ablate", "params": {"filters": {first: [0]}}, "split": "test", "filters": {first: [0]},
        "before": {"accuracy": a0, "per_class_accuracy": pc0}, "after": {"accuracy": a1, "per_class_accuracy": pc1},
        "changed": torch.nonzero(p0 != p1).flatten().tolist(), "figures": figs})  # fmt: skip

    # errors --------------------------------------------------------------------------------------
    from convlens.report.figures import pick_examples, pick_mistakes, read_predictions

    rows = read_predictions(run.path / "predictions.csv")
    _png([full_test.images[r["position"]].numpy() for r in pick_examples(rows, 16)], out / "errors" / "examples.png")
    _png([full_test.images[r["position"]].numpy() for r in pick_mistakes(rows, 8)], out / "errors" / "mistakes.png")
    write_json(out / "errors.json", {"analysis": "errors", "params": {"n": 16}, "split": "test", "figures": [
        _fig("analysis/errors/examples.png", f"Example classifications{tag}"),
        _fig("analysis/errors/mistakes.png", f"Most confident mistakes{tag}")]})  # fmt: skip

    # saliency: input gradient of the true class for a few images ---------------------------------
    xs = x_all[:6].clone().requires_grad_(True)
    with torch.enable_grad():
        model(xs).gather(1, labels[:6, None]).sum().backward()
    g = xs.grad.abs().amax(1)
    g = (g / (g.flatten(1).max(1).values[:, None, None] + 1e-9)).numpy()
    _png(list(x_all[:6].numpy()) + list(g), out / "saliency" / "grid.png")
    np.savez_compressed(out / "saliency.npz", saliency=g)
    write_json(out / "saliency.json", {"analysis": "saliency", "params": {"images": list(range(6)), "scale": "per image"},
                                       "split": "test", "figures": [_fig("analysis/saliency/grid.png",
                                       f"Input images and the magnitude of the input gradient of their true class{tag}")]})  # fmt: skip
    return ["filters", "stats", "classnorms", "topk", "actmax", "ablate", "errors", "saliency"]
