"""The report of a real run in a real browser (headless Chromium): no console errors, no broken
images, the filter browser works, hostile names stay text. Skipped when Chromium is absent
(`.ci/run` installs Debian's `chromium`)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from cdp import Browser, find_chromium
from report_helpers import HOSTILE_CLASSES, HOSTILE_NAME, analysed

from convlens.report import build_report
from convlens.report.html import image_src, linked_images

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)"),
]

websocket = pytest.importorskip("websocket", reason="websocket-client is a dev dependency: pip install -e '.[dev]'")

# every image loaded (the lazy ones and those in folded sections too): how many fail
BROKEN_IMAGES = (
    "(document.querySelectorAll('details').forEach(d => d.open = true),"
    " Promise.all([...document.images].filter(i => i.getAttribute('src'))"
    ".map(i => (i.loading = 'eager', i.decode().then(() => i.naturalWidth > 0 ? 0 : 1, () => 1))))"
    ".then(r => r.reduce((a, b) => a + b, 0)))"
)
TOPK_SRC = "document.querySelector('.fb-panel[data-kind=\"topk\"] img').getAttribute('src')"
SELECTED = "[document.getElementById('fb-layer').value, document.getElementById('fb-filter').value]"
# sets a select's value and fires `change`, as choosing an option by hand does
SET_SELECT = "(s => {{ s.value = {value}; s.dispatchEvent(new Event('change')); }})(document.getElementById('{id}'))"


def pick(browser: Browser, layer: str | None = None, filter_: int | None = None) -> None:
    """Choose in the selects the way a person does: set the value, fire `change`."""
    if layer is not None:
        browser.eval(SET_SELECT.format(value=repr(layer), id="fb-layer"))
    if filter_ is not None:
        browser.eval(SET_SELECT.format(value=f"'{filter_}'", id="fb-filter"))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = analysed(tmp_path_factory)
    out = build_report(run, tmp_path_factory.mktemp("page") / "report.html")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with Browser(profile, width=1280, height=1000) as b:
        b.open(out.as_uri())
        yield b, out, run
    shutil.rmtree(profile, ignore_errors=True)


def test_loads_without_errors_or_broken_images(page):
    b = page[0]
    assert b.errors() == []
    assert b.eval("document.images.length") > 10
    assert b.eval(BROKEN_IMAGES) == 0
    assert b.eval("document.querySelectorAll('.fb-panel img:not([hidden])').length") >= 4


def test_hostile_names_show_as_text_and_never_run(page):
    b = page[0]
    assert b.eval("typeof window.__pwned") == "undefined"
    body = b.eval("document.body.innerText")
    assert HOSTILE_NAME in body
    assert HOSTILE_CLASSES[0] in body and HOSTILE_CLASSES[1] in body
    # only the page's own two scripts exist, and no element came from a class name
    assert b.eval("document.scripts.length") == 2
    assert b.eval("document.querySelectorAll('img[onerror], img[src=x]').length") == 0


def test_filter_browser_swaps_the_figures(page):
    b, _, run = page

    def expected(layer: str, index: int) -> str:  # the run folder's file, linked from the page
        with linked_images(page[1]):
            return image_src(run / "analysis" / "topk" / layer / f"f{index}.png")

    assert b.eval(SELECTED) == ["conv1", "0"]
    assert b.eval(TOPK_SRC) == expected("conv1", 0)
    pick(b, filter_=2)
    assert b.eval(SELECTED) == ["conv1", "2"]
    assert b.eval(TOPK_SRC) == expected("conv1", 2)
    pick(b, layer="conv2")
    assert b.eval(SELECTED) == ["conv2", "0"]
    assert b.eval(TOPK_SRC) == expected("conv2", 0) != expected("conv1", 0)
    assert "conv2 filter 0" in b.eval("document.querySelector('.fb-panel[data-kind=\"topk\"] figcaption').textContent")
    b.eval("document.getElementById('fb-next').click()")
    assert b.eval(SELECTED) == ["conv2", "1"]
    assert b.eval(TOPK_SRC) == expected("conv2", 1)
    # the activation-maximisation analysis covers conv1 only: its panel says so instead of breaking
    assert b.eval("document.querySelector('.fb-panel[data-kind=\"actmax\"] img').hidden") is True
    # and takes no room (no broken-image box with its alt text)
    assert b.eval("document.querySelector('.fb-panel[data-kind=\"actmax\"] img').getBoundingClientRect().height") == 0
    assert b.eval(BROKEN_IMAGES) == 0
    assert b.errors() == []


def test_filter_links_in_tables_open_the_browser(page):
    b = page[0]
    b.eval("document.querySelector('a[href=\"#fb=conv3/1\"]').click()")
    deadline = time.monotonic() + 5
    while b.eval(SELECTED) != ["conv3", "1"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.eval(SELECTED) == ["conv3", "1"]


FIRST_SCREEN = "(id => document.getElementById(id).getBoundingClientRect().top < window.innerHeight)"
# an element wider than the window: something cut at the right edge, or a page scrolling sideways
# (tables, preformatted text and a figure wider than the page scroll inside their own box)
TOO_WIDE = (
    "[...document.querySelectorAll('main *')].filter(e => !e.closest('.tbl, pre, #zoom, .figs figure img')"
    " && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length"
)


@pytest.mark.parametrize("width", [1400, 400])
def test_screenshot(page, tmp_path_factory, width):
    b = page[0]
    b.viewport(width, 1000, mobile=width < 600)
    try:
        pick(b, layer="conv1", filter_=1)
        b.eval("window.scrollTo(0, 0)")
        # the first screen shows the diagnosis and the filter browser
        assert b.eval(FIRST_SCREEN + "('diagnosis')")
        if width >= 1000:
            assert b.eval(FIRST_SCREEN + "('filter-browser')")
        assert b.eval("document.documentElement.scrollWidth") <= width
        assert b.eval(TOO_WIDE) == 0
        # CI keeps them when CONVLENS_SCREENSHOTS names a folder (.ci/run: .ci/out/screenshots)
        folder = Path(os.environ.get("CONVLENS_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
        folder.mkdir(parents=True, exist_ok=True)
        shot = b.screenshot(folder / f"report-{width}.png")
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
        print(f"screenshot: {shot}")
    finally:
        b.call("Emulation.clearDeviceMetricsOverride")


def test_a_panel_enlarges_on_click(page):
    b = page[0]
    pick(b, layer="conv1", filter_=0)
    b.eval("document.querySelector('.fb-panel[data-kind=\"topk\"] img').click()")
    assert b.eval("document.getElementById('zoom').hidden") is False
    assert b.eval("document.querySelector('#zoom img').src") == b.eval(TOPK_SRC.replace(".getAttribute('src')", ".src"))
    b.eval("document.getElementById('zoom').click()")
    assert b.eval("document.getElementById('zoom').hidden") is True


def test_numbers_follow_the_picked_filter(page):
    b = page[0]
    pick(b, layer="conv3", filter_=2)
    shown = b.eval(
        "Object.fromEntries([...document.querySelectorAll('#fb-numbers div')]"
        ".map(d => [d.dataset.key, d.querySelector('dd').textContent]))"
    )
    data = b.eval("JSON.parse(document.getElementById('fb-data').textContent).values.conv3['2']")
    assert shown["mean"] == data["mean"] and shown["selectivity"] == data["selectivity"]
    assert set(shown) >= {"selectivity", "top_class", "dead", "mean", "max"}
