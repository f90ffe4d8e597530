"""Image features from a patch encoder: dense patch codes pooled over a grid.

The standard recipe for features of small images from patch-level feature learners (Coates, Lee & Ng 2011):
encode every P x P patch on a grid (stride ``stride``), split codes by sign (``max(c, 0)``, ``max(-c, 0)``)
so pooling keeps both polarities, and sum-pool them over a ``pool_grid`` x ``pool_grid`` partition of the
image. Used by the exported ``encode_images`` signature, and through it by ``ufl features`` and
``ufl evaluate``: one definition for all. It is TensorFlow math on images and patches, beside the patch
extraction of ``patches.py``, so that the export stage imports it without importing a trainer.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf


def extract_grid_patches(images: tf.Tensor, *, patch_size: int, stride: int) -> tf.Tensor:
    """Patches on a grid.

    Args:
      images: float32 ``(batch, height, width, channels)``.
    Returns:
      ``(batch, rows, cols, patch_size * patch_size * channels)`` patches, row-major (H, W, C) like DATA/.
    """
    return tf.image.extract_patches(images, sizes=[1, patch_size, patch_size, 1],
                                    strides=[1, stride, stride, 1], rates=[1, 1, 1, 1], padding="VALID")


def pooled_image_features(images: tf.Tensor, encode_patches: Callable[[tf.Tensor], tf.Tensor], *,
                          patch_size: int, stride: int = 1, pool_grid: int = 2,
                          split_sign: bool = True) -> tf.Tensor:
    """Pooled features of images.

    Args:
      images: float32 ``(batch, height, width, channels)`` raw pixels (whatever ``encode_patches`` expects).
      encode_patches: maps ``(n, patch_dim)`` raw patches to codes ``(n, n_codes)`` (normalization included).
      patch_size: side of the square patches the encoder takes.
      stride: step of the patch grid.
      pool_grid: the image's patch grid is split into ``pool_grid`` x ``pool_grid`` regions.
      split_sign: pool ``max(c, 0)`` and ``max(-c, 0)`` separately (doubles the feature size).
    Returns:
      ``(batch, pool_grid * pool_grid * n_codes * (2 if split_sign else 1))`` features.
    """
    patches = extract_grid_patches(images, patch_size=patch_size, stride=stride)
    batch = tf.shape(patches)[0]
    rows, cols, dim = patches.shape[1], patches.shape[2], patches.shape[3]
    if rows is None or cols is None:
        rows, cols = tf.shape(patches)[1], tf.shape(patches)[2]
    codes = encode_patches(tf.reshape(patches, [-1, dim]))
    n_codes = codes.shape[-1]
    codes = tf.reshape(codes, [batch, rows, cols, n_codes])
    if split_sign:
        codes = tf.concat([tf.nn.relu(codes), tf.nn.relu(-codes)], axis=-1)
    pooled = []
    row_edges = [rows * i // pool_grid for i in range(pool_grid + 1)]
    col_edges = [cols * j // pool_grid for j in range(pool_grid + 1)]
    for i in range(pool_grid):
        for j in range(pool_grid):
            region = codes[:, row_edges[i]:row_edges[i + 1], col_edges[j]:col_edges[j + 1], :]
            pooled.append(tf.reduce_sum(region, axis=[1, 2]))
    return tf.concat(pooled, axis=-1)
