"""Per-filter figures, drawn when first needed.

Three analyses have a figure for every filter: topk (its top images, and the receptive-field
patches under their maximum), filters (its weights per input channel) and classnorms (its mean
norm per class). A CIFAR run has about 200 of them, and drawing them took more than half of
``convlens analyze``'s time, so ``analyze`` lists them in the analysis JSON (path, caption, layer,
filter and ``"pending": true``) and writes what they are drawn from: the JSON's own numbers, and
the ``.npz`` beside it (``"arrays"``) for topk's top images and the filters' weights.
:func:`draw_pending` draws the listed figures whose file is missing, at the listed paths: the
report does before its filter browser shows them, and a notebook or script calls it to have the
files::

    from convlens.analyses.perfilter import draw_pending
    draw_pending("runs/a")

Nothing here imports torch: the report draws them without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

PENDING = "pending"


def pending(doc: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    """The pending figure entries of an analysis JSON whose file is not in the run folder."""
    figs = doc.get("figures")
    return [
        e
        for e in (figs if isinstance(figs, list) else [])
        if isinstance(e, dict)
        and e.get(PENDING)
        and isinstance(e.get("path"), str)
        and not (root / e["path"]).is_file()
    ]


def draw_pending(
    root: str | Path,
    docs: Iterable[dict[str, Any]] | None = None,
    progress: bool | None = None,
    layers: Iterable[str] | None = None,
) -> list[Path]:
    """Draw every pending per-filter figure of the run folder ``root`` whose file is missing (of
    ``docs``, the analysis JSONs, when given; else of every ``analysis/*.json``); returns the files
    drawn. ``layers``: only those of these layers (a network of thousands of filters draws the
    layers someone looks at). ``progress``: a bar per layer on a terminal (see
    :func:`convlens.plots.progress`)."""
    from ..run.layout import Layout
    from ..utils import read_json

    root = Path(root)
    if docs is None:
        docs = [read_json(p) for p in Layout(root).artifacts()]
    wanted = None if layers is None else set(layers)
    drawn: list[Path] = []
    for doc in docs:
        draw = DRAWERS.get(str(doc.get("analysis"))) if isinstance(doc, dict) else None
        todo = pending(doc, root) if draw is not None else []
        if wanted is not None:
            todo = [e for e in todo if str(e.get("layer")) in wanted]
        if todo:
            draw(doc, root, todo, progress)
            drawn += [root / e["path"] for e in todo]
    return drawn


def _by_layer(entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault(str(e["layer"]), []).append(e)
    return out


def _arrays(doc: dict[str, Any], root: Path) -> Any:
    from ..run.layout import Artifact

    return np.load(Artifact.arrays_of(doc, root))


# ----------------------------------------------------------------------------------------------
# topk


def _span(start: int, size: int, side: int) -> tuple[int, int]:
    """The part of the window ``[start, start + size)`` a patch shows along an image side of
    ``side`` pixels: all of it when it fits, else ``side`` pixels of it that hold as much of the
    image as the window does (a window larger than the image would be mostly grey padding)."""
    if size <= side:
        return start, start + size
    top = min(max(start, 0), start + size - side)
    return top, top + side


def window_patch(image: np.ndarray, rf: dict[str, int], i: int, j: int, fill: float = 0.5) -> np.ndarray:
    """The receptive-field window (``rf`` as the JSON records it, ``ReceptiveField.to_dict``:
    size, jump, start and the ``_x`` ones for columns) of output (i, j), cut from a (C, H, W) float
    image; the part outside the image (padding) is ``fill`` grey, so every patch of a layer has the
    same size. A window larger than the image (deep layers: ResNet-50's last stage sees 1,000+
    pixels) is cut to the image's side, keeping every image pixel the window holds, so a patch is
    never larger than the image itself. The one implementation: ``topk.patch`` calls it with a
    ``ReceptiveField``."""
    c, h, w = image.shape
    top, bottom = _span(rf["start"] + i * rf["jump"], rf["size"], h)
    left, right = _span(
        rf.get("start_x", rf["start"]) + j * rf.get("jump_x", rf["jump"]), rf.get("size_x", rf["size"]), w
    )
    out = np.full((c, bottom - top, right - left), fill, dtype=np.float32)
    t0, t1, l0, l1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if t1 > t0 and l1 > l0:
        out[:, t0 - top : t1 - top, l0 - left : l1 - left] = image[:, t0:t1, l0:l1]
    return out


def topk_images(doc: dict[str, Any], root: Path) -> tuple[np.ndarray, dict[int, int]]:
    """topk's stored top images (uint8, N x C x H x W) and the row of each split position. The
    images are a read-only memory map where they are stored uncompressed (as topk writes them):
    a figure reads its own k images, not the whole array."""
    from ..run.layout import Artifact
    from ..run.npz import mapped

    path = Artifact.arrays_of(doc, root)  # checked against the JSON once
    with np.load(path) as z:
        positions = z["positions"]
        images = mapped(path, "images")
        if images is None:  # written compressed
            images = z["images"]
    return images, {int(p): i for i, p in enumerate(positions)}


def topk_figure(
    doc: dict[str, Any], layer: str, fi: dict[str, Any], imgs: np.ndarray, path: Path, patches: bool
) -> Path:
    """One filter's top images (``fi``: its record in the JSON; ``imgs`` float (k, C, H, W)), each
    boxed where the maximum was, or (``patches``) the receptive-field patches under the maximum."""
    from .. import plots

    info, classes = doc["layers"][layer], doc["classes"]
    f, rf = fi["filter"], info["receptive_field"]
    if patches:
        size = f"{rf['size']}x{rf.get('size_x', rf['size'])}"
        if rf["size"] > imgs.shape[2] or rf.get("size_x", rf["size"]) > imgs.shape[3]:
            size += f" (cut to the {imgs.shape[2]}x{imgs.shape[3]} image)"
        return plots.mosaic(
            [window_patch(imgs[n], rf, *ij) for n, ij in enumerate(fi["locations"])],
            path,
            layout="chw",
            cols=5,  # a grid, not one long row
            tile_inches=0.6,
            titles=[classes[c] for c in fi["labels"]],
            suptitle=f"{layer} filter {f}: {size} input patches under the maximum",
        )
    where = f"{doc['score']} of {info['measured_at']}"
    return plots.mosaic(
        list(imgs),
        path,
        layout="chw",
        cols=5,
        titles=[f"{classes[c]} {s:.3g}" for c, s in zip(fi["labels"], fi["scores"])],
        boxes=[tuple(w) for w in fi["windows"]] if fi["windows"] else None,
        suptitle=f"{layer} filter {f}: top {len(fi['positions'])} {doc['split']} images ({where}); "
        "box: receptive field of the maximum",
    )


def _draw_topk(doc: dict[str, Any], root: Path, entries: list[dict[str, Any]], progress: bool | None) -> None:
    from .. import plots

    images, row = topk_images(doc, root)
    for layer, items in _by_layer(entries).items():
        filters = {fi["filter"]: fi for fi in doc["layers"][layer]["filters"]}
        for e in plots.progress(items, f"drawing topk {layer}", progress):
            fi = filters[int(e["filter"])]
            imgs = images[[row[p] for p in fi["positions"]]].astype(np.float32) / 255
            path = root / e["path"]
            topk_figure(doc, layer, fi, imgs, path, patches=path.stem.endswith("_patches"))


# ----------------------------------------------------------------------------------------------
# filters


def weights_shown(w: np.ndarray, scale: str) -> tuple[np.ndarray, str]:
    """Conv weights (N, C, kh, kw) mapped to [0, 1] for drawing, 0 at mid-grey, on one scale for
    the layer (``scale`` "shared") or one per filter; and the sentence that says which."""
    w = np.asarray(w, dtype=np.float32)
    if scale == "shared":
        m = np.full(len(w), np.abs(w).max() if w.size else 0.0, dtype=np.float32)
        how = f"shared scale: grey 0, white +{float(m[0]):.3g}, black -{float(m[0]):.3g}"
    else:
        m = np.abs(w.reshape(len(w), -1)).max(1) if w.size else np.zeros(len(w), dtype=np.float32)
        how = "each filter on its own scale (grey 0, white/black its largest |weight|)"
    # an all-zero filter stays grey
    return np.clip(0.5 + 0.5 * w / np.maximum(m, 1e-12).reshape(-1, 1, 1, 1), 0, 1), how


def filter_figure(shown: np.ndarray, i: int, layer: str, how: str, rgb: bool, max_channels: int, path: Path) -> Path:
    """Filter ``i``'s weights (``shown`` from :func:`weights_shown`): the RGB composite and each
    colour channel (``rgb``), else its first ``max_channels`` input channels."""
    from .. import plots

    c = shown.shape[1]
    if rgb:
        tiles, titles = [shown[i]] + [shown[i, j] for j in range(c)], ["RGB", "R", "G", "B"]
        layouts = ["chw"] + ["hw"] * c
    else:
        cols = min(c, max_channels)
        tiles, titles = [shown[i, j] for j in range(cols)], [f"in {j}" for j in range(cols)]
        layouts = ["hw"] * cols
    return plots.mosaic(
        tiles,
        path,
        layout=layouts,
        cols=min(8, len(tiles)),
        titles=titles,
        tile_inches=0.6,
        suptitle=f"{layer} filter {i} ({shown.shape[2]}x{shown.shape[3]}); {how}",
    )


def _draw_filters(doc: dict[str, Any], root: Path, entries: list[dict[str, Any]], progress: bool | None) -> None:
    from .. import plots

    with _arrays(doc, root) as z:
        weights = {layer: z[layer] for layer in _by_layer(entries)}
    for layer, items in _by_layer(entries).items():
        shown, how = weights_shown(weights[layer], doc["scale"])
        rgb = bool(doc["layers"][layer].get("rgb"))
        for e in plots.progress(items, f"drawing filters {layer}", progress):
            i = int(e["filter"])
            filter_figure(shown, i, layer, how, rgb, int(doc["params"]["max_channels"]), root / e["path"])


# ----------------------------------------------------------------------------------------------
# classnorms


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def classnorms_figure(doc: dict[str, Any], layer: str, f: int, path: Path) -> Path:
    """Filter ``f``'s mean norm per class; its preferred class in orange, an absent class (NaN)
    without a bar."""
    from .. import plots

    info, classes = doc["layers"][layer], doc["classes"]
    pref = None if info["preferred_class"][f] is None else classes.index(info["preferred_class"][f])
    var, si = _fmt(info["variance"][f], ".3g"), _fmt(info["selectivity"][f], ".2f")
    return plots.bar_chart(
        [float("nan") if v is None else v for v in info["class_means"][f]],
        classes,
        path,
        title=f"{layer} filter {f}: var {var}, SI {si}" + (" (nearly silent)" if f in info["quiet"] else ""),
        ylabel=f"mean {doc['norm'].upper()} norm",
        highlight=pref,
    )


def _draw_classnorms(doc: dict[str, Any], root: Path, entries: list[dict[str, Any]], progress: bool | None) -> None:
    from .. import plots

    for layer, items in _by_layer(entries).items():
        for e in plots.progress(items, f"drawing classnorms {layer}", progress):
            classnorms_figure(doc, layer, int(e["filter"]), root / e["path"])


DRAWERS: dict[str, Callable[[dict[str, Any], Path, list[dict[str, Any]], bool | None], None]] = {
    "topk": _draw_topk,
    "filters": _draw_filters,
    "classnorms": _draw_classnorms,
}
