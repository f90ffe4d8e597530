"""The training loop: distribution, exact resume, NaN stop, RUN/ outputs and input errors."""
import json

import numpy as np
import pytest
import tensorflow as tf

import test_train_models as models
from ufl.config.base import ConfigError
from ufl.config.train import TrainConfig
from ufl.trainers.run_dir import load_trained_model, read_history
from ufl.errors import TrainingDiverged
from ufl.trainers import distributed_input
from ufl.trainers.distributed_input import DistributedInput
from ufl.trainers.step_executor import DistributedSteps
from ufl.trainers.strategy import choose_strategy
from ufl.trainers.train_loop import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    models.make_data(path, rows=256, eval_rows=64)
    return str(path)


def config(data, out, **settings):
    values = dict(preset="test-linear-ae", data=data, out=str(out), model={"kind": "test-linear-ae", "n_codes": 8},
                  epochs=2, batch_size=16, optimizer={"name": "adam", "learning_rate": 0.01},
                  checkpoint_every=8, steps_per_execution=4)
    values.update(settings)
    return TrainConfig(**values)


def weights(run_dir):
    return [np.asarray(w) for w in load_trained_model(str(run_dir)).model.get_weights()]


def test_mirrored_on_two_devices_matches_one_device(data_dir, tmp_path, two_cpu_devices):
    single = train(config(data_dir, tmp_path / "single"))
    mirrored = train(config(data_dir, tmp_path / "mirrored"),
                     strategy=choose_strategy("mirrored", devices=two_cpu_devices))
    assert (mirrored["strategy"], mirrored["replicas"], mirrored["execution"]) == ("mirrored", 2, "iterator")
    assert (single["strategy"], single["replicas"], single["execution"]) == ("default", 1, "fused")
    assert mirrored["steps"] == single["steps"] == 2 * (256 // 16)
    for a, b in zip(weights(tmp_path / "single"), weights(tmp_path / "mirrored")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert mirrored["train_objective"] == pytest.approx(single["train_objective"], rel=1e-5)
    # Training did something: the loss fell well below the first execution's.
    history = [r["loss"] for r in read_history(str(tmp_path / "single")) if r["split"] == "train"]
    assert history[-1] < 0.5 * history[0]


def test_closed_form_update_sees_every_example_once_per_epoch_on_two_replicas(data_dir, tmp_path,
                                                                              two_cpu_devices):
    run = config(data_dir, tmp_path / "run", preset="test-mean-patch", model={"kind": "test-mean-patch"},
                 epochs=1, batch_size=32)
    metrics = train(run, strategy=choose_strategy("mirrored", devices=two_cpu_devices))
    model = load_trained_model(run.out).model
    patches = models.make_data(tmp_path / "copy", rows=256, eval_rows=64)["train"]
    assert float(model.seen.numpy()) == 256.0
    np.testing.assert_allclose(model.total.numpy(), patches.sum(axis=0), rtol=1e-4, atol=1e-3)
    assert metrics["eval_objective"] is not None


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streaming"])
def test_stopped_and_resumed_run_equals_uninterrupted_run(in_memory, data_dir, tmp_path, monkeypatch):
    if not in_memory:
        monkeypatch.setattr(distributed_input, "IN_MEMORY_BYTES", 0)
    assert train(config(data_dir, tmp_path / "whole"))["execution"] == ("fused" if in_memory else "iterator")
    first = train(config(data_dir, tmp_path / "parts", max_steps=20))  # stops after batch 4 of epoch 2
    assert first["steps"] == 20
    resumed = train(config(data_dir, tmp_path / "parts"))
    assert resumed["resumed_from_step"] == 20 and resumed["steps"] == 2 * 16
    for a, b in zip(weights(tmp_path / "whole"), weights(tmp_path / "parts")):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    steps = [r["step"] for r in read_history(str(tmp_path / "parts")) if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 32


def test_in_memory_eval_gives_the_metrics_of_the_iterator_eval(data_dir, tmp_path):
    # the fused run evaluates its in-memory split in chunks; the iterator path pulls the same two whole
    # batches of 24 (of 64 eval rows) through tf.data
    metrics = train(config(data_dir, tmp_path / "run", epochs=1, batch_size=24))
    assert metrics["execution"] == "fused" and "loss" in metrics["eval"]
    model = load_trained_model(str(tmp_path / "run")).model
    strategy = tf.distribute.get_strategy()
    eval_input = DistributedInput(strategy, data_dir, "eval", global_batch_size=24, count=64,
                                  patch_dim=model.patch_dim, shuffle=False)
    streamed = DistributedSteps(model, strategy, jit_compile=False).run_eval(eval_input, 0)
    assert metrics["eval"].keys() == streamed.keys()
    for key, value in streamed.items():
        assert metrics["eval"][key] == pytest.approx(value, rel=1e-5, abs=1e-7)
    evals = [r for r in read_history(str(tmp_path / "run")) if r["split"] == "eval"]
    assert evals[-1]["loss"] == pytest.approx(metrics["eval_objective"])


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    from ufl.pipeline.tfrecord import write_data_dir

    patches = models.make_data(tmp_path / "data", rows=256, eval_rows=0)["train"]
    train(config(str(tmp_path / "data"), tmp_path / "run", epochs=1, checkpoint_every=4))  # good, step 16
    patches[200] = np.nan  # then the data goes bad
    write_data_dir(str(tmp_path / "data"), {"train": patches}, patch_size=(4, 4), channels=1)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step \d+ \(epoch 2\); stopped and kept the "
                                               r"last good checkpoint \(step \d+\)") as error:
        train(config(str(tmp_path / "data"), tmp_path / "run", epochs=2, checkpoint_every=4))
    bad_step = int(error.value.args[0].split("at step ")[1].split(" ")[0])
    kept_step = int(error.value.args[0].split("checkpoint (step ")[1].split(")")[0])
    assert 16 <= kept_step < bad_step <= kept_step + 4
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith(f"ckpt-{kept_step}")
    assert all(np.all(np.isfinite(w)) for w in weights(tmp_path / "run"))


def test_run_dir_holds_config_data_copies_plots_logs_and_metrics(data_dir, tmp_path):
    metrics = train(config(data_dir, tmp_path / "run", epochs=1))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["model"] == {"kind": "test-linear-ae", "n_codes": 8}
    assert (run / "data" / "metadata.json").exists() and (run / "data" / "stats.npz").exists()
    for name in ("filters.png", "reconstructions.png", "loss.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["reference"] == {"loss": 1.0, "source": "made up for tests"}
    assert saved["steps"] == 16 and saved["epochs"] == 1.0
    assert 0 < saved["eval_objective"] < saved["train"]["loss"] * 10
    assert 0 < saved["mean_nonzeros"] <= 8 and saved["examples_per_second"] > 0
    assert saved["eval_objective"] == pytest.approx(metrics["eval_objective"])
    tags = set()
    for event_file in (run / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"train/loss", "train/reconstruction_error", "train/sparsity", "train/examples_per_second",
            "eval/loss", "filters"} <= tags


def test_data_without_metadata_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match="has no metadata.json: it is not a complete ufl DATA/ directory"):
        train(config(str(tmp_path / "data"), tmp_path / "run"))


def test_run_of_another_preset_is_refused_unless_restart(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "run", epochs=1))
    other = dict(preset="test-mean-patch", model={"kind": "test-mean-patch"}, epochs=1)
    with pytest.raises(ConfigError, match="was made by preset 'test-linear-ae', not 'test-mean-patch'"):
        train(config(data_dir, tmp_path / "run", **other))
    assert train(config(data_dir, tmp_path / "run", restart=True, **other))["steps"] == 16


def test_changed_model_settings_do_not_restore_silently(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "run", epochs=1))
    with pytest.raises(ConfigError, match="the model settings changed since it was saved: use --restart"):
        train(config(data_dir, tmp_path / "run", model={"kind": "test-linear-ae", "n_codes": 5}))


