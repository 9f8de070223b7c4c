"""What differs between two run folders, read from their files: config, metrics, per-class
accuracy, confusion matrices, and per filter the top-k images and the class selectivity."""

from __future__ import annotations

import math
from typing import Any

from .. import runload
from ..run import Run


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def config_diff(a: Run, b: Run) -> list[dict[str, Any]]:
    """Every config key whose value differs (``meta``, which records when and how, left out)."""
    fa, fb = (flatten({k: v for k, v in r.config.to_dict().items() if k != "meta"}) for r in (a, b))
    missing = object()
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            rows.append({"key": key, "a": None if va is missing else va, "b": None if vb is missing else vb})
    return rows


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def run_numbers(run: Run) -> dict[str, Any]:
    rows = run.metrics()
    vals = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    ev = run.eval or {}
    return {
        "test_acc": ev.get("accuracy"),
        "test_loss": ev.get("loss"),
        "best_val_acc": max(vals) if vals else None,
        "final_train_acc": rows[-1].get("train_acc") if rows else None,
        "epochs": rows[-1].get("epoch") if rows else None,
        "params": (run.summary or {}).get("params"),
    }


def metric_deltas(a: Run, b: Run) -> dict[str, dict[str, Any]]:
    na, nb = run_numbers(a), run_numbers(b)
    return {k: {"a": na[k], "b": nb[k], "delta": _delta(na[k], nb[k])} for k in na}


def class_deltas(a: Run, b: Run) -> dict[str, Any] | None:
    """Per-class test accuracy and the confusion difference (b - a); None unless both runs were
    evaluated on the same classes."""
    ea, eb = a.eval, b.eval
    if not ea or not eb or ea["classes"] != eb["classes"]:
        return None
    per_class = [
        {"class": c, "a": x, "b": y, "delta": y - x}
        for c, x, y in zip(ea["classes"], ea["per_class_accuracy"], eb["per_class_accuracy"])
    ]
    diff = [[vb - va for va, vb in zip(ra, rb)] for ra, rb in zip(ea["confusion"], eb["confusion"])]
    return {"classes": ea["classes"], "per_class": per_class, "confusion_diff": diff}


def _read(run: Run, name: str) -> dict[str, Any] | None:
    from ..utils import read_json

    path = run.artifact(name).json
    return read_json(path) if path.is_file() else None


def _nan_to_none(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def filter_changes(a: Run, b: Run) -> dict[str, Any]:
    """Per layer present in both runs' ``topk`` / ``classnorms`` results with the same number of
    filters: per filter, the share of top-k images both runs chose and the selectivity change."""
    out: dict[str, Any] = {"layers": {}, "skipped": {}}
    ta, tb = _read(a, "topk"), _read(b, "topk")
    ca, cb = _read(a, "classnorms"), _read(b, "classnorms")
    names = set()
    for da, db in ((ta, tb), (ca, cb)):
        if da and db:
            names |= set(da["layers"]) | set(db["layers"])
    for layer in sorted(names):
        rows: dict[int, dict[str, Any]] = {}
        if ta and tb and layer in ta["layers"] and layer in tb["layers"]:
            fa, fb = ta["layers"][layer]["filters"], tb["layers"][layer]["filters"]
            if len(fa) != len(fb):
                out["skipped"][layer] = f"{len(fa)} filters here, {len(fb)} there"
                continue
            for x, y in zip(fa, fb):
                k = max(len(x["indices"]), len(y["indices"]), 1)
                rows.setdefault(x["filter"], {})["topk_overlap"] = len(set(x["indices"]) & set(y["indices"])) / k
        if ca and cb and layer in ca["layers"] and layer in cb["layers"]:
            sa, sb = ca["layers"][layer]["selectivity"], cb["layers"][layer]["selectivity"]
            if len(sa) != len(sb):
                out["skipped"][layer] = f"{len(sa)} filters here, {len(sb)} there"
                continue
            for f, (x, y) in enumerate(zip(sa, sb)):
                x, y = _nan_to_none(x), _nan_to_none(y)
                rows.setdefault(f, {}).update(selectivity_a=x, selectivity_b=y, selectivity_delta=_delta(x, y))
        if rows:
            out["layers"][layer] = [{"filter": f, **rows[f]} for f in sorted(rows)]
    if not (ta and tb) and not (ca and cb):
        out["note"] = "run `convlens analyze RUN topk classnorms` on both runs to compare their filters"
    return out


def representation(a: Run, b: Run, images: int) -> dict[str, Any]:
    """Linear CKA per shared layer on the first ``images`` test images of ``a``'s data; skipped
    (with the reason) when the runs do not take the same data."""
    from ..data import batches
    from .cka import layer_cka

    da, db = a.dataset, b.dataset
    if da["name"] != db["name"] or list(da["shape"]) != list(db["shape"]):
        return {"skipped": f"the runs take different inputs ({da['name']} {da['shape']} vs {db['name']} {db['shape']})"}
    test = runload.load_data(a).test
    sub = test.take(list(range(min(images, len(test)))))
    x = next(batches(sub, len(sub)))[0]
    ma, mb = runload.load_model(a, a.eval_checkpoint), runload.load_model(b, b.eval_checkpoint)
    return layer_cka(ma, mb, x)


def compare_pair(a: Run, b: Run, images: int = 500, cka: bool = True) -> dict[str, Any]:
    return {
        "a": str(a.path),
        "b": str(b.path),
        "config": config_diff(a, b),
        "metrics": metric_deltas(a, b),
        "classes": class_deltas(a, b),
        "filters": filter_changes(a, b),
        "cka": representation(a, b, images) if cka else {"skipped": "not asked for"},
    }
