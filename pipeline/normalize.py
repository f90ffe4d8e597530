"""The normalization math of ufl, defined once.

Used twice: by the Beam pipeline when writing DATA/ (``xp=numpy``) and inside exported SavedModels
(``xp=tf.experimental.numpy``), so that served models take raw pixels in [0, 1]. Every function works on
``(..., patch_dim)`` arrays, patch_dim = P*P*C in row-major (H, W, C) order.

Steps, applied in the order given by the config (each step's statistics are computed on the output of
the steps before it):
  scale     (x - min) / (max - min) with the dataset's global pixel min and max (maps any array range into
            [0, 1]; a no-op for images already read as [0, 1]).
  contrast  per-patch: subtract the patch's mean, divide by sqrt(its variance + contrast_epsilon).
  mean      subtract the dataset's mean patch.
  zca       subtract the dataset's mean patch, multiply by the ZCA whitening matrix
            U diag(1 / sqrt(eigenvalues + zca_epsilon)) U^T of the dataset covariance.
  variance  multiply by one constant gain sqrt(target_variance / v), v = the dataset's pixel variance
            averaged over the patch's pixels, so that the patches' pixel variance becomes target_variance
            (models whose inference takes fixed-size steps, as the RMSprop codes of the sparse-coding demo,
            only work at a given scale of the data).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

#: Per-patch variance regularizer of ``contrast`` (in [0, 1] pixel units squared): keeps nearly flat
#: patches from being blown up into noise.
CONTRAST_EPSILON = 1e-3

#: Steps that need dataset statistics, and the stats.npz keys each one reads.
STATS_KEYS = {
    "scale": ("scale_min", "scale_max"),
    "mean": ("mean",),
    "zca": ("zca_mean", "whitening"),
    "variance": ("variance_gain",),
}

#: Steps whose statistics need the full scatter matrix of their input (not only its mean).
SCATTER_STEPS = ("zca", "variance")


def variance_gain(mean_pixel_variance: float, *, target_variance: float) -> np.float64:
    """The ``variance`` step's factor sqrt(target_variance / mean_pixel_variance) (1 for constant data)."""
    if mean_pixel_variance <= 0:
        return np.float64(1.0)
    return np.float64(np.sqrt(target_variance / mean_pixel_variance))


def patch_moments(patches, *, epsilon: float = CONTRAST_EPSILON, xp=np):
    """Each patch's mean and regularized standard deviation sqrt(variance + epsilon), ``(..., 1)`` each."""
    mean = xp.mean(patches, axis=-1, keepdims=True)
    centered = patches - mean
    return mean, xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + epsilon)


def contrast_normalize(patches, *, epsilon: float = CONTRAST_EPSILON, xp=np):
    """Per-patch contrast normalization of ``(..., patch_dim)`` patches."""
    mean, deviation = patch_moments(patches, epsilon=epsilon, xp=xp)
    return (patches - mean) / deviation


