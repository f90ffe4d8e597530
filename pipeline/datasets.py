"""The standard datasets behind ``builtin:mnist`` and ``builtin:fashion-mnist``: where they are found, how
they are read, and how they are checked.

Each is the original 60,000-image train and 10,000-image test split, found in this order:

1. the folder named by the ``UFL_DATASETS`` environment variable;
2. Keras' dataset cache (``~/.keras/datasets/``), where ``tf_keras.datasets.<name>.load_data()`` puts it;
3. ``/usr/share/datasets/fashion-mnist/``, where Debian's ``dataset-fashion-mnist`` package installs it;
4. else it is downloaded by ``tf_keras.datasets`` into Keras' cache, when the machine is online.

A folder holds a dataset in either of the ecosystem's formats: Keras' ``mnist.npz`` (arrays ``x_train``,
``y_train``, ``x_test``, ``y_test``), named ``<name>.npz``, or the four gzipped IDX files of the original
distribution (``train-images-idx3-ubyte.gz`` ...) in a sub-folder ``<name>/``.

Every copy is checked before use against the published sha256 of the four uncompressed IDX files (for an
npz, of the IDX bytes its arrays stand for), so a truncated, corrupt or different file is refused with one
line naming it. Nothing here imports TensorFlow, except the download, which needs tf_keras.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
import zipfile
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from ufl.errors import DataError, first_line

#: Environment variable naming a folder of datasets (checked first).
ENV_VAR = "UFL_DATASETS"
#: Debian's install folder of ``dataset-fashion-mnist``.
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
#: The four arrays of a dataset, in Keras' npz keys, with the IDX file each comes from.
PARTS = (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
         ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte"))
#: Seconds to wait for the download server before calling the machine offline.
ONLINE_TIMEOUT = 3.0
#: Host of the files that ``tf_keras.datasets`` downloads.
DOWNLOAD_HOST = "storage.googleapis.com"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One standard dataset: its names, where Keras and Debian keep it, and its published checksums."""

    name: str                  # as in builtin:NAME
    keras_module: str          # tf_keras.datasets.<keras_module>.load_data() downloads it
    keras_path: str            # where that puts it, relative to ~/.keras/datasets
    sha256: Dict[str, str]     # sha256 of each uncompressed IDX file, as published
    system_folders: Tuple[str, ...] = ()


