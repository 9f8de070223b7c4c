"""A run folder of a large network for the report, written without a network or data set.

:func:`fabricate` writes a config and the analysis files ``convlens analyze`` writes for a network
of ``layers`` x ``filters`` filters: ``topk`` (each filter's top ``k`` images of a small random
split, in the JSON and ``.npz`` layout of ``analyses/topk.py``, its per-filter figures listed as
pending, drawn when first needed) and ``stats`` (per-filter mean and max). The report reads them
as it reads a real run's; the figures it draws from them are real drawings of those arrays.
``benchmarks/bench_report_scale.py`` measures the report of one; ``tests/test_report_scale.py``
checks its pages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from convlens.run import Layout
from convlens.utils import write_json

CLASSES = ["zero", "one", "two", "three"]


def layer_name(i: int) -> str:
    return f"stage{i // 4 + 1}.{i % 4}.conv"


def fabricate(root: Path, layers: int = 20, filters: int = 512, k: int = 4, images: int = 64, side: int = 16) -> Path:
    """Write the run folder ``root`` (see the module's docstring); returns it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = {
        "name": "scale",
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"preset": "tiny"},
        "train": {"epochs": 1},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (images, 3, side, side), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), images)
    rf = {"size": 7, "jump": 2, "start": -2}
    names = [layer_name(i) for i in range(layers)]
    art = Layout(root).artifact("topk")
    arrays = art.save_arrays(images=pictures, positions=np.arange(images))
    info, figures = {}, []
    for name in names:
        recs = []
        for f in range(filters):
            pos = sorted(rng.choice(images, k, replace=False).tolist())
            scores = sorted(rng.random(k).tolist(), reverse=True)
            locs = [[int(rng.integers(0, side // 2)), int(rng.integers(0, side // 2))] for _ in range(k)]
            hist = np.bincount(labels[pos], minlength=len(CLASSES))
            recs.append(
                {
                    "filter": f,
                    "positions": pos,
                    "indices": pos,
                    "labels": labels[pos].tolist(),
                    "scores": scores,
                    "locations": locs,
                    "windows": [[max(2 * i - 2, 0), 2 * i + 5, max(2 * j - 2, 0), 2 * j + 5] for i, j in locs],
                    "class_histogram": hist.tolist(),
                    "top_class": CLASSES[int(hist.argmax())],
                    "mean": float(np.mean(scores)),
                    "max": float(scores[0]),
                }
            )
            for kind in ("", "_patches"):
                figures.append(
                    {
                        "path": f"analysis/topk/{name}/f{f}{kind}.png",
                        "caption": f"{name} filter {f}: top images{kind.replace('_', ' ')}",
                        "layer": name,
                        "filter": f,
                        "pending": True,
                    }
                )
        info[name] = {
            "measured_at": name,
            "channels": filters,
            "map_size": [side // 2, side // 2],
            "receptive_field": rf,
            "filters": recs,
        }
    art.write(
        {
            "analysis": "topk",
            "params": {"k": k, "score": "max"},
            "split": "test",
            "score": "max",
            "classes": CLASSES,
            "layers": info,
            "arrays": arrays,
            "figures": figures,
        }
    )
    stats = {
        name: {
            "measured_at": name,
            "channels": filters,
            "mean": rng.random(filters).round(4).tolist(),
            "max": rng.random(filters).round(4).tolist(),
        }
        for name in names
    }
    write_json(
        Layout(root).artifact("stats").json, {"analysis": "stats", "params": {}, "split": "test", "layers": stats}
    )
    return root