def zca_whitening_matrix(covariance: np.ndarray, *, epsilon: float) -> np.ndarray:
    """The symmetric ZCA matrix ``U diag(1/sqrt(s + epsilon)) U^T`` of a ``(d, d)`` covariance (float64)."""
    covariance = np.asarray(covariance, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh((covariance + covariance.T) / 2.0)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    return (eigenvectors * (1.0 / np.sqrt(eigenvalues + epsilon))) @ eigenvectors.T


def apply_step(patches, step: str, stats: Mapping[str, object], *, xp=np,
               contrast_epsilon: float = CONTRAST_EPSILON):
    """Applies one normalization step to ``(..., patch_dim)`` patches with the given statistics."""
    if step == "scale":
        return (patches - stats["scale_min"]) / _scale_range(stats)
    if step == "contrast":
        return contrast_normalize(patches, epsilon=contrast_epsilon, xp=xp)
    if step == "mean":
        return patches - stats["mean"]
    if step == "zca":
        return xp.matmul(patches - stats["zca_mean"], stats["whitening"])
    if step == "variance":
        return patches * stats["variance_gain"]
    raise ValueError(f"unknown normalization step {step!r}; use one of scale, contrast, mean, zca, variance")


def _scale_range(stats: Mapping[str, object]):
    return np.maximum(np.asarray(stats["scale_max"]) - np.asarray(stats["scale_min"]), 1e-12).astype(
        np.asarray(stats["scale_min"]).dtype)


def invert_step(normalized, before, step: str, stats: Mapping[str, object], *, xp=np,
                contrast_epsilon: float = CONTRAST_EPSILON):
    """Undoes one step: maps its output ``normalized`` back to the units of its input ``before``.

    ``before`` is only read by ``contrast``, which needs each patch's own mean and standard deviation.
    """
    if step == "scale":
        return normalized * _scale_range(stats) + stats["scale_min"]
    if step == "contrast":
        mean, deviation = patch_moments(before, epsilon=contrast_epsilon, xp=xp)
        return normalized * deviation + mean
    if step == "mean":
        return normalized + stats["mean"]
    if step == "zca":
        whitening = np.asarray(stats["whitening"])
        inverse = np.linalg.inv(whitening.astype(np.float64)).astype(whitening.dtype)
        return xp.matmul(normalized, inverse) + stats["zca_mean"]
    if step == "variance":
        return normalized / stats["variance_gain"]
    raise ValueError(f"unknown normalization step {step!r}; use one of scale, contrast, mean, zca, variance")


def invert_normalization(normalized, raw, steps: Sequence[str], stats: Mapping[str, object], *, xp=np,
                         contrast_epsilon: float = CONTRAST_EPSILON):
    """Maps ``(..., patch_dim)`` normalized patches (e.g. a model's reconstruction) back to raw pixel units.

    Args:
      normalized: patches in the units after ``steps``.
      raw: the raw patches the normalization started from (``contrast`` is undone with their own moments).
      steps, stats, xp, contrast_epsilon: as for ``apply_normalization``.
    Returns:
      Patches of the same shape in raw pixel units: ``invert_normalization(apply_normalization(raw), raw)``
      equals ``raw`` up to rounding.
    """
    inputs = [raw]
    for step in steps[:-1]:
        inputs.append(apply_step(inputs[-1], step, stats, xp=xp, contrast_epsilon=contrast_epsilon))
    for step, before in zip(reversed(steps), reversed(inputs)):
        normalized = invert_step(normalized, before, step, stats, xp=xp, contrast_epsilon=contrast_epsilon)
    return normalized


def apply_normalization(patches, steps: Sequence[str], stats: Mapping[str, object], *, xp=np,
                        contrast_epsilon: float = CONTRAST_EPSILON):
    """Applies ``steps`` in order to ``(..., patch_dim)`` raw patches in [0, 1].

    Args:
      patches: raw patches, numpy array or (with ``xp=tf.experimental.numpy``) a float32 tensor.
      steps: normalization steps, e.g. ``("contrast", "zca")``.
      stats: the arrays of stats.npz (keys per ``STATS_KEYS``), cast to the patches' dtype by the caller.
      xp: the array module (numpy, or tf.experimental.numpy inside a TF graph).
    Returns:
      Normalized patches of the same shape.
    """
    for step in steps:
        patches = apply_step(patches, step, stats, xp=xp, contrast_epsilon=contrast_epsilon)
    return patches


def fit_statistics(patches: np.ndarray, steps: Sequence[str], *, zca_epsilon: float,
                   contrast_epsilon: float = CONTRAST_EPSILON, target_variance: float = 1.0) -> dict:
    """NumPy reference: the statistics of ``steps`` on a ``(n, patch_dim)`` array held in memory.

    The Beam pipeline computes the same statistics with combiners over datasets that do not fit in memory;
    this function is the reference its tests compare against.
    """
    stats: dict = {}
    data = np.asarray(patches, dtype=np.float64)
    for step in steps:
        if step == "scale":
            stats["scale_min"], stats["scale_max"] = np.float64(data.min()), np.float64(data.max())
        elif step == "mean":
            stats["mean"] = data.mean(axis=0)
        elif step == "zca":
            stats["zca_mean"] = data.mean(axis=0)
            stats["whitening"] = zca_whitening_matrix(np.cov(data, rowvar=False, bias=True),
                                                      epsilon=zca_epsilon)
        elif step == "variance":
            stats["variance_gain"] = variance_gain(float(data.var(axis=0).mean()),
                                                   target_variance=target_variance)
        data = apply_step(data, step, stats, contrast_epsilon=contrast_epsilon)
    return stats
