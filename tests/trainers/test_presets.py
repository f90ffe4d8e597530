"""Every preset builds its model without changing the preset, and lists as JSON."""
import json

import pytest

from ufl.trainers.presets import all_presets
from ufl.trainers.registry import build_model

#: A sample shape each preset's model accepts (whole 28x28 digits for the image models, patches otherwise).
SAMPLE_SHAPES = {"sparse-coding": (12, 12, 1), "sparse-coding-demo": (16, 16, 1), "foldiak": (10, 10, 1)}


@pytest.mark.parametrize("name", sorted(all_presets()))
def test_building_a_preset_model_leaves_the_preset_unchanged(name):
    preset = all_presets()[name]
    before = json.dumps(preset.model, sort_keys=True)
    build_model(preset.model, SAMPLE_SHAPES.get(name, (28, 28, 1)))
    assert json.dumps(preset.model, sort_keys=True) == before


# --- Each reference experiment's preset against its published network, optimizer, loss, batch and epochs.

import re  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ufl.commands.train import describe_presets  # noqa: E402
from ufl.trainers.train_loop import make_optimizer  # noqa: E402


def built(name, shape=(28, 28, 1)):
    model = build_model(all_presets()[name].model, shape)
    model(tf.zeros([2, int(np.prod(shape))]))
    return model


def optimizer_config(name):
    optimizer = make_optimizer(all_presets()[name].train["optimizer"])
    return type(optimizer).__name__, optimizer.get_config()


def kernel_shapes(layers):
    return [tuple(layer.kernel.shape) for layer in layers]


