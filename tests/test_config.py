import pytest

from convlens.config import load_config, parse_override
from convlens.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "train.optimizer.lr=0.2", "data.augment.crop={padding: 2}"])
    assert cfg.train.epochs == 3
    assert cfg.train.optimizer.lr == 0.2
    assert cfg.data.augment.crop.padding == 2


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config({"train": {"epochz": 3}})
    msg = str(e.value)
    assert "unknown key `train.epochz`" in msg
    assert "train.epochs" in msg


def test_out_of_range_names_key_value_and_bound():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.optimizer.lr=-1"])
    msg = str(e.value)
    assert "`train.optimizer.lr`" in msg and "-1" in msg and "greater than 0" in msg


def test_wrong_type():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.batch_size=lots"])
    assert "`train.batch_size`" in str(e.value) and "'lots'" in str(e.value)


def test_several_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config({"train": {"epochs": 0, "label_smoothing": 2}})
    msg = str(e.value)
    assert "train.epochs" in msg and "train.label_smoothing" in msg


def test_bad_choice_lists_allowed():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.optimizer.name=rmsprop"])
    assert "'sgd', 'adam' or 'adamw'" in str(e.value)


def test_unknown_dataset_and_preset():
    with pytest.raises(ConfigError, match="unknown data set 'cifar100'.*cifar10"):
        load_config(None, ["data.name=cifar100"])
    with pytest.raises(ConfigError, match="unknown preset 'net9'.*net4"):
        load_config({"model": {"preset": "net9"}})


def test_preset_option_errors():
    with pytest.raises(ConfigError, match="no option 'widht'.*width"):
        load_config({"model": {"preset": "net1", "options": {"widht": 8}}})
    with pytest.raises(ConfigError, match=r"dropout=1\.5 is out of range"):
        load_config({"model": {"preset": "net3", "options": {"dropout": 1.5}}})


def test_layer_list_errors():
    with pytest.raises(ConfigError, match="model.layers.0"):
        load_config({"model": {"layers": [{"type": "conv", "kernel": 3}]}})
    with pytest.raises(ConfigError, match="model.layers.1"):
        load_config({"model": {"layers": ["flatten", {"type": "lineer"}]}})


def test_override_syntax():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_yaml_roundtrip(tmp_path):
    cfg = load_config({"model": {"layers": ["flatten", {"type": "linear", "out": "classes"}]}})
    p = tmp_path / "c.yaml"
    cfg.save(p)
    assert load_config(p) == cfg


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/x.yaml")
