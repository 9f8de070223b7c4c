"""The report of a large network: the page stays light, each layer's filters are on pages of their
own (with their numbers, figures and table rows), a search index lists every layer, and the
per-filter figures of thousands of filters are drawn when asked, one layer at a time."""

from __future__ import annotations

import json
import re

import pytest
from report_scale import fabricate, layer_name

from convlens.cli import main
from convlens.report import build_report, pages, run_report

INDEX = re.compile(r'<script type="application/json" id="fb-index">(.*?)</script>', re.S)


def index_of(html: str) -> dict:
    return json.loads(INDEX.search(html).group(1))


def img_srcs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


@pytest.fixture
def small_paging(monkeypatch):
    """Thresholds scaled down, so a run of 120 filters is paged as one of thousands is."""
    monkeypatch.setattr(pages, "PAGED_ABOVE", 64)
    monkeypatch.setattr(pages, "PAGE_SIZE", 16)
    monkeypatch.setattr(run_report, "AUTO_DRAW", 100)


@pytest.mark.slow  # writes and reads back the files of 10,240 filters (about 15 s on 2 cores)
def test_the_report_of_10240_filters_is_light_and_paged(tmp_path):
    run = fabricate(tmp_path / "run", layers=20, filters=512, k=2, images=16, side=8)
    out = build_report(run)
    html = out.read_text(encoding="utf-8")
    assert len(html.encode()) < 300_000  # measured: about 45 KB
    assert not (run / "analysis" / "topk").exists()  # 20,480 figures: none drawn unless asked
    assert "analysis/topk/" not in html and 'id="fb-data"' not in html  # no per-filter image or record
    index = index_of(html)
    assert [entry["name"] for entry in index["layers"]] == [layer_name(i) for i in range(20)]
    folder = pages.pages_folder(out)
    assert len(list(folder.glob("*.html"))) == 20 * 512 // pages.PAGE_SIZE
    for entry in index["layers"]:
        assert entry["ranges"] == [[0, 511]]
        last = (run / f"{entry['base']}{512 // pages.PAGE_SIZE}.html").read_text(encoding="utf-8")
        assert 'id="f511"' in last and 'id="f448"' in last and 'id="f447"' not in last


def test_layer_pages_hold_every_filter_its_numbers_and_table_rows(tmp_path, small_paging):
    run = fabricate(tmp_path / "run", layers=3, filters=40, k=2, images=8, side=8)
    old = pages.pages_folder(run / "report.html") / "999-gone-p1.html"
    old.parent.mkdir(parents=True)
    old.write_text("a page of a layer the run no longer has")
    out = build_report(run, filter_figures=layer_name(1))
    html = out.read_text(encoding="utf-8")
    index = index_of(html)
    assert index["size"] == 16 and [e["name"] for e in index["layers"]] == [layer_name(i) for i in range(3)]
    assert not old.exists()
    # the per-filter table left the page; its rows are on the pages, beside the figures
    assert "Classes of each filter" in html and "are on the layer pages" in html
    assert html.count("<tr>") < 40
    seen: dict[str, set[int]] = {}
    for entry in index["layers"]:
        for n in range(1, 4):  # 40 filters, 16 a page
            page = run / f"{entry['base']}{n}.html"
            text = page.read_text(encoding="utf-8")
            ids = {int(i) for i in re.findall(r'<section class="fb-card analysis" id="f(\d+)"', text)}
            assert len(ids) == (8 if n == 3 else 16)
            seen.setdefault(entry["name"], set()).update(ids)
            # each filter's rows of the per-filter tables (topk's classes, stats) link its card
            assert text.count('<a href="#f') == 2 * len(ids)
            assert "Per-filter statistics" in text and "Classes of each filter" in text
            assert "mean response" in text  # stats' numbers
            srcs = img_srcs(text)
            if entry["name"] == layer_name(1):  # drawn on request: every panel is a file beside the run
                assert len(srcs) == 2 * len(ids) and all((page.parent / s).is_file() for s in srcs)
                assert "not drawn yet" not in text
            else:
                assert srcs == [] and text.count(f"--filter-figures {entry['name']}") == 2 * len(ids)
    assert all(ids == set(range(40)) for ids in seen.values())
    # the main page's links open the pages it names
    for href in re.findall(r'<a href="(report-layers/[^"#]+)"', html):
        assert (run / href).is_file()


def test_a_small_network_keeps_its_browser_on_the_page(tmp_path):
    run = fabricate(tmp_path / "run", layers=2, filters=3, k=2, images=8, side=8)
    out = build_report(run)
    html = out.read_text(encoding="utf-8")
    assert 'id="fb-data"' in html and 'id="fb-index"' not in html
    assert not pages.pages_folder(out).exists()
    assert (run / "analysis" / "topk" / layer_name(0) / "f2_patches.png").is_file()  # drawn: few of them
    # the figures are drawn before the sections count them: none is reported missing
    assert "every one is in the filter browser" in html and "could not be drawn" not in html


