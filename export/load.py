"""Reuse an exported ufl model inside other TensorFlow programs: ``load_encoder(path)`` -> tf_keras layer.

The layer calls one signature of the SavedModel (by default ``encode_images``: raw images ``(N, H, W, C)``
in [0, 1] -> features ``(N, F)``), so a classifier built on it needs neither ufl's models nor its
normalization code: both are inside the graph.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf
import tf_keras

from ufl.config import ConfigError
from ufl.export import signatures as sig


def resolve_version_dir(path: str) -> str:
    """A SavedModel directory from ``path``: a version dir itself, or MODELS/NAME (its newest version)."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    from ufl.export.versions import list_versions

    versions = list_versions(path, complete_only=True)
    if not versions:
        raise ConfigError(f"model path {path!r} is invalid; it holds neither saved_model.pb nor integer "
                          "version folders (give MODELS/NAME or MODELS/NAME/VERSION written by 'ufl export')")
    return os.path.join(path, str(versions[-1]))


def read_model_info(path: str) -> dict:
    """``assets/ufl.json`` of an exported version (empty dict for SavedModels not written by ufl)."""
    info_path = os.path.join(resolve_version_dir(path), "assets", sig.UFL_ASSET)
    if not tf.io.gfile.exists(info_path):
        return {}
    with tf.io.gfile.GFile(info_path, "r") as handle:
        return json.load(handle)


def load_signature(path: str, signature: str = sig.ENCODE_IMAGES):
    """``(loaded SavedModel, concrete signature function)``; raises ConfigError naming the signatures."""
    loaded = tf.saved_model.load(resolve_version_dir(path))
    if signature not in loaded.signatures:
        raise ConfigError(f"signature {signature!r} is invalid; {path} has: {', '.join(sorted(loaded.signatures))}")
    return loaded, loaded.signatures[signature]


@tf_keras.utils.register_keras_serializable(package="ufl")
class SavedModelEncoder(tf_keras.layers.Layer):
    """A tf_keras layer that applies one signature of an exported ufl model.

    Args:
      path: MODELS/NAME (newest version) or MODELS/NAME/VERSION.
      signature: signature to call (``encode_images``, ``serving_default``, ``reconstruct``).
      output_key: output of the signature to return (default: its only output).
      trainable: fine-tune the exported variables with the rest of the model (gradients flow through the
        signature into the SavedModel's variables); False freezes them.
    """

    def __init__(self, path: str, signature: str = sig.ENCODE_IMAGES, output_key: Optional[str] = None,
                 trainable: bool = False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.path, self.signature = path, signature
        self._loaded, self._function = load_signature(path, signature)
        (self._input_key,) = self._function.structured_input_signature[1].keys()
        outputs = self._function.structured_outputs
        if output_key is None and len(outputs) != 1:
            raise ConfigError(f"output_key None is invalid; signature {signature!r} has outputs "
                              f"{', '.join(sorted(outputs))}: name one")
        if output_key is not None and output_key not in outputs:
            raise ConfigError(f"output_key {output_key!r} is invalid; signature {signature!r} has outputs "
                              f"{', '.join(sorted(outputs))}")
        self.output_key = output_key or next(iter(outputs))
        # Tracked as this layer's weights: trainable or frozen along with the layer.
        self.encoder_variables = list(getattr(self._loaded, "trainable_model_variables", []))

    @property
    def input_spec_of_signature(self) -> tf.TensorSpec:
        return self._function.structured_input_signature[1][self._input_key]

    def call(self, inputs):
        return self._function(**{self._input_key: tf.cast(inputs, tf.float32)})[self.output_key]

    def compute_output_shape(self, input_shape):
        shape = self._function.structured_outputs[self.output_key].shape
        return tf.TensorShape([input_shape[0]]).concatenate(shape[1:])

    def get_config(self):
        return {**super().get_config(), "path": self.path, "signature": self.signature,
                "output_key": self.output_key}


def load_encoder(path: str, signature: str = sig.ENCODE_IMAGES, trainable: bool = False,
                 **kwargs) -> SavedModelEncoder:
    """An exported ufl model's signature as a tf_keras layer.

    Example (a classifier on the features of the model exported in ``ufl.export.export_run``'s example):
      >>> import numpy as np, tf_keras
      >>> encoder = load_encoder("work/models/digits")      # raw images (N, 8, 8, 1) in [0, 1] -> features
      >>> inputs = tf_keras.Input((8, 8, 1))
      >>> classifier = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation="softmax")(encoder(inputs)))
      >>> classifier(np.zeros((2, 8, 8, 1), np.float32)).shape
      TensorShape([2, 10])

    Args:
      path: MODELS/NAME (newest version) or MODELS/NAME/VERSION written by ``ufl export``.
      signature: the signature to wrap; ``encode_images`` maps raw images to pooled features,
        ``serving_default`` raw patches ``(N, P*P*C)`` to codes.
      trainable: let an outer optimizer update the exported variables.
    Returns:
      A ``SavedModelEncoder`` layer.
    """
    return SavedModelEncoder(path, signature=signature, trainable=trainable, **kwargs)
