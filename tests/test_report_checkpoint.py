"""Which checkpoint every result describes: eval.json, analyses and explanations record the file
they read; the report says it in every caption and marks results of older weights."""

from __future__ import annotations

import hashlib
import html
import os
import re

import pytest
from conftest import tiny_config
from report_helpers import copy_run

from convlens import runload
from convlens.cli import main
from convlens.run import Run
from convlens.utils import read_json, write_json


def sha12(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def identity(doc: dict) -> tuple:
    return doc["checkpoint"], doc["checkpoint_epoch"], doc["checkpoint_sha256"]


def section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def captions(text: str) -> list[str]:
    found = re.findall(r"<figcaption>(.*?)</figcaption>|<caption>(.*?)</caption>", text)
    return [html.unescape(fig or table) for fig, table in found]


def alerts(text: str) -> list[str]:
    return [html.unescape(a) for a in re.findall(r'<p class="stale">(.*?)</p>', text)]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """One epoch, its analyses and an explanation, then `train --resume` to three epochs."""
    from convlens.train import train

    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny_config(**{"train.epochs": 1}), out, echo=lambda s: None)
    assert main(["analyze", str(out), "--only", "stats,errors", "--examples", "4", "--mistakes", "4"]) == 0
    assert main(["explain", str(out), "--method", "saliency", "--images", "0,1"]) == 0
    before = {n: read_json(out / "analysis" / f"{n}.json") for n in ("stats", "errors", "saliency")}
    train(resume=out, overrides=["train.epochs=3"], echo=lambda s: None)
    return out, before


def test_eval_json_names_the_checkpoint_it_evaluated(resumed):
    run_dir, _ = resumed
    ev = read_json(run_dir / "eval.json")
    name = ev["checkpoint"]
    assert name == Run(run_dir).config.eval.checkpoint == "last"
    assert ev["checkpoint_sha256"] == sha12(run_dir / "checkpoints" / "last.pt")
    assert ev["checkpoint_epoch"] == ev["epoch"] == 3
    # re-evaluating the other checkpoint names that one
    assert main(["eval", str(run_dir), "--checkpoint", "best"]) == 0
    ev = read_json(run_dir / "eval.json")
    best = run_dir / "checkpoints" / "best.pt"
    assert (ev["checkpoint"], ev["checkpoint_sha256"]) == ("best", sha12(best))
    assert ev["checkpoint_epoch"] == runload.checkpoint_info(run_dir, "best")["checkpoint_epoch"]
    assert main(["eval", str(run_dir), "--checkpoint", "last"]) == 0


def test_analyses_and_explanations_record_the_checkpoint_they_read(resumed):
    run_dir, before = resumed
    # written after one epoch, by default from the checkpoint eval.json had evaluated then (last)
    for name, doc in before.items():
        assert doc["checkpoint"] == "last" and doc["checkpoint_epoch"] == 1, name
        assert len(doc["checkpoint_sha256"]) == 12
        assert doc["checkpoint_sha256"] != sha12(run_dir / "checkpoints" / "last.pt")


def test_report_marks_analyses_of_an_older_checkpoint(resumed, tmp_path):
    from convlens.report import build_report

    run_dir = copy_run(resumed[0], tmp_path / "run")
    page = build_report(run_dir).read_text()
    now = sha12(run_dir / "checkpoints" / "last.pt")
    assert f"last, epoch 3, sha256 {now}" in section(page, "headline")
    for sid, name in (("analysis-stats", "stats"), ("examples", "errors"), ("analysis-saliency", "saliency")):
        text = section(page, sid)
        said = alerts(text)
        assert len(said) == 1 and "epoch 1" in said[0] and "now epoch 3" in said[0], (sid, said)
        assert ("convlens explain" if name == "saliency" else f"convlens analyze {run_dir} --only {name}") in said[0]
        caps = captions(text)
        assert caps and all(c.endswith("(checkpoint last, epoch 1, stale)") for c in caps), (sid, caps)
    # the page says so before any section, and the test evaluation's sections are current
    top = alerts(page.split('<section id="diagnosis">')[0])
    assert len(top) == 1 and "stats, errors, saliency" in top[0] and f"convlens analyze {run_dir}" in top[0]
    caps = captions(section(page, "classes"))
    assert caps and all(c.endswith("(checkpoint last, epoch 3)") for c in caps), caps
    assert not alerts(section(page, "classes"))
    assert "not one checkpoint" in captions(section(page, "training"))[0]

    # refreshed: nothing is stale, every caption names the current checkpoint
    assert main(["analyze", str(run_dir), "--only", "stats,errors", "--examples", "4", "--mistakes", "4"]) == 0
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "0,1"]) == 0
    page = build_report(run_dir).read_text()
    assert not alerts(page)
    for sid in ("analysis-stats", "examples", "analysis-saliency"):
        caps = captions(section(page, sid))
        assert caps and all(c.endswith("(checkpoint last, epoch 3)") for c in caps), (sid, caps)
        assert f"last, epoch 3, sha256 {now}" in section(page, sid)

    # a report about the best checkpoint marks analyses of the last one when the files differ
    assert main(["report", str(run_dir), "--checkpoint", "best"]) == 0
    said = alerts(section((run_dir / "report.html").read_text(), "analysis-stats"))
    assert len(said) == 1 and "not the best checkpoint" in said[0] and "--checkpoint best" in said[0]


def test_analyses_without_a_hash_are_stale_when_older_than_the_checkpoint(resumed, tmp_path):
    """Analyses written before checkpoints were hashed: their file time against the checkpoint's."""
    from convlens.report import build_report

    run_dir = copy_run(resumed[0], tmp_path / "run")
    p = run_dir / "analysis" / "stats.json"
    doc = read_json(p)
    for key in ("checkpoint_epoch", "checkpoint_sha256"):
        doc.pop(key)
    write_json(p, doc)
    ckpt = (run_dir / "checkpoints" / "last.pt").stat().st_mtime
    os.utime(p, (ckpt - 60, ckpt - 60))
    said = alerts(section(build_report(run_dir).read_text(), "analysis-stats"))
    assert len(said) == 1 and "records no checkpoint hash" in said[0] and "convlens analyze" in said[0]
    os.utime(p, (ckpt + 60, ckpt + 60))
    text = section(build_report(run_dir).read_text(), "analysis-stats")
    assert not alerts(text) and "last, no hash recorded" in text


def test_analyze_and_explain_follow_the_checkpoint_eval_used(resumed, tmp_path):
    run_dir = copy_run(resumed[0], tmp_path / "run")
    ev = read_json(run_dir / "eval.json")
    ev["checkpoint"] = "best"  # as `convlens eval RUN --checkpoint best` leaves it
    write_json(run_dir / "eval.json", ev)
    assert main(["analyze", str(run_dir), "--only", "stats"]) == 0
    assert main(["explain", str(run_dir), "--method", "saliency", "--images", "0"]) == 0
    best = runload.checkpoint_info(run_dir, "best")
    assert best["checkpoint_sha256"] == sha12(run_dir / "checkpoints" / "best.pt")
    for name in ("stats", "saliency"):
        assert identity(read_json(run_dir / "analysis" / f"{name}.json")) == identity(best)
    assert main(["analyze", str(run_dir), "--only", "stats", "--checkpoint", "last"]) == 0
    assert identity(read_json(run_dir / "analysis" / "stats.json")) == identity(
        runload.checkpoint_info(run_dir, "last")
    )
