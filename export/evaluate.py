"""``ufl evaluate linear-probe``: how much a learned encoder helps a linear classifier, against raw pixels.

The probe is the standard test of unsupervised features: the same logistic regression (standardized
inputs, L2 penalty ``C``) is trained on the encoder's features and on the raw pixels, with the same
stratified train/test split (default 75/25, seed 0), and both test accuracies are reported. Features are
the ``encode_images`` signature's: for patch models on small images, codes of every patch on a grid, split
by sign and sum-pooled over image quadrants (Coates, Lee & Ng 2011); for whole-image models, the codes.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ufl.config import ConfigError

#: Inverse L2 strength of the probe; on builtin:digits standardized raw pixels reach 97.1% with it.
DEFAULT_C = 0.1


def stratified_split(labels: np.ndarray, *, test_size: float = 0.25, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(train_index, test_index)`` of a stratified split (the same for features and raw pixels)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed)


def stratified_subset(labels: np.ndarray, max_images: Optional[int], *, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_images`` examples with the class proportions of ``labels`` (sorted)."""
    if not max_images or max_images >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(labels)), train_size=max_images, stratify=labels, random_state=seed)
    return np.sort(keep)


def rows(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``array[index]``, as a view when ``index`` is a run of consecutive rows (a source's own split): the
    probe's features of 60,000 images are gigabytes, and a copy of them would double the peak memory."""
    index = np.asarray(index)
    if len(index) and index[-1] - index[0] + 1 == len(index) and np.all(np.diff(index) == 1):
        return array[index[0]:index[-1] + 1]
    return array[index]


def fit_probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *,
              C: float = DEFAULT_C, max_iter: int = 2000) -> Tuple[float, float]:
    """``(test accuracy, seconds)`` of standardized logistic regression trained on ``features[train]``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(rows(features, train), labels[train])
    return float(probe.score(rows(features, test), labels[test])), time.perf_counter() - started


def linear_probe(images: np.ndarray, labels: np.ndarray, encode: Callable[[np.ndarray], np.ndarray], *,
                 test_size: float = 0.25, seed: int = 0, C: float = DEFAULT_C, max_iter: int = 2000,
                 split: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict:
    """Logistic-regression probe of ``encode(images)`` against raw pixels on the same split.

    Args:
      images: float32 ``(N, H, W, C)`` raw images in [0, 1].
      labels: int ``(N,)`` class labels.
      encode: ``(N, H, W, C)`` images -> ``(N, F)`` features (e.g. an exported ``encode_images``).
      test_size: fraction of each class held out for testing, in (0, 1).
      seed: seed of the split.
      C: inverse L2 regularization strength of the logistic regression (> 0), the same for both.
      max_iter: iterations of the solver.
      split: ``(train_index, test_index)`` to use instead of a stratified split (e.g. the source's own
        train and test images, see ``source_split``); ``test_size`` and ``seed`` then play no part.
    Returns:
      ``{"feature_accuracy", "raw_accuracy", "feature_dim", "raw_dim", "feature_seconds" (encoding),
      "feature_fit_seconds", "raw_fit_seconds", "n_train", "n_test", "C", "test_size", "seed"}``.
    """
    if labels is None:
        raise ConfigError("labels None is invalid; the linear probe needs a labelled source such as "
                          "builtin:digits, builtin:mnist or npz:FILE.npz:images:labels")
    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"test_size {test_size} is invalid; use --test-size in (0, 1), e.g. 0.25")
    if C <= 0:
        raise ConfigError(f"C {C} is invalid; use --C > 0, e.g. {DEFAULT_C}")
    labels = np.asarray(labels)
    train, test = split if split is not None else stratified_split(labels, test_size=test_size, seed=seed)
    started = time.perf_counter()
    # float32 (the solver takes it as is): 70,000 images of 8,192 pooled features are 2.3 GB, twice that in float64.
    features = np.asarray(encode(images), np.float32).reshape(len(images), -1)
    feature_seconds = time.perf_counter() - started
    raw = np.asarray(images, np.float32).reshape(len(images), -1)
    feature_accuracy, feature_fit = fit_probe(features, labels, train, test, C=C, max_iter=max_iter)
    raw_accuracy, raw_fit = fit_probe(raw, labels, train, test, C=C, max_iter=max_iter)
    return {
        "feature_accuracy": feature_accuracy,
        "raw_accuracy": raw_accuracy,
        "feature_dim": int(features.shape[1]),
        "raw_dim": int(raw.shape[1]),
        "feature_seconds": round(feature_seconds, 3),
        "feature_fit_seconds": round(feature_fit, 3),
        "raw_fit_seconds": round(raw_fit, 3),
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "C": C,
        "test_size": test_size,
        "seed": seed,
    }


def run_encoder(run_dir: str, *, grid_stride: Optional[int] = None, pool_grid: int = 2,
                batch_size: int = 256) -> Tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """``(images -> features, info)`` of a trained RUN/, the same graph ``ufl export`` would save."""
    import tensorflow as tf

    from ufl.export.serving_module import ServingModule
    from ufl.trainers.run_dir import load_trained_model

    if not os.path.isdir(run_dir):
        raise ConfigError(f"run {run_dir!r} is invalid; no such directory (train one with 'ufl train')")
    trained = load_trained_model(run_dir)
    try:
        module = ServingModule(trained.model, trained.metadata, trained.stats, grid_stride=grid_stride,
                               pool_grid=pool_grid)
    except ValueError as error:
        raise ConfigError(f"run {run_dir!r} is invalid; {error}") from error

    def encode(images: np.ndarray) -> np.ndarray:
        from ufl.progress import progress

        features = None  # filled batch by batch: no list of parts to concatenate (a second copy)
        with progress(len(images), desc="features", unit="img") as bar:
            for start in range(0, len(images), batch_size):
                batch = tf.constant(images[start:start + batch_size], tf.float32)
                part = module.encode_images(batch)["features"].numpy()
                if features is None:
                    features = np.empty((len(images),) + part.shape[1:], part.dtype)
                features[start:start + len(part)] = part
                bar.update(len(part))
        return features

    info = {"kind": trained.config["model"].get("kind"), "preset": trained.config.get("preset"),
            "channels": module.channels, "patch_size": [module.patch_size] * 2, **module.info}
    return encode, info


def model_dir_encoder(model_dir: str, *, batch_size: int = 256) -> Tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """``(images -> features, info)`` of an exported MODELS/NAME[/VERSION] (its ``encode_images``)."""
    from ufl.export.features import compute_features
    from ufl.export.load import read_model_info, resolve_version_dir

    path = resolve_version_dir(model_dir)

    def encode(images: np.ndarray) -> np.ndarray:
        return compute_features(images, model_dir=path, batch_size=batch_size)

    return encode, {**read_model_info(path), "model_dir": path}


def check_image_size(images: np.ndarray, info: dict, source: str) -> None:
    """Raises ConfigError when the encoder cannot take ``source``'s images (whole-image models need
    exactly their size, patch models images at least one patch large)."""
    if not info.get("patch_size"):
        return
    rows, cols = info["patch_size"]
    height, width = images.shape[1:3]
    if info.get("image_mode") == "whole_image" and (height, width) != (rows, cols):
        raise ConfigError(f"data {source} has {height}x{width} images; the model encodes whole {rows}x{cols} "
                          f"images: evaluate it on data of that size (the source it was trained on)")
    if height < rows or width < cols:
        raise ConfigError(f"data {source} has {height}x{width} images, smaller than the model's {rows}x{cols} "
                          "patches; use larger images or a model trained on smaller patches")


def source_of(data: str) -> str:
    """A source spec from ``--data``: a spec as is, or the source recorded in a DATA/ directory."""
    if os.path.isdir(data):
        from ufl.pipeline import DataError, load_metadata

        try:
            return load_metadata(data)["source"]
        except DataError as error:
            raise ConfigError(f"data {data!r} is invalid; {error}") from error
    return data


def source_split(source: str, *, color: str = "gray", max_images: Optional[int] = None, seed: int = 0):
    """``(images, labels, (train_index, test_index))`` of a source with its own train/test split
    (``builtin:mnist``, ``builtin:fashion-mnist``): its train images (a stratified subset of ``max_images``
    of them when given), then all its test images."""
    from ufl.pipeline import load_images

    train_images, train_labels = load_images(source, color=color, split="train")
    test_images, test_labels = load_images(source, color=color, split="test")
    if train_labels is None or test_labels is None:
        raise ConfigError(f"data {source} is invalid; it has no labels; the linear probe needs a labelled source "
                          "such as builtin:mnist")
    keep = stratified_subset(train_labels, max_images, seed=seed)
    images = np.concatenate([train_images[keep], test_images])
    labels = np.concatenate([train_labels[keep], test_labels])
    return images, labels, (np.arange(len(keep)), np.arange(len(keep), len(labels)))
