"""Figures of a training run: RUN/plots/filters.png, reconstructions.png and loss.png (matplotlib Agg).

``filter_grid`` is also what the loop logs to TensorBoard as the ``filters`` image.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np


def preload_in_background() -> None:
    """Imports matplotlib in a daemon thread (about half a second), so that the loss plot at the end of
    training does not wait for it; training's compiled steps release the interpreter meanwhile."""
    import threading

    threading.Thread(target=_pyplot, name="ufl-preload-matplotlib", daemon=True).start()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, *, cols: int, padding: int = 1) -> np.ndarray:
    """Tiles ``(n, H, W, C)`` images in [0, 1] into one ``(rows*(H+pad)+pad, cols*(W+pad)+pad, C)`` image
    with mid-gray padding."""
    count, height, width, channels = images.shape
    rows = int(math.ceil(count / cols))
    grid = np.full((rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
                   0.5, dtype=np.float32)
    for index in range(count):
        row, col = divmod(index, cols)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top:top + height, left:left + width] = images[index]
    return grid


def symmetric_scale(images: np.ndarray, scale: Optional[np.ndarray] = None) -> np.ndarray:
    """``(n, H, W, C)`` -> [0, 1] with 0 at mid-gray, each image divided by its own largest magnitude (or by
    ``scale[i]``)."""
    if scale is None:
        scale = np.max(np.abs(images.reshape(len(images), -1)), axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(0.5 + 0.5 * images / scale[:, None, None, None], 0.0, 1.0)


def filter_grid(filters: np.ndarray, *, padding: int = 1) -> np.ndarray:
    """Tiles ``(n, P, P, C)`` features into one square-ish image in [0, 1].

    Each feature is scaled symmetrically around 0 by its own largest magnitude (0 maps to mid-gray), so
    the sign structure of every atom is visible whatever its norm; padding is mid-gray.
    """
    filters = np.asarray(filters, dtype=np.float32)
    if filters.ndim != 4:
        raise ValueError(f"filters of shape {filters.shape} are invalid; expected (n, height, width, channels)")
    return tile(symmetric_scale(filters), cols=int(math.ceil(math.sqrt(len(filters)))), padding=padding)


def save_image(image: np.ndarray, path: str, *, min_size: int = 480) -> None:
    """Saves an ``(H, W, C)`` image in [0, 1] as PNG, enlarged by an integer factor (nearest neighbour) so
    that small patches stay visible."""
    from PIL import Image

    factor = max(1, int(math.ceil(min_size / max(image.shape[:2]))))
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def plot_filters(filters: np.ndarray, path: str) -> None:
    """Saves the features ``(n, P, P, C)`` as a grid, each scaled symmetrically around 0."""
    save_image(filter_grid(filters), path)


def plot_reconstructions(patches: np.ndarray, reconstructions: np.ndarray, sample_shape: Sequence[int],
                         path: str) -> None:
    """Saves originals (top row) above their reconstructions (bottom row); both ``(n, P*P*C)``. Each pair
    is scaled symmetrically by the original's largest magnitude (normalized patches are centred on 0)."""
    originals = np.asarray(patches, dtype=np.float32).reshape((-1, *sample_shape))
    rebuilt = np.asarray(reconstructions, dtype=np.float32).reshape((-1, *sample_shape))
    scale = np.max(np.abs(originals.reshape(len(originals), -1)), axis=1)
    pairs = np.concatenate([symmetric_scale(originals, scale), symmetric_scale(rebuilt, scale)])
    save_image(tile(pairs, cols=len(originals)), path)


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
