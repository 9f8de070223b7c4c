"""The sweep file: what it accepts, and bad input failing with a clear message before any trial."""

from __future__ import annotations

import pytest
from sweep_common import sweep_dict, write_sweep

from convlens.cli import main
from convlens.sweep import StorageError, SweepError, load_sweep, run_sweep
from convlens.sweep.spec import short_names


def test_grid_cells_points_and_short_names(tmp_path):
    s = load_sweep(sweep_dict(seeds=[3, 5]))
    assert [p.short for p in s.params] == ["lr", "width"]
    # RunBuilder order: the first key varies slowest; every point once per seed
    assert s.points() == [
        {"train.optimizer.lr": 0.05, "model.options.width": 4},
        {"train.optimizer.lr": 0.05, "model.options.width": 6},
        {"train.optimizer.lr": 0.1, "model.options.width": 4},
        {"train.optimizer.lr": 0.1, "model.options.width": 6},
    ]
    cells = s.cells()
    assert len(cells) == 8 and [c["seed"] for c in cells[:2]] == [3, 5] and cells[7]["point"] == 3
    cfg = s.trial_config(s.points()[3], seed=5, threads=2)
    assert (cfg.train.optimizer.lr, cfg.model.options["width"], cfg.seed) == (0.1, 6, 5)
    assert cfg.train.threads == 1  # the base config set it: a sweep does not override it
    assert short_names(["data.augment.flip.p", "data.augment.erase.p", "train.optimizer.lr", "train.epochs"]) == {
        "data.augment.flip.p": "flip.p",
        "data.augment.erase.p": "erase.p",
        "train.optimizer.lr": "lr",
        "train.epochs": "train.epochs",
    }  # `epochs` is a column of the tables already


def test_seed_count_starts_at_the_config_seed_and_base_file_is_relative(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "base.yaml").write_text(
        "seed: 7\ndata: {name: digits, val_fraction: 0.2}\nmodel: {preset: tiny}\n"
    )
    (tmp_path / "cfg" / "s.yaml").write_text(
        "base: base.yaml\nconfig: {train: {epochs: 1}}\nparams: {train.batch_size: [32, 64]}\nseeds: 3\n"
    )
    s = load_sweep(tmp_path / "cfg" / "s.yaml")
    assert s.name == "s" and s.seeds == [7, 8, 9] and s.base["train"]["epochs"] == 1


def test_structured_values_round_trip_through_optuna_choices():
    s = load_sweep(sweep_dict(params={"data.augment.crop": [None, {"padding": 1}]}))
    p = s.params[0]
    assert p.encoded and p.choices() == ["null", '{"padding": 1}']
    assert p.decode(p.choices()[1]) == {"padding": 1}
    assert s.trial_config({p.key: {"padding": 1}}, 0).data.augment.crop.padding == 1


def test_resolved_sweep_file_keeps_the_fingerprint(tmp_path):
    s = load_sweep(write_sweep(tmp_path, seeds=2))
    copy = tmp_path / "copy.yaml"
    copy.write_text(s.to_yaml())
    again = load_sweep(copy)
    assert again.fingerprint() == s.fingerprint() and again.seeds == s.seeds
    assert load_sweep(sweep_dict(seeds=3)).fingerprint() != s.fingerprint()


@pytest.mark.parametrize(
    "params, expect",
    [
        ({"train.optimiser.lr": [0.1]}, ["`params.train.optimiser.lr`: no such config key", "train.optimizer.lr"]),
        ({"model.options.widht": [4]}, ["`params.model.options.widht`", "model.options.width"]),
        ({"lr": [0.1, 0.2]}, ["`params.lr`: no such config key", "closest valid keys: train.optimizer.lr"]),
        ({"train.optimizer.lr": []}, ["`params.train.optimizer.lr`: an empty list"]),
        ({"train.optimizer.lr": {"low": 0.1, "high": 0.5}}, ["method grid needs a list of values"]),
        ({"train.batch_size": 64}, ["give a list of values or a range"]),
        ({"train.batch_size": [64, 0]}, ["grid point 1 (train.batch_size=0)", "`train.batch_size`", "greater than 0"]),
        ({"model.options.width": [4, 0]}, ["grid point 1", "model.options.width=0 is out of range"]),
    ],
)
def test_bad_grid_names_the_key_and_what_is_allowed(params, expect):
    with pytest.raises(SweepError) as e:
        load_sweep(sweep_dict(params=params))
    for text in expect:
        assert text in str(e.value)


def test_bad_ranges_and_budgets():
    with pytest.raises(SweepError, match=r"`params.train.optimizer.lr`: low > high \(0.5 > 0.1\)"):
        load_sweep(
            sweep_dict(method="random", budget={"trials": 2}, params={"train.optimizer.lr": {"low": 0.5, "high": 0.1}})
        )
    with pytest.raises(SweepError, match="log: true needs low > 0"):
        load_sweep(
            sweep_dict(
                method="tpe", budget={"trials": 2}, params={"train.optimizer.lr": {"low": 0, "high": 0.1, "log": True}}
            )
        )
    with pytest.raises(SweepError, match="method random needs budget.trials"):
        load_sweep(sweep_dict(method="random", params={"train.optimizer.lr": {"low": 0.01, "high": 0.1}}))
    with pytest.raises(SweepError, match="a grid runs every combination once"):
        load_sweep(sweep_dict(budget={"trials": 3}))
    with pytest.raises(SweepError, match="unknown key `budgte`; did you mean budget"):
        load_sweep({**sweep_dict(), "budgte": {"trials": 3}})
    with pytest.raises(SweepError, match="`params.seed`: give seeds with `seeds:`"):
        load_sweep(sweep_dict(params={"seed": [0, 1]}))
    with pytest.raises(SweepError, match="the sweep varies nothing"):
        load_sweep(sweep_dict(params={}))
    with pytest.raises(SweepError, match=r"data.val_fraction: 0"):
        config = {**sweep_dict()["config"], "data": {"name": "digits", "val_fraction": 0}}
        load_sweep({**sweep_dict(), "config": config})
    assert load_sweep(sweep_dict(budget={"time": "2m"})).spec.budget.time == 120


def test_unreachable_storage_fails_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(StorageError, match=r"cannot reach the storage postgresql://nobody@127.0.0.1:1/x"):
        run_sweep(sweep_dict(), out=out, storage="postgresql://nobody@127.0.0.1:1/x")
    assert not out.exists()
    # the same through the CLI, for a worker: exit code 2 and the message, no traceback
    path = write_sweep(tmp_path)
    url = "postgresql://nobody:secret@127.0.0.1:1/x"
    rc = main(["sweep", "worker", str(path), "--storage", url, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the storage postgresql://nobody:***@127.0.0.1:1/x" in err and "secret" not in err


def test_cli_rejects_options_of_another_mode(tmp_path, capsys):
    assert main(["sweep", "table", str(tmp_path), "--workers", "2"]) == 2
    assert "--workers cannot be used with `convlens sweep table`" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
