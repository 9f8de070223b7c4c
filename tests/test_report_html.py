"""`convlens report`: one escaped page per run or sweep (its images linked from the run folder, or
all embedded with ``self_contained``), figures drawn once."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
import pytest
from PIL import Image
from report_helpers import HOSTILE_CAPTION, HOSTILE_CLASSES, HOSTILE_NAME, analysed, built, copy_run, healthy, trained

from convlens.cli import main
from convlens.report import build_report
from convlens.report.analyses import per_filter_key
from convlens.report.browser import pack, unpack
from convlens.report.html import image_src, linked_images, pct
from convlens.utils import read_json, write_json


class Page(HTMLParser):
    """The parts of a page the tests look at: tags with their attributes, sections, script blocks."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[tuple[dict[str, str], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "script":
            self._script = a
            self.scripts.append((a, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            a, body = self.scripts[-1]
            self.scripts[-1] = (a, body + data)
        else:
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]

    def section_ids(self) -> list[str]:
        return [a["id"] for a in self.all("section") if "id" in a]

    def browser_data(self) -> dict:
        """The filter browser's data, its figures by layer, filter and kind (as the script reads them)."""
        data = json.loads(next(body for a, body in self.scripts if a.get("id") == "fb-data"))
        return {**data, "figures": unpack(data["figures"])}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = analysed(tmp_path_factory)
    lines: list[str] = []
    out = build_report(run, echo=lines.append)
    return run, out, out.read_text(encoding="utf-8"), lines


def linked(run, rel: str) -> str:
    """The src the default report (RUN/report.html) gives the run folder's file ``rel``."""
    with linked_images(run / "report.html"):
        return image_src(run / rel)


def test_page_links_the_run_folders_images_and_loads_them_lazily(report):
    run, out, text, _ = report
    assert out == run / "report.html"
    page = Page(text)
    imgs = [a for a in page.all("img") if "src" in a]
    assert imgs and all((run / a["src"]).is_file() and a["loading"] == "lazy" for a in imgs)
    assert all(a["width"].isdigit() and a["height"].isdigit() for a in imgs)  # laid out before they load
    # the filters' kernels start folded: nothing of them loads until the section is opened
    folded = [a.get("id") for t, a in page.tags if t == "section" and "analysis-filters" == a.get("id")]
    assert folded and '<section id="analysis-filters" class="analysis">\n<details class="sec">' in text
    csp = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data: 'self' file:" in csp


def test_a_self_contained_page_embeds_every_image(report, tmp_path):
    run = report[0]
    text = build_report(run, tmp_path / "one.html", self_contained=True).read_text(encoding="utf-8")
    page = Page(text)
    imgs = [a["src"] for a in page.all("img") if "src" in a]
    assert imgs and all(s.startswith("data:image/") for s in imgs)
    figs = page.browser_data()["figures"]
    assert all(
        f["src"].startswith("data:image/") for layer in figs.values() for fig in layer.values() for f in fig.values()
    )
    for tag, a in page.tags:
        for attr in ("src", "href"):
            v = a.get(attr, "")
            assert not re.match(r"^(https?:)?//", v), (tag, v)
    assert not page.all("link") and not page.all("iframe")
    assert all("src" not in a for a, _ in page.scripts)
    csp = next(a["content"] for a in page.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_hostile_text_is_escaped_everywhere(report):
    _, _, text, _ = report
    page = Page(text)
    # exactly the page's own two script elements: the browser data block and the script
    assert len(page.scripts) == 2
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    assert "__pwned" not in page.scripts[1][1]
    assert "<script>window.__pwned" not in text and "<img src=x" not in text
    shown = "".join(page.text)
    assert HOSTILE_NAME in shown  # the config name, as text
    assert HOSTILE_CLASSES[0] in shown and HOSTILE_CLASSES[1] in shown and "cat & dog" in shown
    assert HOSTILE_CAPTION.strip() in shown
    # in the JSON block the markup characters are \u-escaped, and it still parses to the caption
    data = page.browser_data()
    caps = [f["caption"] for layer in data["figures"].values() for fig in layer.values() for f in fig.values()]
    assert any(HOSTILE_CAPTION in c and c.endswith("(checkpoint last, epoch 2)") for c in caps)


def test_every_analysis_is_shown_with_its_figures(report):
    run, _, text, _ = report
    page = Page(text)
    ids = page.section_ids()
    srcs = {a["src"] for a in page.all("img") if "src" in a}
    for p in sorted((run / "analysis").glob("*.json")):
        doc = read_json(p)
        name = doc["analysis"]
        assert (f"analysis-{name}" in ids) or (name == "errors" and "examples" in ids), name
        for fig in doc["figures"]:
            uri = linked(run, fig["path"])
            if "filter" in fig:  # per-filter figures live in the filter browser
                layer, index, kind = per_filter_key(fig, name)
                assert (layer, index) == (fig["layer"], fig["filter"])
                assert page.browser_data()["figures"][layer][str(index)][kind]["src"] == uri
            else:
                assert uri in srcs, fig["path"]


def test_known_analyses_get_their_tables(report):
    run, _, text, _ = report
    abl = read_json(run / "analysis" / "ablate.json")
    b, a = abl["set"]["before"]["per_class_accuracy"], abl["set"]["after"]["per_class_accuracy"]
    for i in range(len(b)):
        assert f"{100 * b[i]:.2f}%</td><td>{100 * a[i]:.2f}%" in text.replace('<td class="num">', "<td>")
    assert "Per-class accuracy before and after" in text and "What was ablated" in text
    assert "conv3: filters silenced one at a time" in text and "images whose prediction changed" in text
    assert "Dead filters per layer" in text and "Classes of each filter&#39;s top-6 images" in text
    assert "The most class-selective" in text and "Receptive fields" in text and "Weight norms per layer" in text
    assert "Most confused pairs of classes" in text and "The most confident mistakes" in text
    assert "Objective of each filter before and after" in text and "The test images explained" in text
    # filter numbers in the tables open the filter browser
    assert 'href="#fb=conv1/0"' in text and 'href="#fb=conv3/15"' in text


def test_run_sections_match_the_run_folder(report):
    run, _, text, _ = report
    page = Page(text)
    # the first screen: the headline numbers, the diagnosis and the filter browser, then the story
    assert page.section_ids()[:7] == [
        "headline",
        "diagnosis",
        "filter-browser",
        "training",
        "classes",
        "examples",
        "model",
    ]
    assert page.section_ids()[-1] == "config"
    ev = read_json(run / "eval.json")
    for acc in ev["per_class_accuracy"]:
        assert f"{100 * acc:.2f}%" in text
    for layer in read_json(run / "summary.json")["layers"]:
        assert f"<td>{layer['name']}</td><td>{layer['type']}</td>" in text
    assert "Still improving" in text  # the diagnosis is at the top of the page
    # the errors analysis provides the gallery, so the report drew none of its own
    assert not (run / "report" / "examples.png").exists()


def test_browser_lists_every_layer_and_filter(report):
    run, _, text, _ = report
    data = Page(text).browser_data()
    assert [layer["name"] for layer in data["layers"]] == ["conv1", "conv2", "conv3"]
    assert all(layer["filters"] == [0, 1, 2] for layer in data["layers"])
    kinds = [k["key"] for k in data["kinds"]]
    assert kinds[:4] == ["filters", "classnorms", "topk", "topk_patches"] and "actmax" in kinds


def test_figures_are_drawn_once_and_redrawn_when_their_source_changes(healthy_copy):
    lines: list[str] = []
    build_report(healthy_copy, echo=lines.append)
    assert lines and all(
        n in lines[0] for n in ("curves.png", "per_class.png", "confusion.png", "examples.png", "mistakes.png")
    )
    stamp = {p.name: p.stat().st_mtime_ns for p in (healthy_copy / "report").glob("*.png")}
    lines.clear()
    build_report(healthy_copy, echo=lines.append)
    assert lines == []
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (healthy_copy / "report").glob("*.png")}
    m = healthy_copy / "metrics.jsonl"
    m.write_text(m.read_text())  # new mtime
    build_report(healthy_copy, echo=lines.append)
    assert len(lines) == 1 and "curves.png" in lines[0] and "confusion.png" not in lines[0]


@pytest.fixture
def healthy_copy(tmp_path_factory, tmp_path):
    return copy_run(healthy(tmp_path_factory), tmp_path / "run")


@pytest.fixture
def built_copy(tmp_path_factory, tmp_path):
    return copy_run(built(tmp_path_factory), tmp_path / "built")


def test_a_copied_run_folder_reuses_its_figures(built_copy):
    lines: list[str] = []
    build_report(built_copy, echo=lines.append)
    assert lines == []


def test_unreadable_analyses_leave_notes_not_failures(built_copy):
    a = built_copy / "analysis"
    a.mkdir()
    (a / "broken.json").write_text("{not json")
    write_json(
        a / "stats.json",
        {
            "analysis": "stats",
            "layers": {"conv1": {"filters": [{"filter": "x"}]}},
            "figures": [{"path": "analysis/stats/missing.png", "caption": "gone"}],
        },
    )
    write_json(
        a / "ablate.json", {"analysis": "ablate", "before": "oops", "after": 3, "ranking": [1, 2], "figures": []}
    )
    (a / "custom").mkdir()
    Image.new("RGB", (8, 8), "red").save(a / "custom" / "x.png")
    write_json(
        a / "custom.json",
        {
            "analysis": "custom",
            "params": {"alpha": 0.5},
            "answer": 42,
            "figures": [{"path": "analysis/custom/x.png", "caption": "a custom figure"}],
        },
    )
    text = build_report(built_copy).read_text()
    assert "broken.json could not be read" in text
    assert "the tables of stats.json could not be read (ValueError" in text
    assert "figure analysis/stats/missing.png is listed but missing" in text
    page = Page(text)
    assert {"analysis-stats", "analysis-ablate", "analysis-custom"} <= set(page.section_ids())
    assert "a custom figure" in text and "<dt>answer</dt><dd>42</dd>" in text and "<dt>alpha</dt><dd>0.5</dd>" in text


def test_report_of_a_diverged_run(tmp_path_factory, tmp_path):
    run = copy_run(trained(tmp_path_factory, "huge-sgd", **{"train.optimizer.lr": 50.0}), tmp_path / "d")
    text = build_report(run).read_text()
    page = Page(text)
    assert "Training diverged" in text and "diverged in epoch 1" in text
    assert "classes" not in page.section_ids() and "training" in page.section_ids()


def test_sweep_report_links_every_trial(tmp_path_factory, tmp_path):
    sweep = tmp_path / "sweep"
    copy_run(built(tmp_path_factory), sweep / "trials" / "0")
    copy_run(
        trained(tmp_path_factory, "flat", **{"train.optimizer.lr": 1e-5, "train.epochs": 3}), sweep / "trials" / "1"
    )
    (sweep / "sweep.yaml").write_text("base: tiny.yaml\nparams:\n  train.optimizer.lr: [0.05, 1.0e-5]\n")
    out = build_report(sweep)
    text = out.read_text()
    page = Page(text)
    links = [a["href"] for a in page.all("a") if a.get("href", "").endswith("report.html")]
    assert links == ["trials/0/report.html", "trials/1/report.html"]  # best validation accuracy first
    assert all((sweep / link).is_file() for link in links)
    assert {"trials", "groups", "plots", "file-sweep"} <= set(page.section_ids())
    assert "By train.optimizer.lr" in text and "By train.epochs" in text
    assert "flat loss from the start" in text  # trial 1's diagnosis, in its row
    assert "params:" in text  # the sweep file, as text
    # with the sweep's own tables and plots present, those are shown instead of computed ones
    (sweep / "tables").mkdir()
    (sweep / "tables" / "by_lr.csv").write_text("lr,val_acc\n0.05,0.9\n<script>x</script>,0.1\n")
    shutil.copy(sweep / "report" / "curves.png", sweep / "accuracy_vs_lr.png")
    text = build_report(sweep, tmp_path / "elsewhere" / "s.html").read_text()
    page = Page(text)
    assert "tables" in page.section_ids() and "groups" not in page.section_ids()
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>x" not in text
    assert "accuracy vs lr" in text
    assert [a["href"] for a in page.all("a") if a.get("href", "").endswith("report.html")] == [
        os.path.relpath(sweep / "trials" / t / "report.html", tmp_path / "elsewhere") for t in ("0", "1")
    ]


def test_report_command(built_copy, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(built_copy), "--out", str(out)]) == 0
    assert out.is_file() and f"report: {out}" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_demo_ends_with_its_report(tmp_path, monkeypatch):
    from convlens import demo

    monkeypatch.setitem(demo.DEMO_CONFIG["model"]["options"], "width", 4)  # the demo's recipe, smaller
    monkeypatch.setitem(demo.DEMO_ANALYSES, "layers", ["conv1"])  # fewer figures to draw
    lines: list[str] = []
    path = demo.run_demo(tmp_path / "demo", epochs=1, echo=lines.append)
    assert lines[-1] == f"report: {path / 'report.html'}"
    # trained, analysed, explained, then reported: every analysis has its section
    ids = Page((path / "report.html").read_text(encoding="utf-8")).section_ids()
    keyed = [f"{n}-conv1" for n in ("filters", "featuremaps", "stats", "classnorms", "topk", "ablate")]  # by --layers
    for name in (*keyed, "occlusion", "actmax-conv1"):
        assert f"analysis-{name}" in ids and (path / "analysis" / f"{name}.json").is_file(), name
    assert {"examples", "filter-browser"} <= set(ids)
    assert (path / "analysis" / "actmax-conv1" / "conv1" / "f0.png").is_file()


