"""TensorBoard shows the whole run: every kind of event is read back with TensorBoard's own reader."""

import numpy as np
import pytest
import torch
from conftest import tiny_config
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2

from convlens import runload
from convlens.config import load_config
from convlens.errors import ConfigError
from convlens.run import Layout
from convlens.train import train
from convlens.train.metrics import filter_grid


def _events(run_dir):
    acc = ea.EventAccumulator(str(Layout(run_dir).tb_dir), size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    return acc.Reload()


def _hparams(acc) -> dict:
    content = acc.PluginTagToContent("hparams")
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            return {k: v.ListFields()[0][1] for k, v in data.session_start_info.hparams.items()}
    return {}


def test_a_run_logs_scalars_hparams_histograms_images_text_and_test_metrics(tmp_path):
    cfg = tiny_config(**{"eval.every_epoch": True, "train.tensorboard": {"embeddings": True, "embedding_images": 20}})
    run = train(cfg, tmp_path / "r", echo=lambda s: None)
    acc = _events(run.path)
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    assert {"loss/train", "accuracy/val", "accuracy/test", "loss/test", "test/accuracy"} <= scalars
    assert {"hparams/best_val_acc", "hparams/test_acc", "hparams/final_train_acc"} <= scalars
    # per-epoch test accuracy is in metrics.jsonl and TensorBoard, labelled as test
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["test_acc"] <= 1 for r in rows)
    assert [e.value for e in acc.Scalars("accuracy/test")] == pytest.approx([r["test_acc"] for r in rows])
    assert acc.Scalars("hparams/test_acc")[0].value == pytest.approx(run.eval["accuracy"])
    # one histogram of weights and of gradients per parameter, once per epoch
    names = [n for n, _ in runload.load_model(run, "last").named_parameters()]
    assert {f"weights/{n}" for n in names} | {f"gradients/{n}" for n in names} <= set(tags["histograms"])
    assert [e.step for e in acc.Histograms(f"weights/{names[0]}")] == [1, 2]
    first = next(n for n, m in runload.load_model(run, "last").named_modules() if isinstance(m, torch.nn.Conv2d))
    assert {f"filters/{first}", "test/confusion"} <= set(tags["images"])
    assert [e.step for e in acc.Images(f"filters/{first}")] == [1, 2]
    assert "config/text_summary" in tags["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "batch_size: 64" in text
    hp = _hparams(acc)
    assert hp["train.optimizer.lr"] == pytest.approx(0.05) and hp["model.preset"] == "tiny"
    assert hp["train.batch_size"] == 64
    # the projector's files: 20 penultimate feature vectors with their labels
    proj = list(Layout(run.path).tb_dir.rglob("tensors.tsv"))
    assert len(proj) == 1 and len(proj[0].read_text().splitlines()) == 20


def test_per_epoch_test_accuracy_never_picks_the_best_checkpoint(tmp_path):
    cfg = tiny_config(**{"eval.every_epoch": True, "eval.checkpoint": "best", "train.epochs": 3})
    run = train(cfg, tmp_path / "r", echo=lambda s: None)
    rows = run.metrics()
    best_val = max(range(3), key=lambda i: (rows[i]["val_acc"], -i)) + 1
    assert torch.load(Layout(run.path).checkpoint_file("best"), weights_only=False)["epoch"] == best_val


def test_histograms_and_images_switch_off(tmp_path):
    cfg = tiny_config(**{"train.tensorboard": {"histograms": False, "images": False}})
    acc = _events(train(cfg, tmp_path / "r", echo=lambda s: None).path)
    assert acc.Tags()["histograms"] == [] and acc.Tags()["images"] == []
    assert "loss/train" in acc.Tags()["scalars"]
    off = train(tiny_config(**{"train.tensorboard": {"enabled": False}}), tmp_path / "q", echo=lambda s: None)
    assert not Layout(off.path).tb_dir.exists() or not any(Layout(off.path).tb_dir.iterdir())


def test_tensorboard_settings_are_validated():
    with pytest.raises(ConfigError, match="train.tensorboard.histogram"):
        load_config({"train": {"tensorboard": {"histogram": True}}})
    with pytest.raises(ConfigError, match="train.nope"):
        load_config({"train": {"tensorboard": {"hparams": ["train.nope"]}}})


def test_filter_grid_places_each_filter_scaled_around_grey():
    w = torch.zeros(2, 1, 2, 2)
    w[0, 0] = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    w[1, 0, 0, 0] = -4.0
    grid = filter_grid(w)
    assert grid.shape == (1 * 3 + 1, 2 * 3 + 1, 3)  # 2 filters: one row of two 2x2 cells, 1-pixel gaps
    np.testing.assert_allclose(grid[1:3, 1:3, 0], [[1.0, 0.0], [0.75, 0.5]])
    np.testing.assert_allclose(grid[1:3, 4:6, 1], [[0.0, 0.5], [0.5, 0.5]])
    assert (grid[0] == 1).all() and (grid[:, 3] == 1).all() and (grid[3] == 1).all()  # the gaps are white
    assert filter_grid(torch.zeros(5, 3, 1, 1)).shape == (2 * 2 + 1, 3 * 2 + 1, 3)  # 5 filters: 2 rows of 3


def test_each_trial_of_a_sweep_shows_its_swept_keys_in_the_hparams_tab(tmp_path):
    from sweep_common import write_sweep

    from convlens.sweep import run_sweep

    path = write_sweep(tmp_path, params={"train.optimizer.lr": [0.05, 0.1]}, epochs=1)
    out = run_sweep(path, out=tmp_path / "out", echo=lambda s: None, table=False)
    trials = sorted((out / "trials").iterdir())
    assert len(trials) == 2
    seen = set()
    for trial in trials:
        acc = _events(trial)
        hp = _hparams(acc)
        assert "train.optimizer.lr" in hp and "model.options.width" not in hp
        seen.add(round(hp["train.optimizer.lr"], 6))
        assert {"hparams/best_val_acc", "hparams/test_acc"} <= set(acc.Tags()["scalars"])
        assert acc.Tags()["histograms"] and acc.Tags()["images"]
    assert seen == {0.05, 0.1}
