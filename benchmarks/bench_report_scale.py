"""The report of a network of 10,240 filters: build time, page weight, and drawing one layer.

The run folder is fabricated (``tests/report_scale.py``: a config, a ``topk`` analysis of 20
layers x 512 filters with its top images in the ``.npz`` and 20,480 per-filter figures listed as
pending, and per-filter ``stats``), so no network or data set is needed. Printed: the time of the
first build (no per-filter figure drawn: more than ``AUTO_DRAW``), the weight of ``report.html``
and of the layer pages, then the time to draw one layer's figures on request
(``--filter-figures LAYER`` calls ``draw_pending`` with that layer), and a build with them there.

    PYTHONPATH=src nice -n 5 python benchmarks/bench_report_scale.py [--layers 20] [--filters 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from report_scale import fabricate, layer_name  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--filters", type=int, default=512)
    ap.add_argument("--k", type=int, default=8)
    args = ap.parse_args()
    from convlens.analyses.perfilter import draw_pending
    from convlens.report import build_report, pages

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = fabricate(Path(tmp) / "run", args.layers, args.filters, k=args.k, images=256, side=32)
        n = args.layers * args.filters
        print(
            f"fabricated {args.layers} layers x {args.filters} filters = {n:,} filters, k={args.k}: "
            f"{time.perf_counter() - t0:.1f} s"
        )
        t0 = time.perf_counter()
        out = build_report(run)
        first = time.perf_counter() - t0
        folder = pages.pages_folder(out)
        files = sorted(folder.glob("*.html"))
        weight = sum(p.stat().st_size for p in files)
        html = out.read_text(encoding="utf-8")
        print(f"first build (no per-filter figure drawn): {first:.1f} s")
        print(
            f"report.html {out.stat().st_size / 1e3:.0f} KB, {html.count('<img src=')} images; "
            f"{len(files)} layer pages of {pages.PAGE_SIZE} filters, {weight / 1e6:.1f} MB "
            f"({weight / len(files) / 1e3:.0f} KB each)"
        )
        t0 = time.perf_counter()
        drawn = len(draw_pending(run, layers=[layer_name(0)]))
        draw = time.perf_counter() - t0
        print(
            f"one layer's {drawn:,} figures drawn on request (draw_pending, as --filter-figures LAYER does): "
            f"{draw:.1f} s, {draw / max(drawn, 1) * 1e3:.0f} ms a figure; all {2 * n:,} would take about "
            f"{draw / max(drawn, 1) * 2 * n / 60:.0f} min"
        )
        t0 = time.perf_counter()
        build_report(run)
        print(f"build again, with that layer's figures there: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