def test_stacked_ae_is_the_published_784_128_64_softmax_with_rmsprop_stages():
    preset = all_presets()["stacked-ae"]
    model = built("stacked-ae")
    assert kernel_shapes(model.encoder_layers) == [(784, 128), (128, 64)]
    assert kernel_shapes(model.decoder_layers) == [(128, 784), (64, 128)]
    assert tuple(model.head.kernel.shape) == (64, 10) and model.activation == "relu"
    # 50 epochs per greedy layer (BCE with a sigmoid decoder, then MSE with a linear one), 50 for the
    # softmax on the codes, 50 of fine-tuning: 200 epochs of batch 256.
    assert model.pretrain_losses == ("binary_crossentropy", "mse")
    assert [model._decoder_activation(i) for i in range(2)] == ["sigmoid", "linear"]
    assert [model.phase_of_epoch(e) for e in (0, 49, 50, 99, 100, 149, 150, 199)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (preset.train["epochs"], preset.train["batch_size"]) == (200, 256)
    name, config = optimizer_config("stacked-ae")
    assert name == "RMSprop" and config["learning_rate"] == pytest.approx(1e-3)
    assert (config["rho"], config["epsilon"], config["momentum"]) == (0.9, 1e-7, 0.0)
    assert preset.model["pretrain_optimizer"] == preset.train["optimizer"]
    assert preset.reference["eval_accuracy"] == 0.978
    scratch = built("stacked-ae-scratch")
    assert kernel_shapes(scratch.encoder_layers) == [(784, 128), (128, 64)]
    assert scratch.phase_of_epoch(0) == scratch.finetune_phase


def test_dense_ae_is_the_keras_784_32_784_with_keras_2_adadelta():
    preset = all_presets()["dense-ae"]
    model = built("dense-ae")
    assert kernel_shapes(model.encoder_layers + model.decoder_layers) == [(784, 32), (32, 784)]
    assert (model.activation, model.output_activation, model.loss_name) == ("relu", "sigmoid",
                                                                            "binary_crossentropy")
    name, config = optimizer_config("dense-ae")
    assert name == "Adadelta" and (config["learning_rate"], config["rho"], config["epsilon"]) == (1.0, 0.95, 1e-7)
    assert (preset.train["epochs"], preset.train["batch_size"]) == (50, 256)


def test_deep_sparse_ae_is_the_published_l1_network_on_fashion_mnist():
    preset = all_presets()["deep-sparse-ae"]
    model = built("deep-sparse-ae")
    widths = [784, 256, 128, 64, 32, 16, 32, 64, 128, 256, 784]
    assert kernel_shapes(model.encoder_layers + model.decoder_layers) == list(zip(widths, widths[1:]))
    assert (model.sparsity, model.sparsity_weight, model.loss_name) == ("l1", 1e-3, "mse")
    name, config = optimizer_config("deep-sparse-ae")
    assert name == "Adam" and config["learning_rate"] == pytest.approx(1e-3)
    assert (preset.train["epochs"], preset.train["batch_size"]) == (25, 32)
    assert preset.data["source"] == "builtin:fashion-mnist" and preset.data["eval_split"] == "source"


def test_conv_ae_is_the_published_keras_conv_autoencoder():
    preset = all_presets()["conv-ae"]
    model = built("conv-ae")
    assert kernel_shapes([model.first_conv, model.second_conv, model.output_conv]) == [
        (3, 3, 1, 32), (3, 3, 32, 32), (3, 3, 32, 1)]
    assert model.feature_maps(tf.zeros([1, 784])).shape == (1, 28, 28, 32)
    assert model.encode(tf.zeros([1, 784])).shape == (1, 14 * 14 * 32)
    assert (model.loss_name, model.output_activation) == ("binary_crossentropy", "sigmoid")
    name, config = optimizer_config("conv-ae")
    assert name == "RMSprop" and config["learning_rate"] == pytest.approx(1e-3)
    assert (preset.train["epochs"], preset.train["batch_size"]) == (10, 256)


def test_cnn_presets_are_the_lasagne_network_and_its_branch():
    standard, modified = built("cnn-standard"), built("cnn-branch")
    for model in (standard, modified):
        assert kernel_shapes([model.conv_1, model.conv_2, model.dense]) == [(5, 5, 1, 32), (5, 5, 32, 32),
                                                                              (4 * 4 * 32, 256)]
        assert (model.dropout_conv.rate, model.dropout_dense.rate) == (0.5, 0.5)
    assert not standard.branch and tuple(standard.classifier.kernel.shape) == (256, 10)
    # Branch: Conv 10x10x32 -> 19x19 maps -> maxpool 5x5 -> 3x3x32 = 288 features beside the Dense 256.
    assert tuple(modified.branch_conv.kernel.shape) == (10, 10, 1, 32)
    assert tuple(modified.classifier.kernel.shape) == (256 + 288, 10)
    for name in ("cnn-standard", "cnn-branch"):
        preset = all_presets()[name]
        optimizer, config = optimizer_config(name)
        assert optimizer == "SGD" and (config["learning_rate"], config["momentum"], config["nesterov"]) == (
            pytest.approx(0.01), pytest.approx(0.9), True)
        assert (preset.train["epochs"], preset.train["batch_size"]) == (30, 500)


def test_listed_recipes_are_options_ufl_preprocess_takes():
    from ufl.commands import preprocess

    listing = describe_presets()
    recipes = [line.split("ufl preprocess ", 1)[1] for line in listing.splitlines() if "ufl preprocess " in line]
    assert recipes and not any("None" in recipe for recipe in recipes)
    parser = __import__("argparse").ArgumentParser()
    subparsers = parser.add_subparsers()
    preprocess.add_parser(subparsers)
    known = {option for action in parser._subparsers._group_actions[0].choices["preprocess"]._actions
             for option in action.option_strings}
    for recipe in recipes:
        for option in re.findall(r"(--[a-z-]+)", recipe):
            assert option in known, f"{option} in {recipe!r}"


@pytest.mark.parametrize("name", sorted(all_presets()))
def test_presets_name_no_folder_outside_the_repository_and_no_issue(name):
    text = repr(all_presets()[name])
    assert "../shared" not in text and "/work/" not in text
    assert not re.search(r"issue \d", text)


def test_every_preset_says_how_long_its_full_run_takes():
    from ufl.trainers import presets

    listing = describe_presets()
    for name, preset in all_presets().items():
        if name in presets._REGISTERED:  # registered at run time by tests and extensions
            continue
        assert preset.full_run, name
        assert f"full run:  {preset.full_run}" in listing
