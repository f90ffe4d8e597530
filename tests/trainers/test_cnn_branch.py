"""The cnn-branch experiment: the Lasagne CNN and its branch, both trained by `ufl train`'s loop, and the
table `ufl evaluate cnn-branch` reads from their runs."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from ufl import cli
from ufl.config import ConfigError
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.cnn_branch import MnistCNN, experiment_table, run_row
from ufl.trainers.registry import build_model
from ufl.trainers.run_dir import load_trained_model

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "ufl", "data", "mnist10k.npz")


@pytest.fixture(scope="module")
def mnist():
    """800 random MNIST digits ``(800, 28, 28)`` in [0, 1] and their labels."""
    with np.load(MNIST) as archive:
        keep = np.random.default_rng(0).choice(len(archive["labels"]), 800, replace=False)
        return archive["images"][keep].astype(np.float32) / 255.0, archive["labels"][keep].astype(np.int64)


def test_the_branch_is_concatenated_with_the_dense_output_before_the_softmax():
    standard, modified = (MnistCNN((28, 28, 1), branch=branch) for branch in (False, True))
    for model in (standard, modified):
        model(tf.zeros([1, 784]))
    # 10x10 conv: 19x19 maps, 5x5 max-pool: 3x3x32 = 288 extra features beside the 256 dense ones.
    assert standard.encode(tf.zeros([2, 784])).shape == (2, 256)
    assert modified.encode(tf.zeros([2, 784])).shape == (2, 256 + 288)
    assert modified.classifier.kernel.shape == (544, 10)
    assert modified.branch_conv.kernel.shape == (10, 10, 1, 32)
    assert modified.filters().shape == (32, 10, 10, 1)
    assert MnistCNN.from_config(modified.get_config()).get_config() == modified.get_config()
    np.testing.assert_allclose(modified.encoder_model()(tf.ones([2, 784])).numpy(),
                               modified.encode(tf.ones([2, 784])).numpy(), rtol=1e-5)
    # Dropout 0.5 acts on the concatenation during training only.
    images = tf.random.uniform([4, 784])
    np.testing.assert_allclose(modified.logits(images).numpy(), modified.logits(images).numpy())
    assert not np.allclose(modified.logits(images, training=True).numpy(), modified.logits(images).numpy())


def write_history(run_dir, accuracies, *, steps_per_epoch=4, batch_size=10, rate=20.0):
    os.makedirs(os.path.join(run_dir, "logs"))
    with open(os.path.join(run_dir, "logs", "history.jsonl"), "w") as handle:
        for epoch, accuracy in enumerate(accuracies, 1):
            handle.write(json.dumps({"split": "train", "epoch": epoch, "step": epoch * steps_per_epoch,
                                     "loss": 1.0, "accuracy": 0.5}) + "\n")
            handle.write(json.dumps({"split": "eval", "epoch": epoch, "step": epoch * steps_per_epoch,
                                     "loss": 1.0, "accuracy": accuracy}) + "\n")
    with open(os.path.join(run_dir, "metrics.json"), "w") as handle:
        json.dump({"steps": steps_per_epoch * len(accuracies), "epochs": float(len(accuracies)),
                   "batch_size": batch_size, "examples_per_second": rate, "wall_seconds": 9.0}, handle)


def test_table_rows_come_from_the_runs_history_and_throughput(tmp_path):
    write_history(str(tmp_path / "standard"), [0.5, 0.7, 0.9])
    write_history(str(tmp_path / "modified"), [0.6, 0.8])
    table = experiment_table({"standard": str(tmp_path / "standard"), "modified": str(tmp_path / "modified")})
    assert table["standard"]["epoch_1_accuracy"] == 0.5 and table["standard"]["last_epoch_accuracy"] == 0.9
    assert table["standard"]["epochs"] == 3 and table["modified"]["accuracy_by_epoch"] == [0.6, 0.8]
    assert table["standard"]["seconds_per_epoch"] == pytest.approx(4 * 10 / 20.0)  # 40 examples at 20 ex/s
    assert table["reference"]["standard"] == {"epoch_1_accuracy": 0.5675, "epoch_30_accuracy": 0.9676}
    with pytest.raises(ConfigError, match="has no finished training"):
        run_row(str(tmp_path / "missing"))


@pytest.mark.slow
def test_evaluate_cnn_branch_trains_both_presets_with_the_loop_and_prints_the_table(mnist, tmp_path, capsys):
    images, labels = mnist
    data_dir, workdir = str(tmp_path / "DATA"), str(tmp_path / "cnn")
    flat = images.reshape(len(images), -1)
    write_data_dir(data_dir, {"train": flat[:600], "eval": flat[600:]}, patch_size=(28, 28), channels=1,
                   labels={"train": labels[:600], "eval": labels[600:]}, source="builtin:mnist10k")
    # jit_compile=false: compiling the CNN with XLA takes longer than the steps this test runs.
    assert cli.main(["evaluate", "cnn-branch", "--data", data_dir, "--workdir", workdir, "--epochs", "3",
                     "--set", "batch_size=50", "--set", "optimizer.learning_rate=0.05", "--set", "jit_compile=false",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, branch in (("standard", False), ("modified", True)):
        row = result[name]
        assert row["epochs"] == 3 and row["seconds_per_epoch"] > 0
        assert row["last_epoch_accuracy"] > 0.6  # chance is 0.1
        model = load_trained_model(os.path.join(workdir, name)).model
        assert model.branch is branch
        assert model.encode(tf.constant(flat[:3])).shape == (3, 544 if branch else 256)
    with open(os.path.join(workdir, "modified", "config.json")) as handle:
        assert json.load(handle)["preset"] == "cnn-branch"


@pytest.mark.parametrize("kwargs, shape, match", [
    ({"branch": True}, (8, 8, 1), "needs images of at least 16x16; DATA/ has samples of 8x8x1"),
    ({"branch": False}, (14, 14, 1), "needs images of at least 16x16; DATA/ has samples of 14x14x1"),
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
