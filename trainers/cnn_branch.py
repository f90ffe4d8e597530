"""The cnn-branch experiment: the Lasagne MNIST CNN against the same CNN with an extra 10×10-conv branch.

- standard (``branch=False``, preset ``cnn-standard``): the Lasagne MNIST example network — Conv 5×5×32 relu →
  maxpool 2 → Conv 5×5×32 relu → maxpool 2 → dropout 0.5 → Dense 256 relu → dropout 0.5 → Dense
  ``num_classes`` softmax; SGD with Nesterov momentum 0.9, lr 0.01, batch 500.
- modified (``branch=True``, preset ``cnn-branch``): the same, plus a branch from the input, Conv 10×10×32
  relu → maxpool 5×5 → flatten, concatenated with the Dense 256 output before the last dropout and the
  softmax.

:class:`MnistCNN` is a FeatureLearner trained by the one loop (``ufl train cnn-standard|cnn-branch``); its
codes are the features entering the last dropout and the softmax. ``ufl evaluate cnn-branch`` trains both
presets with that loop and reads the table from their runs (``experiment_table``): test accuracy after the
first and the last epoch, and seconds per epoch.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, require
from ufl.trainers.base import FeatureLearner
from ufl.trainers.presets import Preset, idle_run
from ufl.trainers.registry import register_model

#: Side of the trunk's convolutions and the smallest image side each variant accepts: two VALID 5×5 convs
#: and two 2×2 pools (28 → 24 → 12 → 8 → 4); a 10×10 conv and a 5×5 pool.
KERNEL = 5
MIN_SIDE = 16


@register_model("mnist_cnn")
@tf_keras.utils.register_keras_serializable(package="ufl")
class MnistCNN(FeatureLearner):
    """The Lasagne MNIST CNN, optionally with the 10×10-conv branch.

    Args:
      sample_shape: ``(H, W, C)`` images, sides >= 16 (two VALID 5×5 convs and two 2×2 pools; with the
        branch also >= branch_kernel + branch_pool - 1).
      branch: add the 10×10-conv branch (default True: the modified CNN).
      num_classes: output classes, > 1 (default 10).
      filters: feature maps of both trunk convolutions, > 0 (default 32).
      dense_units: units of the dense layer, > 0 (default 256).
      dropout: dropout rate before the dense layer and before the softmax, in [0, 1) (default 0.5).
      branch_filters: feature maps of the branch conv, > 0 (default 32).
      branch_kernel: side of the branch conv, > 0 (default 10).
      branch_pool: side of the branch max-pool, > 0 (default 5).
    Codes: ``(batch, dense_units [+ branch features])`` relu features entering the softmax.
    """

    requires_labels = True
    xla_on_cpu = False  # XLA's CPU convolutions are slower than oneDNN's (benchmarks/presets.py)
    supports_reconstruction = False

    def __init__(self, sample_shape, branch: bool = True, num_classes: int = 10, filters: int = 32,
                 dense_units: int = 256, dropout: float = 0.5, branch_filters: int = 32, branch_kernel: int = 10,
                 branch_pool: int = 5, **kwargs):
        super().__init__(sample_shape, **kwargs)
        require(int(num_classes) > 1, "model.num_classes", num_classes, "use the number of label classes, >= 2")
        for field, value in (("filters", filters), ("dense_units", dense_units),
                             ("branch_filters", branch_filters), ("branch_kernel", branch_kernel),
                             ("branch_pool", branch_pool)):
            require(int(value) > 0, f"model.{field}", value, "use a positive integer")
        require(0.0 <= float(dropout) < 1.0, "model.dropout", dropout, "use a rate in [0, 1), e.g. 0.5")
        self.branch, self.num_classes = bool(branch), int(num_classes)
        self.n_filters, self.dense_units, self.dropout_rate = int(filters), int(dense_units), float(dropout)
        self.branch_filters, self.branch_kernel = int(branch_filters), int(branch_kernel)
        self.branch_pool = int(branch_pool)
        min_side = MIN_SIDE if not self.branch else max(MIN_SIDE, self.branch_kernel + self.branch_pool - 1)
        rows, cols, channels = self.sample_shape
        if min(rows, cols) < min_side:
            raise ConfigError(f"cnn-branch ({'modified' if self.branch else 'standard'} CNN) needs images of at "
                              f"least {min_side}x{min_side}; DATA/ has samples of {rows}x{cols}x{channels}; use "
                              "28x28 images such as builtin:mnist with 'ufl preprocess --extract full'")
        self.conv_1 = tf_keras.layers.Conv2D(self.n_filters, KERNEL, activation="relu", name="conv_1")
        self.pool_1 = tf_keras.layers.MaxPooling2D(2, name="pool_1")
        self.conv_2 = tf_keras.layers.Conv2D(self.n_filters, KERNEL, activation="relu", name="conv_2")
        self.pool_2 = tf_keras.layers.MaxPooling2D(2, name="pool_2")
        self.dropout_conv = tf_keras.layers.Dropout(self.dropout_rate, name="dropout_conv")
        self.dense = tf_keras.layers.Dense(self.dense_units, activation="relu", name="dense")
        self.dropout_dense = tf_keras.layers.Dropout(self.dropout_rate, name="dropout_dense")
        if self.branch:
            self.branch_conv = tf_keras.layers.Conv2D(self.branch_filters, self.branch_kernel, activation="relu",
                                                      name="branch_conv")
            self.branch_pooling = tf_keras.layers.MaxPooling2D(self.branch_pool, name="branch_pool")
        self.classifier = tf_keras.layers.Dense(self.num_classes, name="classifier")

    def build(self, input_shape):
        self.logits(tf.zeros([1, self.patch_dim]))
        self.built = True

    def features(self, patches: tf.Tensor, training: bool = False) -> tf.Tensor:
        """``(batch, n_features)`` features entering the last dropout and the softmax."""
        images = tf.reshape(patches, (-1,) + self.sample_shape)
        x = self.pool_2(self.conv_2(self.pool_1(self.conv_1(images))))
        x = self.dropout_conv(tf.reshape(x, (-1, int(np.prod(x.shape[1:])))), training=training)
        x = self.dense(x)
        if self.branch:
            side = self.branch_pooling(self.branch_conv(images))
            x = tf.concat([x, tf.reshape(side, (-1, int(np.prod(side.shape[1:]))))], axis=-1)
        return x

    def logits(self, patches: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Class logits ``(batch, num_classes)``."""
        return self.classifier(self.dropout_dense(self.features(patches, training=training), training=training))

    def call(self, patches, training=None):
        return self.features(patches, training=False)

    def _objective(self, data, training: bool):
        if "label" not in data:
            raise ConfigError("cnn-branch is supervised but the batches have no 'label'; preprocess a labelled "
                              "source such as builtin:mnist")
        labels = tf.cast(data["label"], tf.int32)
        logits = self.logits(data["patch"], training=training)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), logits.dtype)
        return {"loss": tf.reduce_mean(per_example), "accuracy": tf.reduce_mean(correct)}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            metrics = self._objective(data, training=True)
        self.minimize(tape, metrics["loss"], self.trainable_variables)
        return metrics

    def test_step(self, data):
        return self._objective(data, training=False)

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((self.patch_dim,), name="patches")
        return tf_keras.Model(inputs, self(inputs), name=f"{self.name}_encoder")

    def filters(self) -> Optional[np.ndarray]:
        layer = self.branch_conv if self.branch else self.conv_1
        return np.transpose(layer.kernel.numpy(), (3, 0, 1, 2))

    def get_config(self):
        return {**super().get_config(), "branch": self.branch, "num_classes": self.num_classes,
                "filters": self.n_filters, "dense_units": self.dense_units, "dropout": self.dropout_rate,
                "branch_filters": self.branch_filters, "branch_kernel": self.branch_kernel,
                "branch_pool": self.branch_pool}


