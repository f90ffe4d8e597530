"""Figures of a training run: RUN/plots/filters.png, reconstructions.png and loss.png (matplotlib Agg).

``filter_grid`` is also what the loop logs to TensorBoard as the ``filters`` image.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def filter_grid(filters: np.ndarray, *, padding: int = 1) -> np.ndarray:
    """Tiles ``(n, P, P, C)`` features into one ``(rows*(P+pad), cols*(P+pad), C)`` image in [0, 1].

    Each feature is scaled symmetrically around 0 by its own largest magnitude (0 maps to mid-gray), so
    the sign structure of every atom is visible whatever its norm; padding is mid-gray.
    """
    filters = np.asarray(filters, dtype=np.float32)
    if filters.ndim != 4:
        raise ValueError(f"filters of shape {filters.shape} are invalid; expected (n, height, width, channels)")
    count, height, width, channels = filters.shape
    scale = np.max(np.abs(filters.reshape(count, -1)), axis=1)
    scaled = 0.5 + 0.5 * filters / np.where(scale > 0, scale, 1.0)[:, None, None, None]
    cols = int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / cols))
    grid = np.full((rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
                   0.5, dtype=np.float32)
    for index in range(count):
        row, col = divmod(index, cols)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top:top + height, left:left + width] = scaled[index]
    return grid


def _show(axis, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def plot_filters(filters: np.ndarray, path: str, *, title: str = "learned features") -> None:
    """Saves the features ``(n, P, P, C)`` as a grid, each scaled symmetrically around 0."""
    plt = _pyplot()
    grid = filter_grid(filters)
    figure, axis = plt.subplots(figsize=(8, 8 * grid.shape[0] / grid.shape[1] + 0.4))
    _show(axis, grid)
    axis.set_title(f"{title} ({len(filters)})")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_reconstructions(patches: np.ndarray, reconstructions: np.ndarray, sample_shape: Sequence[int],
                         path: str) -> None:
    """Saves originals (top row) above reconstructions (bottom row); both ``(n, P*P*C)``, each pair scaled
    symmetrically by the original's largest magnitude (normalized patches are centred on 0)."""
    plt = _pyplot()
    originals = np.asarray(patches, dtype=np.float32).reshape((-1, *sample_shape))
    rebuilt = np.asarray(reconstructions, dtype=np.float32).reshape((-1, *sample_shape))
    count = len(originals)
    figure, axes = plt.subplots(2, count, figsize=(1.2 * count, 2.8), squeeze=False)
    for index in range(count):
        scale = float(np.max(np.abs(originals[index]))) or 1.0
        _show(axes[0, index], 0.5 + 0.5 * originals[index] / scale)
        _show(axes[1, index], 0.5 + 0.5 * rebuilt[index] / scale)
    axes[0, 0].set_ylabel("data")
    axes[1, 0].set_ylabel("model")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_loss(history: Sequence[dict], path: str, *, key: str = "loss") -> Optional[str]:
    """Saves ``key`` against the training step for the train and eval records of RUN/logs/history.jsonl."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("eval", "o-")):
        points = [(r["step"], r[key]) for r in history if r.get("split") == split and key in r]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, style, label=split, markersize=3)
    axis.set_xlabel("step")
    axis.set_ylabel(key)
    values = [r[key] for r in history if key in r]
    if values and min(values) > 0:
        axis.set_yscale("log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return os.path.basename(path)


def _summary_metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


def log_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar in the default summary writer (written with the raw ``tf.summary.write`` op
    in the scalars plugin's format, so training does not need the tensorboard package installed)."""
    import tensorflow as tf

    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_summary_metadata("scalars"))


def log_image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (``(H, W, C)`` floats in [0, 1]) in the images plugin's format."""
    import tensorflow as tf

    pixels = tf.constant(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    tensor = tf.stack([tf.as_string(tf.shape(pixels)[1]), tf.as_string(tf.shape(pixels)[0]),
                       tf.io.encode_png(pixels)])
    tf.summary.write(tag, tensor, step=step, metadata=_summary_metadata("images"))
