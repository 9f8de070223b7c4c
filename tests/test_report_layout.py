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
    # activation maximisation sheets and concept explanations are laid out on the same page
    assert (
        main(["explain", str(run), "--method", "actmax", "--layers", "conv2", "--filters", "0,1", "--steps", "8"]) == 0
    )
    assert main(["explain", str(run), "--method", "concepts", "--images", "0,1"]) == 0
    got = assert_legible(browser, build_report(run).as_uri())
    assert got["images"] > 15  # the analyses' figures, in their sections and the filter browser
    # the filter browser shows every kind of panel, each at the size it was drawn
    for layer, f in (("conv1", 0), ("conv2", 3)):
        browser.eval(f"location.hash = '#fb={layer}/{f}'")
        assert check_layout(browser)["overlaps"] == []


def test_the_report_of_a_resnet8_is_legible(tmp_path_factory, tmp_path, browser):
    # residual blocks: dotted layer names (layer1.0.conv1), shortcuts, more layers than the tiny net
    run = copy_run(
        trained(tmp_path_factory, "resnet8", **{"model.preset": "resnet8", "model.options": {"width": 4}}),
        tmp_path / "resnet8",
    )
    assert main(["analyze", str(run), "--k", "4", "--examples", "10", "--mistakes", "6"]) == 0
    got = assert_legible(browser, build_report(run).as_uri())
    assert got["images"] > 15
    layers = browser.eval("[...document.querySelectorAll('#fb-layer option')].map(o => o.value)")
    assert "layer1.0.conv1" in layers and len(layers) >= 7


def test_a_two_run_comparison_is_legible(tmp_path_factory, tmp_path, browser):
    a = healthy(tmp_path_factory)
    b = trained(tmp_path_factory, "seed1", seed=1)
    compare_runs([a, b], tmp_path / "ab", cka_images=100)
    assert_legible(browser, (tmp_path / "ab" / "compare.html").as_uri())


def test_a_sweep_report_is_legible(tmp_path_factory, tmp_path, browser):
    sweep = tmp_path / "my-sweep"
    copy_run(healthy(tmp_path_factory), sweep / "trials" / "0")
    copy_run(trained(tmp_path_factory, "seed1", seed=1), sweep / "trials" / "1")
    (sweep / "sweep.yaml").write_text("name: lr-study\nbase: tiny.yaml\nparams:\n  seed: [0, 1]\n")
    (sweep / "results.csv").write_text("trial,best_val_acc,params,seconds\n0,0.8123,1730,12950.3\n1,0.7,24170,9.5\n")
    assert_legible(browser, build_report(sweep).as_uri())
    text = browser.eval("document.body.innerText")
    assert browser.eval("document.querySelector('h1').textContent") == "Sweep lr-study: my-sweep"
    # one number format: accuracies in percent, thousands separated, never 1.295e+04
    assert "81.23%" in text and "1,730" in text and "24,170" in text and "12,950" in text and "e+04" not in text


def test_the_check_finds_overlapping_and_small_text(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text(
        "<!doctype html><body style='font-size:14px'><p>first line of text</p>"
        "<p style='margin-top:-20px'>second line, over it</p><p style='font-size:9px'>tiny</p>"
        "<img src='data:image/gif;base64,R0lGODlhAQABAAAAACw=' width=80 height=40 style='display:block'>"
        "<div style='margin-top:-30px'>under the image</div></body>"
    )
    browser.open(page.as_uri())
    got = check_layout(browser)
    assert ["text: first line of text", "text: second line, over it"] in got["overlaps"]
    assert any("under the image" in " ".join(pair) and "img: " in " ".join(pair) for pair in got["overlaps"])
    assert [s["text"] for s in got["small"]] == ["tiny"]
