"""RUN/ directories for export tests, made by hand following trainers/run_dir.py (no 'ufl train' needed).

``ToyCoder`` is a tiny FeatureLearner registered for these tests: codes come from a few ISTA steps inside a
``tf.while_loop`` (like the sparse-coding layer's inference) and ``reconstruct`` multiplies by a matrix that
starts as the identity, so the served reconstruction of raw patches must give those raw patches back.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from ufl.pipeline.normalize import apply_normalization, fit_statistics
from ufl.pipeline.tfrecord import write_data_dir
from ufl.trainers.base import FeatureLearner
from ufl.trainers.registry import build_model, register_model


@tf_keras.utils.register_keras_serializable(package="ufl_tests")
class ToyCoder(FeatureLearner):
    """Codes: ``n_steps`` ISTA steps of a lasso on a random dictionary, run in a tf.while_loop."""

    def __init__(self, sample_shape, n_codes=12, n_steps=5, sparsity_weight=0.05, **kwargs):
        super().__init__(sample_shape, **kwargs)
        self.n_codes, self.n_steps, self.sparsity_weight = n_codes, n_steps, sparsity_weight

    def build(self, input_shape):
        rng = np.random.default_rng(1)
        atoms = rng.normal(size=(self.n_codes, self.patch_dim)).astype(np.float32)
        atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
        self.dictionary = self.add_weight(name="dictionary", shape=atoms.shape,
                                          initializer=tf_keras.initializers.Constant(atoms))
        self.reconstruction = self.add_weight(name="reconstruction", shape=(self.patch_dim, self.patch_dim),
                                              initializer="identity")
        super().build(input_shape)

    def call(self, patches, training=False):
        gram = tf.matmul(self.dictionary, self.dictionary, transpose_b=True)
        step = 1.0 / (tf.reduce_max(tf.linalg.eigvalsh(gram)) + 1e-6)
        target = tf.matmul(patches, self.dictionary, transpose_b=True)

        def body(i, codes):
            moved = codes - step * (tf.matmul(codes, gram) - target)
            return i + 1, tf.sign(moved) * tf.nn.relu(tf.abs(moved) - step * self.sparsity_weight)

        _, codes = tf.while_loop(lambda i, _: i < self.n_steps, body,
                                 (tf.constant(0), tf.zeros_like(target)))
        return codes

    def reconstruct(self, patches):
        return tf.matmul(patches, self.reconstruction)

    def encoder_model(self):
        inputs = tf_keras.Input((self.patch_dim,))
        return tf_keras.Model(inputs, self(inputs))

    def get_config(self):
        return {**super().get_config(), "n_codes": self.n_codes, "n_steps": self.n_steps,
                "sparsity_weight": self.sparsity_weight}


@pytest.fixture(scope="package", autouse=True)
def toy_model_kind():
    """Registers ``export_toy`` while this folder's tests run, so other folders never see it."""
    from ufl.trainers import registry

    register_model("export_toy")(ToyCoder)
    yield "export_toy"
    registry._MODEL_KINDS.pop("export_toy", None)


def digits_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images[..., None] / 16.0).astype(np.float32), digits.target.astype(np.int64)


def random_patches(images, patch_size, count, seed=0):
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), count)
    tops = rng.integers(0, images.shape[1] - patch_size + 1, count)
    lefts = rng.integers(0, images.shape[2] - patch_size + 1, count)
    return np.stack([images[i, t:t + patch_size, l:l + patch_size].reshape(-1)
                     for i, t, l in zip(picks, tops, lefts)]).astype(np.float32)


