"""Convolutional autoencoders: the tied kernel is one variable used twice; both presets train from `ufl train`."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from ufl import cli
from ufl.config import ConfigError
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.conv_autoencoders import ConvAutoencoder, TiedConvAutoencoder
from ufl.trainers.registry import build_model
from ufl.trainers.run_dir import load_trained_model

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "ufl", "data", "mnist10k.npz")


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory):
    """DATA/ of 640 train + 128 eval whole 28x28 MNIST digits, raw pixels in [0, 1] (the presets' recipe)."""
    with np.load(MNIST) as archive:
        keep = np.random.default_rng(0).choice(len(archive["images"]), 768, replace=False)
        images = archive["images"][keep].reshape(768, -1).astype(np.float32) / 255.0
    data_dir = str(tmp_path_factory.mktemp("mnist") / "DATA")
    write_data_dir(data_dir, {"train": images[:640], "eval": images[640:]}, patch_size=(28, 28), channels=1,
                   source="builtin:mnist10k")
    return data_dir, images[640:]


def tied_model(side=16):
    model = TiedConvAutoencoder((side, side, 1), filters=4, code_units=8)
    model(tf.zeros([1, side * side]))
    return model


def test_tied_transposed_convolutions_use_the_encoder_kernel_variables():
    model = tied_model()
    assert model.first_deconv.kernel is model.first_conv.kernel
    assert model.second_deconv.kernel is model.second_conv.kernel
    kernel_ids = [id(v) for v in model.trainable_variables]
    assert kernel_ids.count(id(model.first_conv.kernel)) == 1
    assert [w.name.split("/")[-1] for w in model.first_deconv.trainable_weights] == ["bias:0"]


def test_tied_kernel_gets_gradients_from_both_uses_and_one_step_changes_both():
    model = tied_model()
    patches = tf.random.stateless_uniform([6, 256], seed=(1, 2))
    codes = tf.random.stateless_normal([6, 8], seed=(3, 4))
    kernel = model.first_conv.kernel
    with tf.GradientTape(persistent=True) as tape:
        decoder_only = tf.reduce_sum(model.decode(codes))
        encoder_only = tf.reduce_sum(model.encode(patches))
    assert float(tf.reduce_max(tf.abs(tape.gradient(decoder_only, kernel)))) > 0
    assert float(tf.reduce_max(tf.abs(tape.gradient(encoder_only, kernel)))) > 0

    decoded_before, encoded_before = model.decode(codes).numpy(), model.encode(patches).numpy()
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5))
    model.train_step({"patch": patches})
    assert not np.allclose(model.decode(codes).numpy(), decoded_before)
    assert not np.allclose(model.encode(patches).numpy(), encoded_before)
    assert model.first_deconv.kernel is model.first_conv.kernel  # still one variable after the update


def test_get_config_round_trips_and_encoder_model_shares_weights():
    for model in (tied_model(), ConvAutoencoder((8, 8, 1), filters=4)):
        model(tf.zeros([1, model.patch_dim]))
        clone = type(model).from_config(model.get_config())
        assert clone.get_config() == model.get_config()
        patches = tf.random.stateless_uniform([3, model.patch_dim], seed=(5, 6))
        np.testing.assert_allclose(model.encoder_model()(patches).numpy(), model.encode(patches).numpy(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec, shape, match", [
    ({"kind": "conv_autoencoder"}, (9, 9, 1), "conv-ae needs samples whose side is even; DATA/ has samples of 9x9x1"),
    ({"kind": "tied_conv_autoencoder"}, (8, 8, 1), "tied-conv-ae needs samples whose side .* 8x8x1"),
    ({"kind": "conv_autoencoder", "loss": "hinge"}, (8, 8, 1), "model.loss 'hinge' is invalid"),
    ({"kind": "conv_autoencoder", "output_activation": "relu"}, (8, 8, 1), "model.output_activation 'relu'"),
    ({"kind": "conv_autoencoder", "kernel_size": 4}, (8, 8, 1), "model.kernel_size 4 is invalid"),
    ({"kind": "conv_autoencoder", "filters": 0}, (8, 8, 1), "model.filters 0 is invalid"),
    ({"kind": "tied_conv_autoencoder", "dropout": 1.0}, (28, 28, 1), "model.dropout 1.0 is invalid"),
    ({"kind": "tied_conv_autoencoder", "code_units": 0}, (28, 28, 1), "model.code_units 0 is invalid"),
    ({"kind": "tied_conv_autoencoder", "kernel_size": 0}, (28, 28, 1), "model.kernel_size 0 is invalid"),
])
def test_bad_shapes_and_parameters_are_named(spec, shape, match):
    with pytest.raises(ConfigError, match=match):
        build_model(spec, shape)


def reconstruction_error(model, patches):
    return float(np.mean((model.reconstruct(tf.constant(patches)).numpy() - patches) ** 2))


@pytest.mark.slow
@pytest.mark.parametrize("preset, epochs", [("conv-ae", "3"), ("tied-conv-ae", "4")])
def test_preset_trains_from_ufl_train_and_beats_its_initialization(mnist_data, tmp_path, preset, epochs):
    data_dir, eval_images = mnist_data
    run_dir = str(tmp_path / "RUN")
    # jit_compile=false: compiling with XLA takes longer than the few steps this test runs.
    assert cli.main(["train", preset, "--data", data_dir, "--out", run_dir, "--epochs", epochs,
                     "--batch-size", "32", "--set", "steps_per_execution=5", "--set", "jit_compile=false"]) == 0
    trained = load_trained_model(run_dir).model
    fresh = type(trained).from_config(trained.get_config())
    fresh(tf.zeros([1, fresh.patch_dim]))
    assert reconstruction_error(trained, eval_images) < 0.6 * reconstruction_error(fresh, eval_images)
    for figure in ("filters.png", "reconstructions.png", "feature_maps.png"):  # the loop writes all three
        assert os.path.getsize(os.path.join(run_dir, "plots", figure)) > 0
    assert trained.filters().shape[0] == 32


def test_train_step_converts_to_xla():
    """The loop compiles train_step with XLA (jit_compile); every op, gradients included (upsampling,
    tied transposed convolutions, dropout), must convert."""
    model = tied_model()
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    batch = {"patch": tf.random.stateless_uniform([4, model.patch_dim], seed=(7, 8))}
    model.train_step(batch)  # creates the optimizer's slots outside the compiled function
    step = tf.function(model.train_step, jit_compile=True)
    assert "HloModule" in step.experimental_get_compiler_ir(batch)(stage="hlo")
