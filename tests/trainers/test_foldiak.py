"""Földiák's network: settled outputs are sparse (rate p), decorrelated and learn distinct features; the failed
attempt (one feed-forward pass, positive random lateral weights) does none of that."""
import json

import numpy as np
import pytest
import tensorflow as tf

from ufl import cli
from ufl.config import ConfigError
from ufl.pipeline.normalize import apply_normalization, fit_statistics
from ufl.pipeline.sources import load_images
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.foldiak import FoldiakNetwork, settle_outputs
from ufl.trainers.run_dir import load_trained_model

STEPS = ("contrast", "zca")
#: Model options of the known failed variant: outputs from one feed-forward pass (``settle=False``) through
#: fixed positive random lateral weights, only the feed-forward weights learning. Every unit fires for
#: every input (no sparsity) and all units learn the same weights.
FAILED_ATTEMPT_OPTIONS = {"settle": False, "lateral_init": "positive_random", "constrain_lateral": False,
                          "lateral_rate": 0.0, "threshold_rate": 0.0}
FAILED_ATTEMPT = [arg for key, value in FAILED_ATTEMPT_OPTIONS.items()
                  for arg in ("--set", f"model.{key}={json.dumps(value).strip(chr(34))}")]


def natural_patches(count, seed, size=10):
    """``(count, size*size)`` random gray patches of the builtin:natural photos (center crops of equal size)."""
    images, _ = load_images("builtin:natural")
    windows = np.lib.stride_tricks.sliding_window_view(images[..., 0], (size, size), axis=(1, 2))
    rng = np.random.default_rng(seed)
    picks = (rng.integers(0, windows.shape[0], count), rng.integers(0, windows.shape[1], count),
             rng.integers(0, windows.shape[2], count))
    return windows[picks].reshape(count, -1).astype(np.float64)


@pytest.fixture(scope="module")
def natural_data(tmp_path_factory):
    """DATA/ of 30,000 contrast-normalized, ZCA-whitened 10x10 natural patches, and 10,000 held-out ones."""
    raw_train, raw_eval = natural_patches(30_000, seed=0), natural_patches(10_000, seed=1)
    stats = fit_statistics(raw_train, STEPS, zca_epsilon=0.01)
    train = apply_normalization(raw_train, STEPS, stats).astype(np.float32)
    held_out = apply_normalization(raw_eval, STEPS, stats).astype(np.float32)
    data_dir = str(tmp_path_factory.mktemp("natural") / "DATA")
    write_data_dir(data_dir, {"train": train}, patch_size=(10, 10), channels=1, normalization={"steps": list(STEPS)},
                   stats={k: np.asarray(v, np.float32) for k, v in stats.items()}, source="builtin:natural")
    return data_dir, held_out


def foldiak_checks(model, patches):
    """The issue's three checks on held-out patches, plus whether the features were learned at all."""
    outputs = model.encode(tf.constant(patches)).numpy()
    rates = outputs.mean(axis=0)
    off_diagonal = ~np.eye(model.n_units, dtype=bool)
    varying = outputs.std(axis=0) > 0
    correlation = np.corrcoef(outputs[:, varying].T) if varying.sum() > 1 else np.ones((1, 1))
    weights = model.feedforward.numpy()
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True)
    inputs = patches / np.linalg.norm(patches, axis=1, keepdims=True)
    # Hebbian fixed point: each unit's weights point at the mean of the inputs it fires for.
    preferred = outputs.T @ inputs / np.maximum(outputs.sum(axis=0), 1)[:, None]
    alignment = np.sum(unit * preferred, axis=1) / np.maximum(np.linalg.norm(preferred, axis=1), 1e-12)
    figures = {"mean_activity": float(rates.mean()),
               "silent_or_constant_units": int((~varying).sum()),
               "mean_abs_correlation": float(np.abs(correlation[~np.eye(len(correlation), dtype=bool)]).mean())
               if varying.sum() > 1 else 1.0,
               "mean_abs_cos": float(np.abs(unit @ unit.T)[off_diagonal].mean()),
               "weights_alignment": float(alignment.mean())}
    p = model.target_activity
    figures["sparse"] = abs(figures["mean_activity"] - p) <= 0.25 * p
    figures["decorrelated"] = figures["silent_or_constant_units"] == 0 and figures["mean_abs_correlation"] < 0.05
    figures["distinct_learned_features"] = figures["mean_abs_cos"] < 0.3 and figures["weights_alignment"] > 0.8
    return figures


def train_foldiak(data_dir, run_dir, extra=()):
    assert cli.main(["train", "foldiak", "--data", data_dir, "--out", run_dir, "--epochs", "3",
                     "--batch-size", "500", "--set", "steps_per_execution=20", *extra]) == 0
    return load_trained_model(run_dir).model