def test_too_many_figures_wait_and_the_page_says_how_to_draw_them(tmp_path, small_paging):
    run = fabricate(tmp_path / "run", layers=3, filters=40, k=2, images=8, side=8)
    html = build_report(run).read_text(encoding="utf-8")
    assert not (run / "analysis" / "topk").exists()
    assert f"convlens report {run} --filter-figures LAYER[,LAYER]" in html
    assert "are not drawn yet" in html and "could not be drawn" not in html


def test_an_unknown_layer_to_draw_is_an_error_naming_the_layers(tmp_path, capsys):
    run = fabricate(tmp_path / "run", layers=2, filters=3, k=2, images=8, side=8)
    assert main(["report", str(run), "--filter-figures", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --filter-figures 'nosuch'") and layer_name(1) in err


def test_ranges_are_runs_of_filter_numbers():
    assert pages.ranges([0, 1, 2, 5, 7, 8]) == [[0, 2], [5, 5], [7, 8]]
    assert pages.ranges([]) == []


def test_layer_file_names_are_safe_and_unique():
    names = ["a/b", "a?b", "layer1.0.conv1", "act@2"]
    stems = [pages.slug(i, n) for i, n in enumerate(names)]
    assert len(set(stems)) == 4 and all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in stems)


def _browser():
    from cdp import Browser, find_chromium

    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client is a dev dependency: pip install -e '.[dev]'")
    return Browser


@pytest.mark.browser
def _href_when(b, suffix: str, timeout: float = 30.0) -> str:
    """The page's address once it ends with ``suffix`` and the page has loaded (polled: a
    question asked while the page navigates is dropped by the browser, so it is asked again)."""
    import time

    end, last = time.monotonic() + timeout, ""
    while time.monotonic() < end:
        try:
            last = b.eval("location.href")
            if last.endswith(suffix) and b.eval("document.readyState") == "complete":
                return last
        except RuntimeError:  # the page navigated while it was asked
            pass
        time.sleep(0.1)
    return last


def test_the_search_box_and_table_links_open_the_filter_page(tmp_path, small_paging):
    import time

    browser_cls = _browser()
    run = fabricate(tmp_path / "run", layers=3, filters=40, k=2, images=8, side=8)
    out = build_report(run, filter_figures=layer_name(2))
    with browser_cls(tmp_path / "profile", width=1280, height=900) as b:
        b.open(out.as_uri())
        assert b.errors() == []
        b.eval(
            "(document.getElementById('fb-find-layer').value = 'STAGE1.',"
            " document.getElementById('fb-find').click(), 1)"
        )
        said = b.eval("document.getElementById('fb-find-said').textContent")
        assert said.startswith("3 layers match: stage1.0.conv")  # a part of several names, in any case
        b.eval(
            f"(document.getElementById('fb-find-layer').value = '{layer_name(2)}',"
            " document.getElementById('fb-find-filter').value = '37', document.getElementById('fb-find').click(), 1)"
        )
        page = "/report-layers/002-stage1.2.conv-p3.html#f37"
        assert _href_when(b, page).endswith(page)
        time.sleep(0.3)
        assert b.errors() == []
        cards = "[...document.querySelectorAll('.fb-card img')]"
        loaded = f"Promise.all({cards}.map(i => (i.loading = 'eager', i.decode().then(() => 0, () => 1))))"
        assert b.eval(loaded) == [0] * 2 * 8  # the last page's 8 filters, 2 panels each, every one loads
        b.open(out.as_uri() + f"#fb={layer_name(0)}/20")
        page = "/report-layers/000-stage1.0.conv-p2.html#f20"
        assert _href_when(b, page).endswith(page)


def test_a_self_contained_report_embeds_the_layer_pages_images_too(tmp_path, small_paging):
    run = fabricate(tmp_path / "run", layers=3, filters=40, k=2, images=8, side=8)
    out = build_report(run, tmp_path / "share" / "report.html", self_contained=True, filter_figures=layer_name(0))
    first = (pages.pages_folder(out) / f"{pages.slug(0, layer_name(0))}-p1.html").read_text(encoding="utf-8")
    srcs = img_srcs(first)
    assert len(srcs) == 2 * 16 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'href="../report.html#filter-browser"' in first


def test_rows_of_filters_without_a_page_stay_on_the_report(tmp_path, small_paging):
    import json as _json

    run = fabricate(tmp_path / "run", layers=3, filters=40, k=2, images=8, side=8)
    stats = run / "analysis" / "stats.json"
    doc = _json.loads(stats.read_text())
    doc["layers"]["head.conv"] = {"measured_at": "head.conv", "channels": 3, "mean": [1.0, 2.0, 3.0], "max": [4, 5, 6]}
    stats.write_text(_json.dumps(doc))
    html = build_report(run, filter_figures="none").read_text(encoding="utf-8")
    assert "(filters without a page) (3 rows)" in html  # head.conv has no figure, so no page
    assert "120 rows, one per filter, are on the layer pages" in html