def test_model_that_does_not_fit_the_data_is_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"model 'test-linear-ae' cannot train on the samples of shape "
                                          r"\(4, 4, 1\) .*n_codes 0 is invalid"):
        train(config(data_dir, tmp_path / "run", model={"kind": "test-linear-ae", "n_codes": 0}))


def test_batch_larger_than_the_data_is_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="batch_size 512 is invalid; .* has only 256 training patches"):
        train(config(data_dir, tmp_path / "run", batch_size=512))


def test_batch_not_divisible_by_replicas_is_refused(data_dir, tmp_path, two_cpu_devices):
    with pytest.raises(ConfigError, match="batch_size 15 is invalid; 2 replicas share it"):
        train(config(data_dir, tmp_path / "run", batch_size=15),
              strategy=choose_strategy("mirrored", devices=two_cpu_devices))


def test_labelled_model_on_unlabelled_data_is_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"trains with labels but .* has none \(source 'array'\); "
                                          "preprocess a labelled source such as builtin:mnist"):
        train(config(data_dir, tmp_path / "run", model={"kind": "test-labelled"}))


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streaming"])
def test_same_config_and_data_give_the_same_weights_bit_for_bit(in_memory, tmp_path, monkeypatch):
    if not in_memory:
        monkeypatch.setattr(distributed_input, "IN_MEMORY_BYTES", 0)
    data = str(tmp_path / "data")
    models.make_data(data, rows=512, eval_rows=0, num_shards=4)  # shards read in parallel when streaming
    runs = [train(config(data, tmp_path / name, seed=7)) for name in ("first", "second")]
    assert runs[0]["execution"] == ("fused" if in_memory else "iterator")
    for a, b in zip(weights(tmp_path / "first"), weights(tmp_path / "second")):
        np.testing.assert_array_equal(a, b)
    other = train(config(data, tmp_path / "other-seed", seed=8))  # the seed is what decides
    assert other["train_objective"] != runs[0]["train_objective"]