def test_report_of_a_real_run(tmp_path_factory, tmp_path):
    """Every real analysis and a real explanation end up in the report, figures and captions."""
    run = copy_run(healthy(tmp_path_factory), tmp_path / "real")
    assert main(["analyze", str(run), "--k", "4", "--examples", "10", "--mistakes", "6"]) == 0
    for method in (
        ["occlusion", "--window", "2,4", "--stride", "2"],
        ["deconv", "--layers", "conv2", "--filters", "1"],
    ):
        assert main(["explain", str(run), "--images", "0,1", "--method", *method]) == 0
    text = build_report(run).read_text(encoding="utf-8")
    page = Page(text)
    ids, browser = page.section_ids(), page.browser_data()
    srcs = {a["src"] for a in page.all("img") if "src" in a}
    shown = "".join(page.text)
    names = {p.stem for p in (run / "analysis").glob("*.json")}
    assert names == {
        "filters",
        "featuremaps",
        "stats",
        "classnorms",
        "topk",
        "ablate",
        "atlas",
        "errors",
        "occlusion",
        "deconv-conv2-f1",
    }
    for stem in names:
        doc, name = read_json(run / "analysis" / f"{stem}.json"), stem.partition("-")[0]
        assert ("examples" if name == "errors" else f"analysis-{stem}") in ids, name
        assert doc["figures"], name
        for fig in doc["figures"]:
            uri = linked(run, fig["path"])
            key = per_filter_key(fig, name)
            if key is None:
                assert uri in srcs and fig["caption"] in shown, fig["path"]
            else:  # every per-filter figure is in the browser under its layer, filter and kind
                layer, index, kind = key
                assert (layer, index) == (fig["layer"], fig["filter"]), fig["path"]
                tagged = f"{fig['caption']} (checkpoint {doc['checkpoint']}, epoch {doc['checkpoint_epoch']})"
                assert browser["figures"][layer][str(index)][kind] == {"src": uri, "caption": tagged}
    assert "could not be read" not in text and "listed but missing" not in text
    # the browser has each conv filter's weights, class-wise norms (first and last layer) and top-k images
    kinds = [k["key"] for k in browser["kinds"]]
    assert kinds[:4] == ["filters", "classnorms", "topk", "topk_patches"] and "deconv" in kinds
    assert [layer["name"] for layer in browser["layers"]] == ["conv1", "conv2", "conv3"]
    assert set(browser["figures"]["conv3"]["15"]) == {"filters", "classnorms", "topk", "topk_patches"}
    assert set(browser["figures"]["conv2"]["1"]) == {"filters", "topk", "topk_patches", "deconv"}
    # a deconvnet projection has only per-filter figures: its section shows them too
    assert linked(run, "analysis/deconv-conv2-f1/conv2/f1.png") in srcs
    assert linked(run, "analysis/occlusion/test0.png") in srcs
    # the tables read the real numbers
    abl = read_json(run / "analysis" / "ablate.json")
    assert "What was ablated" in text and "conv3: filters silenced one at a time" in text
    assert pct(abl["set"]["after"]["accuracy"]) in text
    assert "Dead filters per layer" in text and "Classes of each filter&#39;s top-4 images" in text
    assert "The most class-selective" in text and "Weight norms per layer" in text
    assert "The test images explained" in text and "lowest p(true), 4-pixel patch" in text