def run_row(run_dir: str) -> Dict[str, Any]:
    """One row of the experiment's table from a finished ``ufl train cnn-standard|cnn-branch`` RUN/:
    eval accuracy after every epoch (RUN/logs/history.jsonl) and seconds per epoch (its training
    examples over the loop's steady examples per second, so tracing is left out)."""
    history_path, metrics_path = (os.path.join(run_dir, *parts) for parts in (("logs", "history.jsonl"),
                                                                               ("metrics.json",)))
    if not (os.path.exists(history_path) and os.path.exists(metrics_path)):
        raise ConfigError(f"run {run_dir!r} is invalid; it has no finished training (logs/history.jsonl and "
                          "metrics.json); train it with 'ufl train cnn-standard' or 'ufl train cnn-branch'")
    with open(history_path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    with open(metrics_path, encoding="utf-8") as handle:
        metrics = json.load(handle)
    by_epoch: Dict[int, float] = {}
    for record in records:
        if record.get("split") == "eval" and "accuracy" in record:
            by_epoch[int(record["epoch"])] = float(record["accuracy"])
    accuracies: List[float] = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    if not accuracies:
        raise ConfigError(f"run {run_dir!r} is invalid; its history has no eval accuracy; preprocess DATA/ "
                          "with an eval split (e.g. --eval-split source)")
    steps_per_epoch = metrics["steps"] / max(metrics["epochs"], 1e-9)
    rate = metrics.get("examples_per_second")
    return {"epoch_1_accuracy": accuracies[0], "last_epoch_accuracy": accuracies[-1],
            "epochs": len(accuracies), "accuracy_by_epoch": accuracies,
            "seconds_per_epoch": steps_per_epoch * metrics["batch_size"] / rate if rate else None,
            "wall_seconds": metrics.get("wall_seconds"), "run": run_dir}


def experiment_table(runs: Dict[str, str]) -> Dict[str, Any]:
    """``{"standard": row, "modified": row, "reference": REFERENCE}`` of the two runs ``runs`` names."""
    return {**{name: run_row(path) for name, path in runs.items()}, "reference": REFERENCE}


REFERENCE = {
    "standard": {"epoch_1_accuracy": 0.5675, "epoch_30_accuracy": 0.9676},
    "modified": {"epoch_1_accuracy": 0.7251, "epoch_30_accuracy": 0.9603},
    "source": "the Lasagne MNIST example CNN and the same CNN with a Conv 10x10x32 / maxpool 5x5 branch "
              "concatenated before the softmax; MNIST 50,000 train / 10,000 validation / 10,000 test, SGD "
              "Nesterov momentum 0.9, lr 0.01, batch 500; test accuracy after epoch 1 / 30",
}

#: MNIST's own split, its 10,000 test digits as the eval split. The Lasagne example trains on the first
#: 50,000 training digits and validates on the other 10,000; benchmarks/reproduce.py does the same.
_MNIST_50K = {"source": "builtin:mnist", "extract": "full", "normalize": "none", "eval_split": "source",
              "train_images": "the reference trains on the first 50,000 training digits (benchmarks/reproduce.py "
                              "does the same); the recipe above trains on all 60,000"}
_SGD = {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True}



def _lasagne_preset(name: str, branch: bool, description: str, minutes: float) -> Preset:
    """A preset of the experiment: both CNNs share the optimizer, batch, epochs and data."""
    published = REFERENCE["modified" if branch else "standard"]
    model = {"kind": "mnist_cnn", "branch": branch, "num_classes": 10}
    return Preset(name=name, description=description, model=model,
                  train={"epochs": 30, "batch_size": 500, "optimizer": _SGD}, data=_MNIST_50K,
                  reference={**published, "source": REFERENCE["source"]},
                  full_run=idle_run(f"{minutes} min", note="jit_compile auto: no XLA on CPU"))


PRESETS = [
    _lasagne_preset("cnn-standard", False, "The Lasagne MNIST CNN (Conv 5x5x32, pool 2, Conv 5x5x32, pool 2, "
                    "dropout 0.5, Dense 256, dropout 0.5, softmax), SGD Nesterov 0.9, lr 0.01, batch 500, 30 epochs",
                    3.5),
    _lasagne_preset("cnn-branch", True, "The Lasagne MNIST CNN plus a branch (Conv 10x10x32, maxpool 5x5) "
                    "concatenated with the Dense 256 output before dropout and the softmax; trained as cnn-standard",
                    4.3),
]
