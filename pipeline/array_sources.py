"""Readers of array files and datasets: ``npy:``, ``npz:``, ``mat:`` and ``tfds:`` (see sources.py).

Each loads its array once per process (``ArraySource.arrays``) and is read in units of ``ARRAY_CHUNK`` rows.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ufl.config.base import ConfigError
from ufl.errors import DataError, first_line
from ufl.pipeline import datasets
from ufl.pipeline.sources import Arrays, ArraySource

#: Keys tried for the labels of an npz file (plus ``y_train`` for ``x_train`` and the like).
LABEL_KEYS = ("labels", "label", "y")
#: Keras' dataset layout (``mnist.npz``): read whole, with its train/test split, when no key is given.
KERAS_SPLIT_KEYS = ("x_train", "x_test")


def split_path_key(arg: str, extension: str) -> Tuple[str, Optional[str]]:
    """``'data.npz:images'`` -> ('data.npz', 'images'); a ':' inside the path (gs://) is kept."""
    head, sep, tail = arg.rpartition(":")
    if sep and head.lower().endswith(extension) and "/" not in tail:
        return head, tail
    return arg, None


def require_file(path: str, spec: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise ConfigError(f"file {path!r} of source {spec} does not exist; check the path")


class FileArraySource(ArraySource):
    """An array source read from one file (its ``location``), which must exist."""

    def check(self) -> None:
        require_file(self.location(), self.spec)
        super().check()


class NpySource(FileArraySource):
    def location(self) -> str:
        return self.spec.split(":", 1)[1]

    def load(self):
        return np.load(self.location(), mmap_mode="r"), None


class NpzSource(FileArraySource):
    def location(self) -> str:
        return split_path_key(self.spec.split(":", 1)[1], ".npz")[0]

    def load(self):
        path, key = split_path_key(self.spec.split(":", 1)[1], ".npz")
        with np.load(path) as data:
            keys = list(data.files)
            if key is None and set(KERAS_SPLIT_KEYS) <= set(keys):
                return keras_split(data)
            if key is None:
                key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
            if key not in keys:
                raise ConfigError(f"npz key {key!r} is not in {path} (keys: {', '.join(keys)}); "
                                  f"use npz:{path}:KEY")
            images = data[key]
            label_keys = list(LABEL_KEYS) + (["y" + key[1:]] if key.startswith("x") else [])
            labels = next((data[k] for k in label_keys if k in keys and k != key
                           and data[k].shape == (len(images),)), None)
        return images, None if labels is None else labels.astype(np.int64)


def keras_split(data) -> Arrays:
    """An npz in Keras' layout (``x_train``, ``x_test``, labels ``y_train``, ``y_test`` when present) as one
    array source with its own train/test split."""
    train, test = data["x_train"], data["x_test"]
    labels = None
    if "y_train" in data.files and "y_test" in data.files:
        labels = np.concatenate([data["y_train"], data["y_test"]]).astype(np.int64)
        if len(labels) != len(train) + len(test):
            labels = None
    return Arrays(np.concatenate([train, test]), labels,
                  (("train", 0, len(train)), ("test", len(train), len(train) + len(test))))


class MatSource(FileArraySource):
    def location(self) -> str:
        return split_path_key(self.spec.split(":", 1)[1], ".mat")[0]

    def load(self):
        from scipy.io import loadmat

        path, key = split_path_key(self.spec.split(":", 1)[1], ".mat")
        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        if key is None:
            key = next(iter(data)) if len(data) == 1 else None
        if key not in data:
            raise ConfigError(f"MATLAB variable {key!r} is not in {path} (variables: {', '.join(data)}); "
                              f"use mat:{path}:NAME")
        array = np.asarray(data[key])
        if array.ndim == 2:
            side = int(round(np.sqrt(array.shape[0])))
            if side * side != array.shape[0]:
                raise ConfigError(f"MATLAB variable {key!r} of {path} has shape {array.shape}; a 2-D array "
                                  "must hold one square P x P patch per column (P*P rows)")
            # MATLAB stores each patch column-major: column -> P x P with Fortran order.
            return array.T.reshape(-1, side, side).transpose(0, 2, 1), None
        if array.ndim == 3:
            return np.moveaxis(array, -1, 0), None
        if array.ndim == 4:
            return np.moveaxis(array, -1, 0), None
        raise ConfigError(f"MATLAB variable {key!r} of {path} has shape {array.shape}; use (P*P, N), "
                          "(H, W, N) or (H, W, C, N)")


class TfdsSource(ArraySource):
    """``tfds:NAME[:SPLIT]`` (default split ``train``) through tensorflow-datasets."""

    def __init__(self, spec: str, color: str, data_dir: Optional[str] = None):
        super().__init__(spec, color)
        self.data_dir = data_dir

    def builder(self):
        import tensorflow_datasets as tfds

        name = self.spec.split(":", 2)[1]
        try:
            builder = tfds.builder(name, data_dir=self.data_dir)
        except Exception as error:  # tfds raises several types for unknown names
            raise ConfigError(f"tfds dataset {name!r} is unavailable ("
                              f"{first_line(error, with_type=True)}); check the name with tfds.list_builders() or "
                              "pass --tfds-data-dir with a prepared copy") from None
        if not builder.is_prepared():
            unreachable = unreachable_hosts(builder)
            if unreachable:  # TFDS would retry each file for minutes before giving up
                raise DataError(f"tfds dataset {name!r} is not prepared in {builder.data_dir} and its download "
                                f"host{'s' if len(unreachable) > 1 else ''} {', '.join(unreachable)} cannot be "
                                f"reached (offline); prepare it on a machine online with 'tfds build {name} "
                                "--data_dir DIR', copy DIR here and pass --tfds-data-dir DIR")
            try:
                builder.download_and_prepare()
            except Exception as error:
                raise ConfigError(f"tfds dataset {name!r} is not prepared in {builder.data_dir} and could "
                                  f"not be downloaded ({type(error).__name__}); prepare it with "
                                  "'tfds build' or pass --tfds-data-dir") from None
        return builder

    def load(self):
        import tensorflow_datasets as tfds

        parts = self.spec.split(":", 2)
        split = parts[2] if len(parts) > 2 else "train"
        builder = self.builder()
        features = builder.info.features
        image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
        if image_key is None:
            raise ConfigError(f"tfds dataset {parts[1]!r} has no image feature; use an image dataset")
        label_key = next((k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)), None)
        if split not in builder.info.splits:
            raise ConfigError(f"tfds split {split!r} is not in {parts[1]} (splits: "
                              f"{', '.join(builder.info.splits)}); use tfds:{parts[1]}:SPLIT")
        dataset = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        labels = None if label_key is None else dataset[label_key].astype(np.int64)
        return dataset[image_key], labels


def unreachable_hosts(builder) -> list:
    """The hosts of ``builder``'s download urls (TFDS's own bucket when it lists none) that do not answer."""
    from urllib.parse import urlsplit

    urls = list(getattr(builder, "url_infos", None) or {}) or [f"https://{datasets.DOWNLOAD_HOST}/"]
    hosts = sorted({(parts.hostname, parts.port or (80 if parts.scheme == "http" else 443))
                    for parts in map(urlsplit, urls) if parts.hostname})
    return [host for host, port in hosts if not datasets.is_online(host, port=port)]
