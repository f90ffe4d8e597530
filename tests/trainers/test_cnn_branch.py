"""The cnn-branch experiment: both CNNs learn MNIST, the table has the reference's columns, and the modified
CNN trains from `ufl train cnn-branch`."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from ufl import cli
from ufl.config import ConfigError
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.cnn_branch import MnistCNN, run_cnn_branch_experiment
from ufl.trainers.registry import build_model
from ufl.trainers.run_dir import load_trained_model

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "ufl", "data", "mnist10k.npz")


@pytest.fixture(scope="module")
def mnist():
    """800 random MNIST digits ``(800, 28, 28)`` in [0, 1] and their labels."""
    with np.load(MNIST) as archive:
        keep = np.random.default_rng(0).choice(len(archive["labels"]), 800, replace=False)
        return archive["images"][keep].astype(np.float32) / 255.0, archive["labels"][keep].astype(np.int64)


def test_the_branch_is_concatenated_before_the_last_dense_layer():
    standard, modified = (MnistCNN((28, 28, 1), branch=branch) for branch in (False, True))
    for model in (standard, modified):
        model(tf.zeros([1, 784]))
    # 10x10 conv: 19x19 maps, 5x5 max-pool: 3x3x32 = 288 extra features beside the 128 dense ones.
    assert standard.encode(tf.zeros([2, 784])).shape == (2, 128)
    assert modified.encode(tf.zeros([2, 784])).shape == (2, 128 + 288)
    assert modified.classifier.kernel.shape == (416, 10)
    assert modified.branch_conv.kernel.shape == (10, 10, 1, 32)
    assert modified.filters().shape == (32, 10, 10, 1)
    assert MnistCNN.from_config(modified.get_config()).get_config() == modified.get_config()
    np.testing.assert_allclose(modified.encoder_model()(tf.ones([2, 784])).numpy(),
                               modified.encode(tf.ones([2, 784])).numpy(), rtol=1e-5)


@pytest.mark.slow
def test_experiment_trains_both_cnns_and_reports_the_table(mnist):
    images, labels = mnist
    result = run_cnn_branch_experiment(images, labels, epochs=2, batch_size=32, seed=0)
    assert (result["train_examples"], result["test_examples"]) == (600, 200)
    for name in ("standard", "modified"):
        row = result[name]
        assert len(row["accuracy_by_epoch"]) == 2
        assert row["last_epoch_accuracy"] > 0.6  # chance is 0.1
        assert row["last_epoch_accuracy"] >= row["epoch_1_accuracy"] - 0.05
        assert row["seconds_per_epoch"] > 0
    assert result["modified"]["parameters"] > result["standard"]["parameters"]


@pytest.mark.slow
def test_evaluate_cnn_branch_cli_prints_json(capsys):
    assert cli.main(["evaluate", "cnn-branch", "--data", "builtin:mnist10k", "--epochs", "1", "--max-examples",
                     "300", "--batch-size", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["data"] == "builtin:mnist10k"
    assert set(result["standard"]) >= {"epoch_1_accuracy", "last_epoch_accuracy", "seconds_per_epoch"}


def test_evaluate_cnn_branch_rejects_unlabelled_data(capsys):
    assert cli.main(["evaluate", "cnn-branch", "--data", "builtin:natural", "--epochs", "1"]) == 2
    assert "it has no labels" in capsys.readouterr().err


@pytest.mark.slow
def test_cnn_branch_preset_trains_from_ufl_train(mnist, tmp_path):
    images, labels = mnist
    data_dir, run_dir = str(tmp_path / "DATA"), str(tmp_path / "RUN")
    flat = images.reshape(len(images), -1)
    write_data_dir(data_dir, {"train": flat[:600], "eval": flat[600:]}, patch_size=(28, 28), channels=1,
                   labels={"train": labels[:600], "eval": labels[600:]}, source="builtin:mnist10k")
    # jit_compile=false: compiling the CNN with XLA takes longer than the 38 steps this test runs.
    assert cli.main(["train", "cnn-branch", "--data", data_dir, "--out", run_dir, "--epochs", "2",
                     "--batch-size", "32", "--set", "steps_per_execution=5", "--set", "jit_compile=false"]) == 0
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    assert metrics["eval"]["accuracy"] > 0.6
    model = load_trained_model(run_dir).model
    assert model.branch and model.encode(tf.constant(flat[:3])).shape == (3, 416)


@pytest.mark.parametrize("kwargs, shape, match", [
    ({"branch": True}, (8, 8, 1), "needs images of at least 14x14; DATA/ has samples of 8x8x1"),
    ({"num_classes": 1}, (28, 28, 1), "model.num_classes 1 is invalid"),
    ({"branch_kernel": 0}, (28, 28, 1), "model.branch_kernel 0 is invalid"),
])
def test_bad_shapes_and_parameters_are_named(kwargs, shape, match):
    with pytest.raises(ConfigError, match=match):
        build_model({"kind": "mnist_cnn", **kwargs}, shape)


def test_training_without_labels_is_refused():
    model = MnistCNN((28, 28, 1))
    model(tf.zeros([1, 784]))
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1))
    with pytest.raises(ConfigError, match="cnn-branch is supervised but the batches have no 'label'"):
        model.train_step({"patch": tf.zeros([2, 784])})


def test_experiment_rejects_mismatched_labels():
    with pytest.raises(ConfigError, match=r"images \(4, 28, 28, 1\) and labels \(3,\) are invalid"):
        run_cnn_branch_experiment(np.zeros((4, 28, 28)), np.zeros(3), epochs=1)
