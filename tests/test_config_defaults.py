"""Settings a report's numbers depend on are never hidden: the run log names every training
default the config left unset, and config.yaml holds them all."""

import yaml
from conftest import tiny_config

from convlens.config import load_config, unstated_defaults
from convlens.train import train


def test_unstated_defaults_name_what_the_optimiser_and_schedule_use():
    cfg = load_config({"train": {"epochs": 3, "optimizer": {"name": "sgd", "lr": 0.01}}})
    got = unstated_defaults(cfg)
    assert "train.optimizer.momentum=0.9" in got and "train.optimizer.nesterov=False" in got
    assert "train.batch_size=128" in got and "train.schedule.name=constant" in got
    assert not any(k.startswith(("train.epochs=", "train.optimizer.lr=", "train.optimizer.name=")) for k in got)
    assert not any("betas" in k or "step_epochs" in k for k in got)  # not read by sgd / a constant schedule
    adam = load_config({"train": {"optimizer": {"name": "adam"}, "schedule": {"name": "step", "gamma": 0.5}}})
    got = unstated_defaults(adam)
    assert "train.optimizer.betas=[0.9, 0.999]" in got and "train.schedule.step_epochs=30" in got
    assert not any("momentum" in k or "gamma" in k for k in got)


def test_the_run_log_lists_them_and_config_yaml_holds_every_default(tmp_path):
    lines = []
    run = train(tiny_config(**{"train.epochs": 1}), tmp_path / "r", echo=lines.append)
    note = [line for msg in lines for line in msg.splitlines() if line.startswith("defaults (not set in the config): ")]
    assert len(note) == 1 and "train.optimizer.momentum=0.9" in note[0]
    assert "train.schedule.name=constant" in note[0] and "train.optimizer.lr" not in note[0]
    saved = yaml.safe_load((run.path / "config.yaml").read_text())["train"]
    assert saved["optimizer"]["momentum"] == 0.9 and saved["schedule"]["name"] == "constant"
    # the saved config states everything: training it again has nothing left to default
    assert unstated_defaults(load_config(run.path / "config.yaml")) == []
