"""Faults during training end in one line and lose nothing: unreadable checkpoints, corrupt DATA/ shards."""
import json
import os

import numpy as np
import pytest

import test_train_models as models
from ufl.cli import main
from ufl.config.train import TrainConfig
from ufl.errors import DataError
from ufl.trainers.run_dir import load_trained_model
from ufl.trainers.train_loop import train


def config(data, out, **settings):
    values = dict(preset="test-linear-ae", data=str(data), out=str(out), model={"kind": "test-linear-ae", "n_codes": 8},
                  epochs=1, batch_size=16, optimizer={"name": "adam", "learning_rate": 0.01},
                  checkpoint_every=8, steps_per_execution=4)
    values.update(settings)
    return TrainConfig(**values)


def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[:int(len(data) * keep)])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    models.make_data(path, rows=256, eval_rows=32)
    return path


def test_unreadable_newest_checkpoint_resumes_from_the_previous_one(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(data_dir, run, keep_checkpoints=2))  # 16 steps: ckpt-8 and ckpt-16 are kept
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-16.index", "ckpt-8.index"]
    truncate(next((run / "checkpoints").glob("ckpt-16.data-*")))
    assert load_trained_model(str(run)).checkpoint.endswith("ckpt-8")  # what export restores, too
    capsys.readouterr()
    metrics = train(config(data_dir, run, epochs=2, keep_checkpoints=2))
    output = capsys.readouterr().out
    assert "ckpt-16 cannot be read" in output
    assert "resuming from the previous checkpoint, ckpt-8 (step 8)" in output
    assert metrics["resumed_from_step"] == 8 and metrics["steps"] == 32
    whole = tmp_path / "whole"
    train(config(data_dir, whole, epochs=2))
    for a, b in zip(load_trained_model(str(run)).model.get_weights(), load_trained_model(str(whole)).model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_no_readable_checkpoint_is_one_line_naming_restart(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "test-linear-ae", "--data", str(data_dir), "--out", str(run), "--epochs", "1"]) == 0
    for path in (run / "checkpoints").glob("ckpt-*.data-*"):
        truncate(path, keep=0.3)
    capsys.readouterr()
    assert main(["train", "test-linear-ae", "--data", str(data_dir), "--out", str(run), "--epochs", "2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "no checkpoint in" in error and "can be read" in error and "use --restart" in error


def test_corrupt_data_shard_names_the_file_the_record_and_the_fix(tmp_path, capsys):
    models.make_data(tmp_path / "data", rows=256, eval_rows=0, num_shards=2)
    shard = tmp_path / "data" / "train-00001-of-00002.tfrecord.gz"
    truncate(shard)
    with pytest.raises(DataError, match=rf"DATA shard {shard} is corrupt at record \d+ \(.*\); re-run 'ufl "
                                        r"preprocess --out .*' .* or pass --skip-corrupt-records"):
        train(config(tmp_path / "data", tmp_path / "run"))
    capsys.readouterr()
    argv = ["train", "test-linear-ae", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run2"),
            "--epochs", "1"]
    assert main(argv) == 2
    assert "train-00001-of-00002.tfrecord.gz is corrupt at record" in capsys.readouterr().err

    assert main(argv + ["--skip-corrupt-records"]) == 0
    output = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert 0 < metrics["skipped_corrupt_records"] < 128  # of the 128 records of the truncated shard
    assert metrics["steps"] == (256 - metrics["skipped_corrupt_records"]) // 16
    assert f"skipped {metrics['skipped_corrupt_records']} corrupt or unreadable records" in output


def test_finished_run_rerun_changes_nothing_and_more_epochs_continue(data_dir, tmp_path, capsys):
    argv = ["train", "test-linear-ae", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main(argv) == 0
    files = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (tmp_path / "run").rglob("*")
             if path.is_file()}
    capsys.readouterr()
    assert main(argv) == 0
    assert "is complete after epoch 1 (step 16); nothing to train (a larger --epochs trains on" in \
        capsys.readouterr().out
    after = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (tmp_path / "run").rglob("*")
             if path.is_file()}
    assert after == files
    assert main(argv[:-1] + ["2"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["resumed_from_step"], metrics["steps"]) == (16, 32)
    assert metrics["examples_per_second"] > 0


def test_set_keys_the_model_does_not_use_are_refused_and_leave_no_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "test-mean-patch", "--data", str(data_dir), "--out", str(out)]
    assert main(argv + ["--set", "optimizer.learning_rate=0.1"]) == 2
    error = capsys.readouterr().err
    assert "--set key 'optimizer.learning_rate' is invalid; this model (test-mean-patch) learns without an " \
           "outer optimizer, so it uses only: " in error
    assert "epochs" in error and "optimizer" not in error.split("uses only: ")[1]
    assert main(["train", "test-linear-ae", "--data", str(data_dir), "--out", str(out),
                 "--set", "model.n_codes=0"]) == 2
    assert "n_codes 0 is invalid" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_jit_compile_auto_is_resolved_per_model_family_and_recorded(data_dir, tmp_path):
    import tensorflow as tf

    from ufl.trainers.train_loop import resolve_jit_compile

    train(config(data_dir, tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["jit_compile"] is True
    model = load_trained_model(str(tmp_path / "run")).model
    strategy = tf.distribute.get_strategy()
    assert resolve_jit_compile("auto", model, strategy) is True
    model.xla_on_cpu = False  # as the convolutional families declare
    assert resolve_jit_compile("auto", model, strategy) is bool(tf.config.list_logical_devices("GPU"))
    assert resolve_jit_compile(True, model, strategy) is True
    model.supports_jit = False
    assert resolve_jit_compile(True, model, strategy) is False


@pytest.mark.parametrize("relative", [True, False])
def test_checkpoints_are_found_for_relative_and_absolute_run_dirs(tmp_path, monkeypatch, relative):
    import tensorflow as tf

    from ufl.trainers.checkpoints import checkpoints_newest_first, newest_readable

    monkeypatch.chdir(tmp_path)
    directory = "run/checkpoints" if relative else str(tmp_path / "run" / "checkpoints")
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(weight=tf.Variable(1.0)), directory, max_to_keep=2)
    manager.save(checkpoint_number=3)
    manager.save(checkpoint_number=7)
    assert checkpoints_newest_first(directory) == [os.path.join(directory, "ckpt-7"),
                                                   os.path.join(directory, "ckpt-3")]
    assert newest_readable(directory) == os.path.join(directory, "ckpt-7")
