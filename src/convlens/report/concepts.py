"""The report's tables for concept explanations, class atlases and the faithfulness tests.

Their figures come through the generic section of every artifact (:mod:`.analyses`); this module
adds the titles, the order and one table renderer each, read defensively from the layout that
``explain/concept_outputs.py``, ``analyses/atlas.py`` and ``analyses/faithfulness.py`` write.
Importing it registers them.
"""

from __future__ import annotations

from typing import Any

from .analyses import ORDER, TITLES, _num, class_name, filter_link, layers_of, renderer
from .html import Table, pct

TITLES.update(
    {
        "concepts": (
            "Concepts",
            "What the network saw, in its own filters: for each image, the filters of a layer ranked by their "
            "contribution to the class score (activation \u00d7 gradient), each with its map on the image and the "
            "dataset patches it responds to most.",
        ),
        "atlas": (
            "Class atlas",
            "For each class, the filters that carry its score across the data set: the largest mean contribution "
            "over its correctly classified images.",
        ),
        "faithfulness": (
            "Do the explanations explain?",
            "Every attribution method tested twice: its maps as the layers are re-initialised from the top (a map "
            "that does not change does not explain the weights), and the class probability as pixels are deleted "
            "or inserted in the map's order (a faithful order beats a random one).",
        ),
    }
)
for _name in ("concepts", "atlas", "faithfulness"):
    if _name not in ORDER:
        ORDER.append(_name)


def _share(v: Any) -> str:
    return pct(v) if _num(v) is not None else ""


def _yes(v: Any) -> Any:
    if not isinstance(v, bool):
        return ""
    return {"text": "yes" if v else "no", "cls": "good" if v else "bad"}


@renderer("concepts")
def concepts_table(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    layer = str(params.get("layer", ""))
    rows = []
    for d in doc.get("images") or []:
        if not isinstance(d, dict):
            continue
        tops = [
            f"f{c.get('filter')} {c.get('contribution', 0):+.3g}"
            + (f" ({_share(c.get('share'))})" if c.get("share") else "")
            for c in d.get("concepts") or []
            if isinstance(c, dict) and _num(c.get("contribution")) is not None
        ]
        rows.append(
            [
                d.get("index"),
                class_name(classes, d.get("label")),
                class_name(classes, d.get("predicted")),
                class_name(classes, d.get("target")),
                ", ".join(tops),
                d.get("total"),
                d.get("logit"),
                d.get("remainder"),
            ]
        )
    if not rows:
        return []
    cols = [
        "image",
        "class",
        "predicted",
        "explained class",
        f"top {layer} filters (contribution, share of the sum)",
        "sum of all contributions",
        "logit",
        "logit minus sum (biases above the layer)",
    ]
    return [Table(cols, rows, f"The {doc.get('split') or 'test'} images explained", collapsed=len(rows) > 12)]


@renderer("atlas")
def atlas_table(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    rows = []
    for layer, info in layers_of(doc).items():
        for e in info.get("classes") or []:
            if not isinstance(e, dict):
                continue
            filters = [fi for fi in e.get("filters") or [] if isinstance(fi, dict)]
            first = filters[0] if filters else {}
            rest = ", ".join(
                f"f{fi.get('filter')} {fi.get('mean_contribution', 0):.3g}"
                for fi in filters[1:]
                if _num(fi.get("mean_contribution")) is not None
            )
            rows.append(
                [
                    layer,
                    e.get("class"),
                    e.get("correct"),
                    filter_link(layer, first.get("filter")) if first else "",
                    first.get("mean_contribution", ""),
                    _share(first.get("share")),
                    rest,
                ]
            )
    if not rows:
        return []
    cols = ["layer", "class", "correct images", "top filter", "mean contribution", "share of the class score", "next"]
    return [Table(cols, rows, "The filters that carry each class", collapsed=len(rows) > 20)]


@renderer("faithfulness")
def faithfulness_tables(doc: dict[str, Any], classes: list[str]) -> list[Table]:
    methods = doc.get("methods") if isinstance(doc.get("methods"), dict) else {}
    rand = doc.get("random_order") if isinstance(doc.get("random_order"), dict) else {}
    rows, steps = [], []
    for m, e in methods.items():
        if not isinstance(e, dict):
            continue
        sp, ss = e.get("spearman") or [None], e.get("ssim") or [None]
        rows.append(
            [
                m,
                e.get("mean_spearman"),
                sp[-1],
                ss[-1],
                e.get("below_from") or "never",
                _yes(e.get("changes_with_weights")),
                e.get("deletion_morf"),
                e.get("deletion_lerf"),
                e.get("insertion_morf"),
                _yes(e.get("ordering_beats_random")),
            ]
        )
        steps.append([m, *sp])
    if not rows:
        return []
    rows.append(["random order", "", "", "", "", "", rand.get("deletion"), "", rand.get("insertion"), ""])
    cols = [
        "method",
        "Spearman, mean over the cascade",
        "Spearman, all layers random",
        "SSIM, all layers random",
        "below the threshold from",
        "changes with the weights",
        "deletion area, most relevant first (lower is better)",
        "deletion area, least relevant first",
        "insertion area (higher is better)",
        "order beats random",
    ]
    base = doc.get("baseline") if isinstance(doc.get("baseline"), dict) else {}
    values = ", ".join(f"{v:.3g}" for v in base.get("values") or [] if _num(v) is not None)
    caption = (
        f"Sanity and faithfulness of every method ({len(doc.get('images') or [])} images; deleted pixels become "
        f"the baseline: {base.get('kind', '?')} {values})"
    )
    layers = [str(n) for n in doc.get("layers_randomised") or []]
    per_step = Table(
        ["method", "trained", *[f"-{n}" for n in layers]],
        steps,
        "Spearman rank correlation with the trained model's maps as each layer is re-initialised from the top",
        collapsed=True,
    )
    return [Table(cols, rows, caption), per_step]