@pytest.mark.slow
def test_settled_network_is_sparse_decorrelated_and_distinct(natural_data, tmp_path):
    data_dir, held_out = natural_data
    model = train_foldiak(data_dir, str(tmp_path / "RUN"))
    figures = foldiak_checks(model, held_out)
    assert figures["sparse"], figures
    assert figures["decorrelated"], figures
    assert figures["distinct_learned_features"], figures
    lateral = model.lateral.numpy()
    assert np.all(lateral <= 0) and np.all(np.diag(lateral) == 0) and lateral.min() < 0


@pytest.mark.slow
def test_failed_attempt_fails_every_check(natural_data, tmp_path):
    data_dir, held_out = natural_data
    model = train_foldiak(data_dir, str(tmp_path / "RUN"), FAILED_ATTEMPT)
    assert {key: getattr(model, key) for key in FAILED_ATTEMPT_OPTIONS} == FAILED_ATTEMPT_OPTIONS
    figures = foldiak_checks(model, held_out)
    assert not figures["sparse"], figures
    assert not figures["decorrelated"], figures
    assert not figures["distinct_learned_features"], figures


def test_settling_reaches_a_fixed_point_with_inhibition():
    rng = np.random.default_rng(0)
    drive = tf.constant(rng.normal(scale=0.3, size=(64, 20)), tf.float32)
    lateral = -rng.uniform(0, 0.5, size=(20, 20))
    np.fill_diagonal(lateral, 0)
    lateral = tf.constant(lateral, tf.float32)
    outputs, steps = settle_outputs(drive, lateral, steepness=10.0, settle_rate=0.2, max_steps=1000,
                                    tolerance=1e-6)
    residual = tf.sigmoid(10.0 * (drive + tf.matmul(outputs, lateral, transpose_b=True))) - outputs
    assert int(steps) < 1000
    assert float(tf.reduce_max(tf.abs(residual))) < 1e-4
    unsettled = tf.sigmoid(10.0 * drive)  # inhibition lowers the total activity
    assert float(tf.reduce_sum(outputs)) < 0.9 * float(tf.reduce_sum(unsettled))


def test_mirrored_update_equals_one_device_update_on_the_global_batch(mirrored_strategy):
    patches = np.random.default_rng(3).normal(size=(400, 36)).astype(np.float32)
    single = FoldiakNetwork((6, 6, 1), n_units=12, target_activity=0.2)
    single(tf.zeros([1, 36]))
    for _ in range(3):
        single.train_step({"patch": tf.constant(patches)})

    strategy = mirrored_strategy
    with strategy.scope():
        mirrored = FoldiakNetwork((6, 6, 1), n_units=12, target_activity=0.2)
        mirrored(tf.zeros([1, 36]))
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices({"patch": patches}).batch(400))
    step = tf.function(lambda batch: strategy.run(mirrored.train_step, (batch,)))
    for _ in range(3):
        step(next(iter(dataset)))
    for name in ("feedforward", "lateral", "thresholds"):
        replicas = [v.numpy() for v in getattr(mirrored, name).values]
        np.testing.assert_allclose(replicas[0], replicas[1], err_msg=name)
        np.testing.assert_allclose(replicas[0], getattr(single, name).numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    assert not np.allclose(single.lateral.numpy(), 0)


def test_get_config_round_trips_and_encoder_model_matches_encode():
    model = FoldiakNetwork((4, 4, 1), n_units=6, settle=False, lateral_init="positive_random")
    model(tf.zeros([1, 16]))
    assert FoldiakNetwork.from_config(model.get_config()).get_config() == model.get_config()
    patches = tf.random.stateless_normal([5, 16], seed=(1, 1))
    np.testing.assert_array_equal(model.encoder_model()(patches).numpy(), model.encode(patches).numpy())
    assert model.filters().shape == (6, 4, 4, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_units": 1}, "model.n_units 1 is invalid"),
    ({"target_activity": 1.5}, "model.target_activity 1.5 is invalid"),
    ({"steepness": 0}, "model.steepness 0 is invalid"),
    ({"lateral_rate": -1}, "model.lateral_rate -1 is invalid"),
    ({"settle_rate": 0}, "model.settle_rate 0 is invalid"),
    ({"max_settle_steps": 0}, "model.max_settle_steps 0 is invalid"),
    ({"settle_tolerance": 0}, "model.settle_tolerance 0 is invalid"),
    ({"lateral_init": "ones"}, "model.lateral_init 'ones' is invalid"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FoldiakNetwork((10, 10, 1), **kwargs)