def test_sections_fold_and_settings_are_folded(report):
    _, _, text, _ = report
    page = Page(text)
    # every section after the browser is one <details> whose summary is its title: open, but the
    # filters' walls of kernels start folded (their images load when it is opened)
    sections = [m for m in re.finditer(r'<section id="([^"]+)"[^>]*>\n(<[^>]+>)', text)]
    opened = [m.group(1) for m in sections if m.group(2) == '<details class="sec" open>']
    closed = [m.group(1) for m in sections if m.group(2) == '<details class="sec">']
    assert closed == ["analysis-filters"]
    assert sorted(opened + closed) == sorted(
        i for i in page.section_ids() if i not in ("headline", "diagnosis", "filter-browser")
    )
    assert re.search(r'<details class="sec" open><summary><h2>Training</h2></summary>', text)
    # an analysis' parameters are folded away, never listed in the open
    assert re.search(
        r'<section id="analysis-topk"[^>]*>\n<details class="sec" open>.*?<details class="settings">', text, re.S
    )
    # notes are plain text, not styled like the warnings
    css = text[text.index("<style>") : text.index("</style>")]
    note = re.search(r"\.note \{([^}]*)\}", css).group(1)
    assert "--warn" not in note and "--bad" not in note
    assert ".tbl { max-width: 100%; overflow-x: auto; }" in css
    # every table sits in a horizontal scroll wrapper
    assert text.count("<table>") == text.count('<div class="tbl"><table>') > 0


