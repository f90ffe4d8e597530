"""Reconstruction losses shared by ufl's autoencoders (dense and convolutional)."""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

#: Keeps clipped probabilities away from 0 and 1 in the cross-entropy of non-sigmoid outputs.
EPSILON = 1e-7


def reconstruction_loss(target: tf.Tensor, logits: Optional[tf.Tensor], output: tf.Tensor, loss: str) -> tf.Tensor:
    """Per-example reconstruction loss ``(batch,)``: the mean over every other axis of the squared error
    (``mse``) or the binary cross-entropy (``binary_crossentropy``, targets in [0, 1]).

    Args:
      target: ``(batch, ...)`` the clean inputs.
      logits: the pre-activation output when the output activation is a sigmoid (the exact, stable
        cross-entropy from logits), else None.
      output: the reconstruction, same shape as ``target``.
      loss: ``mse`` or ``binary_crossentropy``.
    """
    axes = list(range(1, len(target.shape)))
    if loss == "mse":
        return tf.reduce_mean(tf.square(output - target), axis=axes)
    if logits is not None:
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits), axis=axes)
    output = tf.clip_by_value(output, EPSILON, 1.0 - EPSILON)
    return -tf.reduce_mean(target * tf.math.log(output) + (1.0 - target) * tf.math.log(1.0 - output), axis=axes)
