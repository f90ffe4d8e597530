"""load_encoder: an exported encoder as a tf_keras layer under a classifier head."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from sklearn.model_selection import train_test_split

from ufl.config import ConfigError
from ufl.export import load_encoder

from tests.export.conftest import random_patches


def train_head(features_layer, images, labels, train, test, seed=0):
    """Normalization + softmax Dense on top of ``features_layer``; test accuracy after a fixed budget."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input(images.shape[1:])
    features = features_layer(inputs)
    normalizer = tf_keras.layers.Normalization()
    normalizer.adapt(tf_keras.Model(inputs, features).predict(images[train], verbose=0))
    outputs = tf_keras.layers.Dense(10, activation="softmax")(normalizer(features))
    classifier = tf_keras.Model(inputs, outputs)
    classifier.compile(tf_keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(images[train], labels[train], epochs=30, batch_size=128, verbose=0)
    return classifier.evaluate(images[test], labels[test], verbose=0)[1]


@pytest.mark.slow
def test_classifier_on_exported_encoder_beats_raw_pixels_with_same_head(digits_encoder, digits):
    images, labels = digits
    train, test = train_test_split(np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0)
    encoder = load_encoder(os.path.dirname(digits_encoder["path"]))  # MODELS/NAME -> newest version
    assert encoder.trainable_weights == [] and encoder.non_trainable_weights
    encoded = train_head(encoder, images, labels, train, test)
    raw = train_head(tf_keras.layers.Flatten(), images, labels, train, test)
    assert encoded > raw + 0.005, (encoded, raw)


def test_trainable_encoder_receives_gradients(digits_encoder, digits):
    encoder = load_encoder(digits_encoder["path"], trainable=True)
    assert len(encoder.trainable_weights) == 2  # the ToyCoder's dictionary and reconstruction matrix
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(tf.constant(digits[0][:4])) ** 2)
    dictionary_gradient = tape.gradient(loss, encoder.trainable_weights)[0]
    assert dictionary_gradient is not None and float(tf.reduce_max(tf.abs(dictionary_gradient))) > 0


def test_patch_signature_and_output_shape(digits_encoder, digits):
    codes_layer = load_encoder(digits_encoder["path"], signature="serving_default")
    patches = random_patches(digits[0], 4, 10)
    assert codes_layer(tf.constant(patches)).shape == (10, 32)
    assert codes_layer.compute_output_shape((None, 16)).as_list() == [None, 32]


def test_bad_paths_and_signatures(digits_encoder, tmp_path):
    with pytest.raises(ConfigError, match="signature 'encode' is invalid; .* has: encode_images, reconstruct"):
        load_encoder(digits_encoder["path"], signature="encode")
    with pytest.raises(ConfigError, match="model path .* is invalid; it holds neither saved_model.pb"):
        load_encoder(str(tmp_path))
    with pytest.raises(ConfigError, match="output_key 'codes' is invalid; signature 'encode_images' has"):
        load_encoder(digits_encoder["path"], output_key="codes")
