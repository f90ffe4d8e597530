"""The dense autoencoder family: every preset trains through `ufl train` on real MNIST digits (small size),
and each does what it is for (reconstructs, sparsifies, denoises, classifies after greedy pretraining)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import ufl
from ufl import cli
from ufl.config.base import ConfigError
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.autoencoders import PRESETS, DenseAutoencoder, StackedAutoencoder, kl_sparsity, make_optimizer
from ufl.trainers.registry import build_model
from ufl.trainers.run_dir import load_trained_model

MNIST = os.path.join(os.path.dirname(ufl.__file__), "data", "mnist10k.npz")
SAMPLE_SHAPE = (28, 28, 1)
N_TRAIN, N_EVAL = 2000, 500


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """DATA/ of 2,000 training and 500 held-out MNIST digits (whole 28x28 images, raw [0, 1] pixels)."""
    with np.load(MNIST) as archive:  # the archive is sorted by label: draw a random subset
        chosen = np.random.default_rng(0).permutation(len(archive["labels"]))[:N_TRAIN + N_EVAL]
        images = archive["images"][chosen].reshape(len(chosen), -1).astype(np.float32) / 255.0
        labels = archive["labels"][chosen].astype(np.int64)
    data_dir = str(tmp_path_factory.mktemp("mnist") / "data")
    write_data_dir(data_dir, {"train": images[:N_TRAIN], "eval": images[N_TRAIN:]}, patch_size=(28, 28),
                   channels=1, labels={"train": labels[:N_TRAIN], "eval": labels[N_TRAIN:]},
                   source="builtin:mnist10k")
    return {"dir": data_dir, "train": images[:N_TRAIN], "eval": images[N_TRAIN:], "eval_labels": labels[N_TRAIN:]}


def train(preset, data_dir, out, *options):
    """Runs `ufl train` in-process; returns (metrics.json, the trained model rebuilt from RUN/)."""
    assert cli.main(["train", preset, "--data", data_dir, "--out", str(out), *options]) == 0
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    return metrics, load_trained_model(str(out)).model


def history(run_dir, split="train"):
    with open(os.path.join(run_dir, "logs", "history.jsonl"), encoding="utf-8") as handle:
        return [record for record in map(json.loads, handle) if record["split"] == split]


def mean_squared_error(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def hoyer_sparsity(codes):
    """Mean Hoyer sparsity of ``(n, k)`` codes: 0 when all entries are equal, 1 with one nonzero; scale-free."""
    k = codes.shape[1]
    ratio = np.abs(codes).sum(1) / (np.sqrt((codes ** 2).sum(1)) + 1e-12)
    return float(np.mean((np.sqrt(k) - ratio) / (np.sqrt(k) - 1)))


def zero_fraction(model, patches):
    """Fraction of exactly-zero activations over every hidden layer of a dense autoencoder."""
    hidden, _, _ = model._forward(tf.constant(patches))
    return float(np.mean([np.mean(layer.numpy() == 0) for layer in hidden]))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda preset: preset.name)
def test_preset_builds_round_trips_and_shares_encoder_variables(preset):
    model = build_model(preset.model, SAMPLE_SHAPE)
    model(tf.zeros([1, 784]))
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    encoder = model.encoder_model()
    own = {id(v) for v in model.variables}
    assert encoder.variables and all(id(v) in own for v in encoder.variables)
    patches = tf.random.uniform([3, 784])
    np.testing.assert_allclose(encoder(patches), model.encode(patches), rtol=1e-5, atol=1e-6)
    assert model.reconstruct(patches).shape == (3, 784)
    assert model.filters().shape == (preset.model["hidden_units"][0],) + SAMPLE_SHAPE
    assert preset.data["extract"] == "full" and preset.reference["source"]


@pytest.mark.slow
def test_dense_ae_loss_falls_and_reconstruction_beats_the_mean_image(mnist, tmp_path):
    metrics, model = train("dense-ae", mnist["dir"], tmp_path / "run", "--epochs", "5", "--batch-size", "16")
    records, evals = history(str(tmp_path / "run")), history(str(tmp_path / "run"), "eval")
    assert records[-1]["loss"] < 0.8 * records[0]["loss"] and evals[-1]["loss"] < evals[0]["loss"]
    # The preset's adadelta (learning rate 1.0, as in the Keras blog) starts slowly: 625 steps here, the
    # reference ran 11,700.
    mean_image_error = mean_squared_error(mnist["eval"], mnist["train"].mean(axis=0))
    assert metrics["eval"]["reconstruction_error"] < 0.92 * mean_image_error
    assert mean_squared_error(model.reconstruct(mnist["eval"]), mnist["eval"]) == pytest.approx(
        metrics["eval"]["reconstruction_error"], rel=1e-3)
    assert metrics["reference"]["eval_loss"] == 0.09


@pytest.mark.slow
def test_l1_and_kl_penalties_give_sparser_codes_and_kl_reaches_its_target(mnist, tmp_path):
    # A smaller network than the preset's, without XLA: compiling dominates such short runs.
    short = ("--epochs", "3", "--batch-size", "16", "--set", "model.hidden_units=[128,32]",
             "--set", "jit_compile=false")
    _, plain = train("deep-sparse-ae", mnist["dir"], tmp_path / "plain", *short, "--set", "model.sparsity=none")
    _, l1 = train("deep-sparse-ae", mnist["dir"], tmp_path / "l1", *short)
    eval_images = mnist["eval"]
    assert zero_fraction(l1, eval_images) > zero_fraction(plain, eval_images) + 0.04
    assert hoyer_sparsity(l1.encode(eval_images).numpy()) > hoyer_sparsity(plain.encode(eval_images).numpy()) + 0.04

    _, sigmoid_plain = train("deep-sparse-ae-kl", mnist["dir"], tmp_path / "sigmoid", *short,
                             "--set", "model.sparsity=none")
    metrics, kl = train("deep-sparse-ae-kl", mnist["dir"], tmp_path / "kl", *short)
    target = kl.sparsity_target
    kl_activation = float(np.mean(kl.encode(eval_images)))
    assert 0.5 * target < kl_activation < 1.6 * target
    assert kl_activation < 0.3 * float(np.mean(sigmoid_plain.encode(eval_images)))
    assert metrics["eval"]["mean_activation"] == pytest.approx(kl_activation, rel=0.05)
    mean_image_error = mean_squared_error(eval_images, mnist["train"].mean(axis=0))
    assert metrics["eval"]["reconstruction_error"] < 0.9 * mean_image_error


@pytest.mark.slow
def test_denoising_ae_reconstructs_noisy_digits_better_than_a_plain_autoencoder(mnist, tmp_path):
    short = ("--epochs", "6", "--batch-size", "16", "--set", "jit_compile=false")
    _, denoising = train("denoising-ae", mnist["dir"], tmp_path / "denoising", *short)
    _, plain = train("denoising-ae", mnist["dir"], tmp_path / "plain", *short, "--set", "model.noise=none")
    clean = mnist["eval"]
    noisy = (clean + 0.5 * np.random.default_rng(0).standard_normal(clean.shape)).astype(np.float32)
    denoised_error = mean_squared_error(denoising.reconstruct(noisy), clean)
    assert denoised_error < 0.85 * mean_squared_error(plain.reconstruct(noisy), clean)
    assert denoised_error < 0.5 * mean_squared_error(noisy, clean)


def test_masking_noise_zeroes_the_given_fraction_and_only_while_training():
    model = DenseAutoencoder(SAMPLE_SHAPE, noise="masking", noise_level=0.3)
    patches = tf.ones([64, 784])
    masked = model.corrupt(patches).numpy()
    assert set(np.unique(masked)) <= {0.0, 1.0}
    assert 0.27 < np.mean(masked == 0) < 0.33
    np.testing.assert_array_equal(model.encode(patches), model.encode(patches))


@pytest.mark.slow
def test_stacked_ae_pretrains_layer_by_layer_then_fine_tunes_far_above_chance(mnist, tmp_path):
    run_dir = tmp_path / "stacked"
    metrics, model = train("stacked-ae", mnist["dir"], run_dir, "--epochs", "6", "--batch-size", "64",
                           "--set", "model.pretrain_epochs=1", "--set", "model.classifier_epochs=1",
                           "--set", "jit_compile=false", "--set", "steps_per_execution=5")
    records = history(str(run_dir))
    pretraining = [r for r in records if r["epoch"] == 1]
    assert pretraining[-1]["loss"] < 0.7 * pretraining[0]["loss"]  # layer 1 learns to reconstruct
    assert metrics["eval"]["accuracy"] > 0.85 and metrics["accuracy"] > 0.85  # chance is 0.1
    probabilities = model.classifier_model()(mnist["eval"]).numpy()
    assert np.mean(probabilities.argmax(1) == mnist["eval_labels"]) == pytest.approx(metrics["accuracy"], abs=0.01)

    _, scratch = train("stacked-ae-scratch", mnist["dir"], tmp_path / "scratch", "--epochs", "3",
                       "--batch-size", "64", "--set", "jit_compile=false")
    assert np.mean(scratch.classifier_model()(mnist["eval"]).numpy().argmax(1) == mnist["eval_labels"]) > 0.85


def test_stacked_phases_switch_at_layer_boundaries_and_use_their_own_variables():
    model = StackedAutoencoder(SAMPLE_SHAPE, hidden_units=(32, 16), pretrain_epochs=2, classifier_epochs=1)
    model(tf.zeros([1, 784]))
    model.compile(optimizer=make_optimizer({"name": "adam", "learning_rate": 1e-3}))
    switches = [model.on_epoch_begin(epoch) for epoch in range(7)]
    assert switches == [False, False, True, False, True, True, False]
    assert [model.phase_of_epoch(e) for e in range(7)] == [0, 0, 1, 1, 2, 3, 3]
    assert StackedAutoencoder(SAMPLE_SHAPE, pretrain_epochs=0).phase_of_epoch(0) == 3

    batch = {"patch": tf.random.uniform([8, 784]), "label": tf.zeros([8], tf.int64)}
    for epoch, layers in ((2, [model.encoder_layers[1], model.decoder_layers[1]]),  # greedy layer 1
                          (4, [model.head])):  # the softmax alone on the fixed codes
        model.on_epoch_begin(epoch)
        before = [v.numpy() for v in model.variables]
        model.train_step(batch)
        moved = {id(v) for v, old in zip(model.variables, before) if not np.array_equal(old, v.numpy())}
        assert moved == {id(v) for layer in layers for v in layer.variables}


def test_first_greedy_layer_is_a_sigmoid_cross_entropy_autoencoder_and_the_second_a_linear_mse_one():
    model = StackedAutoencoder(SAMPLE_SHAPE, hidden_units=(32, 16), pretrain_losses=["binary_crossentropy", "mse"])
    model(tf.zeros([1, 784]))
    x = tf.random.uniform([4, 784])
    code = tf.nn.relu(model.encoder_layers[0](x))
    output = tf.sigmoid(model.decoder_layers[0](code))
    expected = -np.mean(x * np.log(output) + (1 - x) * np.log(1 - output), axis=-1)
    np.testing.assert_allclose(model._layer_loss(x, 0).numpy(), expected, rtol=1e-4)
    linear = model.decoder_layers[1](tf.nn.relu(model.encoder_layers[1](code)))
    np.testing.assert_allclose(model._layer_loss(x, 1).numpy(), np.mean((linear - code) ** 2, axis=-1),
                               rtol=1e-4)


def test_a_traced_stacked_evaluation_scores_the_current_phase():
    # The loop traces test_step once; after the switch to greedy layer 1 it must score layer 1's
    # reconstruction, not layer 0's (whose weights no longer move, so its loss would repeat every epoch).
    model = StackedAutoencoder(SAMPLE_SHAPE, hidden_units=(32, 16), pretrain_epochs=1)
    model(tf.zeros([1, 784]))
    batch = {"patch": tf.random.uniform([8, 784]), "label": tf.zeros([8], tf.int64)}
    test_step = tf.function(model.test_step)
    for epoch in range(4):
        model.on_epoch_begin(epoch)
        expected = model._phase_objective(batch, model.phase)[1]["loss"]
        assert float(test_step(batch)["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_l1_model_trains_the_same_on_two_replicas_as_on_one(mirrored_strategy):
    spec = {"kind": "dense_autoencoder", "hidden_units": [32, 8], "output_activation": "relu", "loss": "mse",
            "sparsity": "l1", "sparsity_weight": 0.01}
    patches = np.random.default_rng(0).uniform(size=(16, 784)).astype(np.float32)
    weights, results = None, []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
        with strategy.scope():
            model = build_model(spec, SAMPLE_SHAPE)
            model(tf.zeros([1, 784]))
            model.compile(optimizer=make_optimizer({"name": "sgd", "learning_rate": 0.5}))
        weights = weights or [v.numpy() for v in model.variables]
        model.set_weights(weights)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices({"patch": patches}).batch(16))
        tf.function(lambda batch: strategy.run(model.train_step, (batch,)))(next(iter(dataset)))
        results.append([v.numpy() for v in model.variables])
    for single, mirrored in zip(*results):
        np.testing.assert_allclose(single, mirrored, rtol=1e-4, atol=1e-6)


def test_kl_sparsity_matches_its_formula():
    activations = np.random.default_rng(1).uniform(0.01, 0.3, size=(50, 6)).astype(np.float32)
    rho, mean = 0.05, activations.mean(axis=0)
    expected = np.sum(rho * np.log(rho / mean) + (1 - rho) * np.log((1 - rho) / (1 - mean)))
    assert float(kl_sparsity(tf.constant(activations), rho)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_sparsity(tf.fill([4, 3], rho), rho)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, hidden_units=[64, 0]), r"model.hidden_units \[64, 0\] is invalid"),
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, loss="hinge"), r"model.loss 'hinge' is invalid; use one of"),
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, sparsity_weight=-1.0), r"model.sparsity_weight -1.0 is invalid"),
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, sparsity_target=1.5), r"model.sparsity_target 1.5 is invalid"),
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, sparsity="kl"), r"KL sparsity penalty needs activations in \(0, 1\)"),
    (lambda: DenseAutoencoder(SAMPLE_SHAPE, noise="masking", noise_level=1.0), r"model.noise_level 1.0 is invalid"),
    (lambda: StackedAutoencoder(SAMPLE_SHAPE, num_classes=1), r"model.num_classes 1 is invalid"),
    (lambda: StackedAutoencoder(SAMPLE_SHAPE, pretrain_epochs=-2), r"model.pretrain_epochs -2 is invalid"),
    (lambda: StackedAutoencoder(SAMPLE_SHAPE, pretrain_losses=["mse"]), r"model.pretrain_losses \['mse'\] is invalid"),
    (lambda: make_optimizer({"learning_rate": 0.1}), r"optimizer .* is invalid; give a name"),
    (lambda: make_optimizer({"name": "adam", "learnin_rate": 0.1}), r"optimizer .*learnin_rate.* is invalid"),
])
def test_bad_parameters_name_the_parameter_and_the_fix(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_fine_tuning_without_labels_says_which_data_to_use():
    model = StackedAutoencoder(SAMPLE_SHAPE, pretrain_epochs=0)
    model(tf.zeros([1, 784]))
    with pytest.raises(ConfigError, match="stacked_autoencoder needs labels .*builtin:mnist"):
        model.test_step({"patch": tf.zeros([2, 784])})


def test_ufl_train_rejects_an_out_of_range_preset_parameter(mnist, tmp_path, capsys):
    code = cli.main(["train", "deep-sparse-ae-kl", "--data", mnist["dir"], "--out", str(tmp_path / "run"),
                     "--set", "model.sparsity_target=1.5"])
    assert code == 2
    assert "model.sparsity_target 1.5 is invalid" in capsys.readouterr().err