def test_browser_shows_each_filters_numbers(report):
    run, _, text, _ = report
    data = Page(text).browser_data()
    keys = [n["key"] for n in data["numbers"]]
    assert keys == ["selectivity", "top_class", "ablation_drop", "dead", "mean", "max"]
    stats, cn = read_json(run / "analysis" / "stats.json"), read_json(run / "analysis" / "classnorms.json")
    abl = read_json(run / "analysis" / "ablate.json")
    v = data["values"]["conv3"]["1"]
    assert v["mean"] == f"{stats['layers']['conv3']['mean'][1]:.4g}"
    assert v["max"] == f"{stats['layers']['conv3']['max'][1]:.4g}"
    assert v["selectivity"] == f"{cn['layers']['conv3']['selectivity'][1]:.4g}"
    assert v["dead"] in ("yes", "no")
    layer = next(iter(abl["rank"]))
    assert data["values"][layer]["0"]["ablation_drop"] == f"{100 * abl['rank'][layer]['drop'][0]:.2f} points"
    assert '<dl class="fb-numbers" id="fb-numbers">' in text


def test_the_browser_lists_a_layers_figures_once_as_a_pattern():
    figs = {
        "conv2": {
            str(i): {"topk": {"src": f"analysis/topk/conv2/f{i}.png", "caption": f"conv2 filter {i}: top-9 (best)"}}
            for i in range(300)
        }
    }
    figs["conv2"]["7"]["topk"]["caption"] = "a caption of its own {f}"
    figs["conv2"]["8"]["filters"] = {"src": "elsewhere/8.png", "caption": "no number in the file name"}
    packed = pack(figs)
    assert unpack(packed) == figs
    assert packed["conv2"]["topk"]["src"] == "analysis/topk/conv2/f{f}.png"
    assert set(packed["conv2"]["topk"]["other"]) == {"7"} and len(packed["conv2"]["topk"]["filters"]) == 299
    assert len(json.dumps(packed)) < 6 * 300  # a few bytes a filter, not a path and a caption each


def test_numbers_read_one_way_everywhere():
    from convlens.report.html import fmt, fmt_value

    assert [fmt(12950.3), fmt(1730.0), fmt(24170), fmt(0.4254), fmt(-2500.5)] == [
        "12,950",
        "1,730",
        "24,170",
        "0.4254",
        "-2,500",
    ]
    # the diagnosis' evidence: accuracies and shares in percent, other numbers as they are
    assert fmt_value("val_acc_from", 0.7213) == "72.13%" and fmt_value("gain", 0.1115) == "0.1115"
    assert fmt_value("pairs", [{"a": 4, "share_of_errors": 0.1129}]) == "a=4, share_of_errors=11.29%"
