"""Tiny deterministic FeatureLearners and presets for the training-loop tests (no tests here).

Registered as model kinds ``test-linear-ae`` (gradient-trained, outer optimizer) and ``test-mean-patch``
(closed-form update with an all-reduce, no optimizer), with presets of the same names. Subprocess tests
import this module before calling ``ufl.cli.main`` so that ``ufl train test-linear-ae ...`` works there.
"""
import time

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.trainers.base import FeatureLearner
from ufl.trainers.presets import Preset, register_preset
from ufl.trainers.registry import register_model


@register_model("test-linear-ae")
@tf_keras.utils.register_keras_serializable(package="ufl_tests")
class LinearAutoencoder(FeatureLearner):
    """codes = relu(x W + b); reconstruction = codes W^T; loss = mean squared error + L1 on the codes."""

    def __init__(self, sample_shape, n_codes: int = 8, sparsity_weight: float = 0.0, step_seconds: float = 0.0,
                 **kwargs):
        super().__init__(sample_shape, **kwargs)
        if n_codes <= 0:
            raise ValueError(f"n_codes {n_codes!r} is invalid; use a positive integer")
        self.n_codes, self.sparsity_weight = int(n_codes), float(sparsity_weight)
        self.step_seconds = float(step_seconds)
        self.supports_jit = not self.step_seconds  # the sleep is a Python call, outside XLA

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(self.patch_dim, self.n_codes),
                                      initializer=tf_keras.initializers.GlorotUniform(seed=1))
        self.bias = self.add_weight(name="bias", shape=(self.n_codes,), initializer="zeros")
        super().build(input_shape)

    def call(self, patches, training=False):
        return tf.nn.relu(tf.matmul(patches, self.weight) + self.bias)

    def reconstruct(self, patches):
        return tf.matmul(self(patches), self.weight, transpose_b=True)

    def _objective(self, patches):
        codes = self(patches)
        error = tf.reduce_sum(tf.square(patches - tf.matmul(codes, self.weight, transpose_b=True)), axis=-1)
        per_example = error + self.sparsity_weight * tf.reduce_sum(tf.abs(codes), axis=-1)
        return per_example, {
            "loss": tf.reduce_mean(per_example),
            "reconstruction_error": tf.reduce_mean(error),
            "sparsity": tf.reduce_mean(tf.cast(codes > 0, tf.float32)),
            "nonzeros": tf.reduce_mean(tf.reduce_sum(tf.cast(codes > 0, tf.float32), axis=-1)),
        }

    def train_step(self, data):
        if self.step_seconds:  # slows training down so that a subprocess test can kill it mid-run
            tf.py_function(lambda: time.sleep(self.step_seconds), [], [])
        with tf.GradientTape() as tape:
            _, metrics = self._objective(data["patch"])
        self.minimize(tape, metrics["loss"], self.trainable_variables)
        return metrics

    def test_step(self, data):
        return self._objective(data["patch"])[1]

    def filters(self):
        return np.transpose(self.weight.numpy()).reshape((self.n_codes, *self.sample_shape))

    def get_config(self):
        return {**super().get_config(), "n_codes": self.n_codes, "sparsity_weight": self.sparsity_weight,
                "step_seconds": self.step_seconds}


@register_model("test-mean-patch")
@tf_keras.utils.register_keras_serializable(package="ufl_tests")
class MeanPatch(FeatureLearner):
    """Closed-form learner: running mean of all patches seen (statistics all-reduced across replicas)."""

    uses_optimizer = False
    supports_reconstruction = False

    def build(self, input_shape):
        self.total = self.add_weight(name="total", shape=(self.patch_dim,), initializer="zeros",
                                     trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.seen = self.add_weight(name="seen", shape=(), initializer="zeros", trainable=False,
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        super().build(input_shape)

    def call(self, patches, training=False):
        return patches - self.total / tf.maximum(self.seen, 1.0)

    def train_step(self, data):
        patches = data["patch"]
        context = tf.distribute.get_replica_context()
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(patches, axis=0))
        seen = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.shape(patches)[0], tf.float32))
        self.total.assign_add(total)
        self.seen.assign_add(seen)
        return self.test_step(data)

    def test_step(self, data):
        return {"loss": tf.reduce_mean(tf.reduce_sum(tf.square(self(data["patch"])), axis=-1))}


register_preset(Preset(name="test-linear-ae", description="test model: linear autoencoder",
                       model={"kind": "test-linear-ae", "n_codes": 8},
                       train={"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "learning_rate": 0.01},
                              "checkpoint_every": 10, "steps_per_execution": 4},
                       data={"source": "builtin:digits", "patch_size": 4},
                       reference={"loss": 1.0, "source": "made up for tests"}))
@register_model("test-labelled")
@tf_keras.utils.register_keras_serializable(package="ufl_tests")
class LabelledMeanPatch(MeanPatch):
    """MeanPatch that also reads labels (as supervised fine-tuning steps do)."""

    requires_labels = True


register_preset(Preset(name="test-mean-patch", description="test model: mean patch",
                       model={"kind": "test-mean-patch"}, train={"epochs": 1, "batch_size": 16}))


def make_data(path, *, rows=256, eval_rows=64, dim=16, seed=0, num_shards=1, labels=False):
    """A DATA/ of low-rank Gaussian patches (4x4x1 by default) written without Beam."""
    from ufl.pipeline.tfrecord import write_data_dir

    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, dim)).astype(np.float32)
    patches = {split: (rng.normal(size=(n, 4)) @ basis + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)
               for split, n in (("train", rows), ("eval", eval_rows)) if n}
    side = int(round(dim ** 0.5))
    write_data_dir(str(path), patches, patch_size=(side, side), channels=1, num_shards=num_shards,
                   labels={split: np.arange(len(p)) % 3 for split, p in patches.items()} if labels else None)
    return patches
