"""The pages convlens writes, laid out by a real browser (headless Chromium) at 1400 px: the
report of a real analysed run, the comparison of two runs and a sweep's report. From the box of
every line of text and every image: no text lies over other text or an image, every text is at
least 11 px, and no figure is shown smaller than it was drawn (its own text would shrink).
Skipped when Chromium is absent (`.ci/run` installs Debian's `chromium`)."""

from __future__ import annotations

import shutil

import pytest
from cdp import Browser, find_chromium
from layout import check_layout
from report_helpers import copy_run, healthy, trained

from convlens.cli import main
from convlens.compare import compare_runs
from convlens.report import build_report

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)"),
]
pytest.importorskip("websocket", reason="websocket-client is a dev dependency: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with Browser(profile, width=1400, height=1000) as b:
        b.viewport(1400, 1000)
        yield b
    shutil.rmtree(profile, ignore_errors=True)


def assert_legible(b: Browser, url: str) -> dict:
    b.open(url)
    got = check_layout(b)
    assert b.errors() == []
    assert got["broken"] == 0
    assert got["texts"] > 20 and got["images"] > 0
    assert got["overlaps"] == [], f"{got['n_overlaps']} overlaps"
    assert got["small"] == [], f"{got['n_small']} texts under 11 px"
    assert got["shrunk"] == []
    return got


def test_the_report_of_a_real_analysed_run_is_legible(tmp_path_factory, tmp_path, browser):
    run = copy_run(healthy(tmp_path_factory), tmp_path / "run")
    assert main(["analyze", str(run), "--k", "4", "--examples", "10", "--mistakes", "6"]) == 0
    deconv = ["--method", "deconv", "--layers", "conv2", "--filters", "1"]
    assert main(["explain", str(run), "--images", "0,1", *deconv]) == 0
    got = assert_legible(browser, build_report(run).as_uri())
    assert got["images"] > 15  # the analyses' figures, in their sections and the filter browser
    # the filter browser shows every kind of panel, each at the size it was drawn
    for layer, f in (("conv1", 0), ("conv2", 3)):
        browser.eval(f"location.hash = '#fb={layer}/{f}'")
        assert check_layout(browser)["overlaps"] == []


def test_a_two_run_comparison_is_legible(tmp_path_factory, tmp_path, browser):
    a = healthy(tmp_path_factory)
    b = trained(tmp_path_factory, "seed1", seed=1)
    compare_runs([a, b], tmp_path / "ab", images=100)
    assert_legible(browser, (tmp_path / "ab" / "compare.html").as_uri())


def test_a_sweep_report_is_legible(tmp_path_factory, tmp_path, browser):
    sweep = tmp_path / "my-sweep"
    copy_run(healthy(tmp_path_factory), sweep / "trials" / "0")
    copy_run(trained(tmp_path_factory, "seed1", seed=1), sweep / "trials" / "1")
    (sweep / "sweep.yaml").write_text("name: lr-study\nbase: tiny.yaml\nparams:\n  seed: [0, 1]\n")
    assert_legible(browser, build_report(sweep).as_uri())
