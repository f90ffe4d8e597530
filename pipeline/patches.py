"""Patch extraction: P x P patches cut from batches of images, vectorized per batch.

Modes (``--extract``):
  random  ``patches_per_image`` positions drawn uniformly (with replacement) from a generator seeded by
          (seed, image uri): the same seed gives the same patches whatever the order or grouping of images.
  grid    every position on a ``stride`` grid, row by row.
  center  one crop at the image's center.
  full    the whole image is the sample (its size must equal ``patch_shape``).
Patches whose pixel standard deviation is below ``min_std`` are dropped (flat sky, blank margins).

Each image also gets a train/eval split from a stable hash of its key (its uri without the spelling of the
source's folder, ``Source.image_key``), independent of the seed, so reruns, different seeds and different
working directories agree on which images are held out.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How to cut samples: ``patch_shape`` (rows, cols), mode, and the mode's options (see module doc)."""

    patch_shape: Tuple[int, int]
    mode: str = "random"
    patches_per_image: int = 1000
    stride: Optional[int] = None
    min_std: float = 0.0
    seed: int = 0


@dataclasses.dataclass
class PatchBlock:
    """Patches of a batch of images: ``patches`` float32 ``(m, rows*cols*C)`` raw pixels, ``image_index``
    int ``(m,)`` into the batch, ``positions`` int64 ``(m, 2)`` [row, col] of the top-left corners, and
    the number of patches ``dropped`` by ``min_std``."""

    patches: np.ndarray
    image_index: np.ndarray
    positions: np.ndarray
    dropped: int = 0


def uri_hash(uri: str) -> int:
    """A stable 64-bit hash of ``uri`` (the same on every machine and Python run)."""
    return int.from_bytes(hashlib.blake2b(uri.encode("utf-8"), digest_size=8).digest(), "little")


def is_eval(keys: Sequence[str], eval_fraction: float) -> np.ndarray:
    """bool ``(n,)``: which images go to the eval split (stable hash of the key below ``eval_fraction``)."""
    return np.array([uri_hash(key) / 2.0 ** 64 < eval_fraction for key in keys], dtype=bool)


def size_problem(shape: Sequence[int], options: ExtractOptions) -> Optional[str]:
    """Why an ``(H, W, ...)`` image cannot give a sample, or None when it can."""
    rows, cols = options.patch_shape
    height, width = int(shape[0]), int(shape[1])
    if options.mode == "full":
        if (height, width) != (rows, cols):
            return (f"image {height}x{width} differs from the {rows}x{cols} sample size of --extract full; "
                    "resize the images or pass --patch-size matching them")
        return None
    if height < rows or width < cols:
        return (f"image {height}x{width} is smaller than the {rows}x{cols} patch; use --patch-size "
                f"<= {min(height, width)}")
    return None


def patch_positions(keys: Sequence[str], height: int, width: int, options: ExtractOptions) -> np.ndarray:
    """int64 ``(n, k, 2)`` top-left corners of the k patches of each of ``n`` images of size height x width
    (``keys``: the images' keys, which seed their random positions)."""
    rows, cols = options.patch_shape
    n = len(keys)
    if options.mode == "random":
        k = options.patches_per_image
        corners = np.empty((n, k, 2), dtype=np.int64)
        for index, key in enumerate(keys):
            rng = np.random.default_rng([options.seed, uri_hash(key)])
            corners[index, :, 0] = rng.integers(0, height - rows + 1, size=k)
            corners[index, :, 1] = rng.integers(0, width - cols + 1, size=k)
        return corners
    if options.mode == "grid":
        stride = options.stride or rows
        grid_rows = np.arange(0, height - rows + 1, stride)
        grid_cols = np.arange(0, width - cols + 1, options.stride or cols)
        grid = np.stack(np.meshgrid(grid_rows, grid_cols, indexing="ij"), axis=-1).reshape(-1, 2)
        return np.broadcast_to(grid, (n,) + grid.shape).astype(np.int64)
    if options.mode == "center":
        return np.broadcast_to(np.array([(height - rows) // 2, (width - cols) // 2], np.int64), (n, 1, 2))
    return np.zeros((n, 1, 2), dtype=np.int64)


def extract_patches(images: np.ndarray, keys: Sequence[str], options: ExtractOptions) -> PatchBlock:
    """Cuts the patches of a batch of same-size images.

    Args:
      images: float32 ``(n, H, W, C)`` raw pixels, each at least ``patch_shape`` (see ``size_problem``).
      keys: the ``n`` images' keys (``ImageBatch.keys``; they seed the random positions).
      options: extraction options.
    Returns:
      A PatchBlock with patches flattened row-major (rows, cols, C), in image order then position order.
    """
    n, height, width, channels = images.shape
    rows, cols = options.patch_shape
    corners = patch_positions(keys, height, width, options)
    k = corners.shape[1]
    image_index = np.repeat(np.arange(n), k)
    corners = corners.reshape(-1, 2)
    windows = sliding_window_view(images, (rows, cols), axis=(1, 2))  # (n, H-r+1, W-c+1, C, r, c)
    patches = windows[image_index, corners[:, 0], corners[:, 1]]        # (m, C, r, c)
    patches = np.ascontiguousarray(patches.transpose(0, 2, 3, 1)).reshape(len(corners), rows * cols * channels)
    dropped = 0
    if options.min_std > 0:
        keep = patches.std(axis=1) >= options.min_std
        dropped = int(len(keep) - keep.sum())
        patches, image_index, corners = patches[keep], image_index[keep], corners[keep]
    return PatchBlock(patches.astype(np.float32, copy=False), image_index, corners, dropped)