DATASETS = {
    # The canonical values of yann.lecun.com's files, as listed with the full MNIST's make script and in
    # several public loaders.
    "mnist": DatasetInfo("mnist", "mnist", "mnist.npz", {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    # The files of zalandoresearch/fashion-mnist, uncompressed (their md5 values are published with the
    # dataset; these are the sha256 of the same bytes).
    "fashion-mnist": DatasetInfo("fashion-mnist", "fashion_mnist", "fashion-mnist", {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
        system_folders=(DEBIAN_FASHION,)),
}


@dataclasses.dataclass
class SplitArrays:
    """A dataset's official split: uint8 images ``(n, 28, 28)`` and uint8 labels ``(n,)`` of each part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    path: str


def keras_cache() -> str:
    """Keras' dataset cache folder (``~/.keras/datasets``)."""
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def candidates(info: DatasetInfo) -> List[str]:
    """The places looked at for ``info``, in order: npz files and IDX folders."""
    places = []
    folder = os.environ.get(ENV_VAR)
    if folder:
        places += [os.path.join(folder, info.name + ".npz"), os.path.join(folder, info.name)]
    places.append(os.path.join(keras_cache(), info.keras_path))
    places += list(info.system_folders)
    return places


def is_present(path: str) -> bool:
    """An npz file, or a folder holding the four gzipped IDX files."""
    if path.endswith(".npz"):
        return os.path.isfile(path)
    return all(os.path.isfile(os.path.join(path, idx + ".gz")) for _, idx in PARTS)


def find(name: str) -> Optional[str]:
    """The first place holding dataset ``name``, or None."""
    return next((path for path in candidates(DATASETS[name]) if is_present(path)), None)


def load(name: str, *, download: bool = True) -> SplitArrays:
    """Dataset ``name`` (``mnist`` or ``fashion-mnist``), found, read and checked (see the module doc).

    Raises:
      DataError: no copy and no network (naming the places and how to fill one), or a copy that is
        truncated, has a wrong IDX header or differs from the published checksums (naming the file).
    """
    info = DATASETS[name]
    path = find(name)
    if path is None and download:
        fetch(info)
        path = find(name)
    if path is None:
        raise DataError(missing_message(info))
    return read(path, info)


def read(path: str, info: DatasetInfo) -> SplitArrays:
    """The four arrays of the copy at ``path`` (npz file or IDX folder), checked against ``info``."""
    arrays = read_npz(path) if path.endswith(".npz") else read_idx_folder(path)
    for key, idx in PARTS:
        where = path if path.endswith(".npz") else os.path.join(path, idx + ".gz")
        digest = hashlib.sha256(idx_bytes(arrays[key])).hexdigest()
        if digest != info.sha256[idx]:
            raise DataError(f"{where}: {'array ' + key + ' ' if path.endswith('.npz') else ''}has sha256 "
                            f"{digest[:16]}... of its IDX content, expected the published "
                            f"{info.sha256[idx][:16]}... of {idx}; replace it with the original {info.name} "
                            "file")
    return SplitArrays(path=path, **arrays)


def read_npz(path: str) -> Dict[str, np.ndarray]:
    """Keras' npz layout: ``x_train``, ``y_train``, ``x_test``, ``y_test`` as uint8 arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key, _ in PARTS if key not in data.files]
            if missing:
                raise DataError(f"{path}: arrays {', '.join(missing)} are missing; expected Keras' layout "
                                "x_train, y_train, x_test, y_test")
            arrays = {key: data[key] for key, _ in PARTS}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read as an npz archive ({type(error).__name__}: "
                        f"{first_line(error)}); the file is truncated or corrupt, replace it") from None
    for key, array in arrays.items():
        if array.dtype != np.uint8:
            raise DataError(f"{path}: array {key} has dtype {array.dtype}; expected uint8 as in Keras' "
                            "mnist.npz")
    return arrays


def read_idx_folder(folder: str) -> Dict[str, np.ndarray]:
    return {key: read_idx(os.path.join(folder, idx + ".gz"), images=key.startswith("x")) for key, idx in PARTS}


def read_idx(path: str, *, images: bool) -> np.ndarray:
    """One gzipped IDX file of unsigned bytes: images ``(n, rows, cols)`` or labels ``(n,)``.

    IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, each dimension as a
    big-endian uint32, then the values.
    """
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot be decompressed ({first_line(error, with_type=True)}); the "
                        "file is truncated or not gzip, replace it") from None
    ndim = 3 if images else 1
    magic = 0x0800 + ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "missing" if found is None else f"0x{found:08x}"
        raise DataError(f"{path}: IDX magic number {shown}; expected 0x{magic:08x} (unsigned bytes, {ndim} "
                        f"dimension{'s' if ndim > 1 else ''}); this is not an MNIST-format "
                        f"{'image' if images else 'label'} file")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: holds {len(raw)} bytes once decompressed; its header "
                        f"({' x '.join(map(str, shape))}) expects {expected}; the file is truncated or "
                        "corrupt, replace it")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX file of a uint8 array (header + values), as the dataset is published."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes((0, 0, 0x08, array.ndim)) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def is_online(host: str = DOWNLOAD_HOST, timeout: float = ONLINE_TIMEOUT, port: int = 443) -> bool:
    """Whether ``host`` answers on ``port`` within ``timeout`` seconds (a failed name lookup is immediate)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch(info: DatasetInfo) -> None:
    """Downloads ``info`` with ``tf_keras.datasets`` into Keras' cache; does nothing when offline."""
    if not is_online():
        return
    import importlib

    loader = importlib.import_module(f"tf_keras.datasets.{info.keras_module}")
    try:
        loader.load_data()
    except Exception as error:  # a broken connection must not look like a missing dataset
        raise DataError(f"downloading {info.name} with tf_keras.datasets.{info.keras_module}.load_data() "
                        f"failed ({first_line(error, with_type=True)}); "
                        f"{fill_hint(info)}") from None


def fill_hint(info: DatasetInfo) -> str:
    files = "mnist.npz (x_train, y_train, x_test, y_test)" if info.name == "mnist" else (
        "the four gzipped IDX files (train-images-idx3-ubyte.gz ...)")
    return (f"put {info.name}'s {files} in a folder and set {ENV_VAR} to it "
            f"(as {info.name}.npz or {info.name}/), or run "
            f"'python -c \"import tf_keras; tf_keras.datasets.{info.keras_module}.load_data()\"' on a "
            "machine online to fill Keras' cache")


def missing_message(info: DatasetInfo) -> str:
    places = candidates(info)
    if not os.environ.get(ENV_VAR):
        places.insert(0, f"${ENV_VAR} (unset)")
    return (f"builtin:{info.name} needs the {info.name} dataset, found in none of {', '.join(places)}, and "
            f"{DOWNLOAD_HOST} is unreachable (offline); {fill_hint(info)}")