def make_run(root, model_spec, raw_patches, *, patch_size, channels=1, steps=("contrast", "zca"),
             source="builtin:digits", extra_metadata=None, checkpoint=True, model_setup=None):
    """Writes DATA/ (normalized ``raw_patches``) and a RUN/ with an initialized model; returns both paths.

    ``model_setup(model)`` may set weights before the checkpoint is saved.
    """
    data_dir, run_dir = os.path.join(root, "DATA"), os.path.join(root, "RUN")
    stats = {k: np.asarray(v, np.float32) for k, v in fit_statistics(raw_patches, steps, zca_epsilon=0.01).items()}
    normalized = apply_normalization(raw_patches.astype(np.float64), steps, stats)
    write_data_dir(data_dir, {"train": normalized}, patch_size=(patch_size, patch_size), channels=channels,
                   normalization={"steps": list(steps)}, stats=stats, source=source)
    if extra_metadata:
        with open(os.path.join(data_dir, "metadata.json")) as handle:
            metadata = json.load(handle)
        metadata.update(extra_metadata)
        with open(os.path.join(data_dir, "metadata.json"), "w") as handle:
            json.dump(metadata, handle)
    os.makedirs(os.path.join(run_dir, "data"))
    for name in ("metadata.json", "stats.npz"):
        tf.io.gfile.copy(os.path.join(data_dir, name), os.path.join(run_dir, "data", name))
    config = {"preset": "test", "data": data_dir, "out": run_dir, "model": dict(model_spec), "epochs": 1,
              "batch_size": 32}
    with open(os.path.join(run_dir, "config.json"), "w") as handle:
        json.dump(config, handle)
    model = build_model(model_spec, (patch_size, patch_size, channels))
    model(tf.zeros([1, patch_size * patch_size * channels]))
    if model_setup:
        model_setup(model)
    if checkpoint:
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                             os.path.join(run_dir, "checkpoints"), max_to_keep=1)
        manager.save()
    return data_dir, run_dir


@pytest.fixture(scope="session")
def digits():
    return digits_images()


@pytest.fixture(scope="package")
def toy_export(tmp_path_factory, digits):
    """A ToyCoder RUN/ on 4x4 digit patches (contrast + ZCA) exported once as MODELS/toy/1."""
    from ufl.config import ExportConfig
    from ufl.export.saved_model import export_run

    root = str(tmp_path_factory.mktemp("toy"))
    raw = random_patches(digits[0], 4, 600)
    data_dir, run_dir = make_run(root, {"kind": "export_toy"}, raw, patch_size=4)
    models = os.path.join(root, "MODELS")
    path = export_run(ExportConfig(run=run_dir, model_base=models, name="toy", grid_stride=1))
    return {"root": root, "data": data_dir, "run": run_dir, "models": models, "path": path, "raw": raw}


@pytest.fixture(scope="package")
def digits_encoder(tmp_path_factory, digits):
    """``{"run", "path"}`` of a ToyCoder whose dictionary is learned (k-means of contrast+ZCA-normalized 4x4 digit patches)."""
    from sklearn.cluster import KMeans
    from sklearn.model_selection import train_test_split

    from ufl.config import ExportConfig
    from ufl.export.saved_model import export_run
    from ufl.trainers.run_dir import load_run_files

    root = str(tmp_path_factory.mktemp("encoder"))
    images, labels = digits
    train_index, _ = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    raw = random_patches(images[train_index], 4, 4000)

    def learn_dictionary(model):  # called by make_run once RUN/data/stats.npz exists
        _, _, stats = load_run_files(os.path.join(root, "RUN"))
        normalized = apply_normalization(raw, ("contrast", "zca"), stats)
        centers = KMeans(32, n_init=1, random_state=0).fit(normalized).cluster_centers_
        model.dictionary.assign(centers / np.linalg.norm(centers, axis=1, keepdims=True))

    _, run_dir = make_run(root, {"kind": "export_toy", "n_codes": 32}, raw, patch_size=4,
                          model_setup=learn_dictionary)
    path = export_run(ExportConfig(run=run_dir, model_base=os.path.join(root, "MODELS"), name="digits",
                                   grid_stride=1, warmup_requests=0))
    return {"run": run_dir, "path": path}
