"""Image sources of ``ufl preprocess``: one reader per scheme, all yielding float32 images in [0, 1].

A source spec is ``SCHEME:ARG``:

  builtin:natural   the scikit-image sample photos (10 images, gray or RGB)
  builtin:digits    scikit-learn's 1,797 8x8 digits (pixel values 0-16 scaled to [0, 1]), labelled
  builtin:faces     the 100 25x25 LFW faces of scikit-image's ``lfw_subset``
  builtin:mnist     the full MNIST, 60,000 train + 10,000 test 28x28 digits (its own split), labelled
  builtin:fashion-mnist  the full Fashion-MNIST, 60,000 train + 10,000 test (its own split), labelled
  builtin:mnist10k  10,000 real 28x28 MNIST digits vendored in ufl/data/mnist10k.npz, labelled
  images:GLOB       PNG/JPEG/BMP/GIF files matched by Beam's FileSystems (local, gs://, s3:// ...)
  npy:PATH          an N x H x W [x C] array
  npz:PATH[:KEY]    array KEY (default ``images``, or the only array); labels from ``labels``/``label``/``y``
                    (or ``y_train`` for ``x_train``) when present with N entries; without KEY, a file in
                    Keras' layout (``x_train``, ``x_test``, ``y_train``, ``y_test``) with its train/test split
  mat:PATH[:KEY]    MATLAB file: (D, N) one P x P patch per column (D = P*P, column-major as in the classic
                    patches.mat), (H, W, N) images along the last axis (as IMAGES.mat), or (H, W, C, N)
  tfds:NAME[:SPLIT] a TensorFlow Datasets image dataset (prepared in ``--tfds-data-dir`` or downloaded)

The full datasets are found or downloaded as pipeline/datasets.py describes. A source with its own split
(train/test) reads each part in its own units; its images' uris are ``SPEC/SPLIT#INDEX`` and their batches
carry the split name.

Pixel values: uint8 / 255, uint16 / 65535, bool as 0/1; float arrays are kept as they are (add the ``scale``
normalization step to map another range into [0, 1]).

A source is split into small, picklable *units* (one file, one image, or a range of array rows); Beam
reads each unit with :meth:`Source.read`, which yields ``ImageBatch``es and ``Rejection``s, so one bad
input is recorded and skipped instead of failing the job.
"""
from __future__ import annotations

import dataclasses
import io
import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ufl.config.base import ConfigError
from ufl.errors import first_line
from ufl.pipeline import datasets

#: Images per unit of an array source: large enough to amortize Beam's per-element cost.
ARRAY_CHUNK = 1024
#: scikit-image sample photos used by ``builtin:natural`` (all bundled with scikit-image, no download).
NATURAL_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
                  "rocket")
#: Luminance weights of gray conversion (ITU-R 709, as skimage.color.rgb2gray).
LUMINANCE = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


@dataclasses.dataclass
class ImageBatch:
    """Images of one shape read from one unit: ``images`` float32 ``(n, H, W, C)``, ``uris`` n strings,
    ``labels`` int64 ``(n,)`` or None, ``split`` the source's own split of them (``train``/``test``) or None."""

    uris: List[str]
    images: np.ndarray
    labels: Optional[np.ndarray] = None
    split: Optional[str] = None
    #: Each image's identity within its source, independent of how the source's path was spelled (see
    #: ``Source.image_key``): it picks the train/eval split and seeds the random patch positions.
    keys: Optional[List[str]] = None

    def __post_init__(self):
        if self.keys is None:
            self.keys = list(self.uris)


@dataclasses.dataclass
class Arrays:
    """An array source in memory: images N x H x W [x C] in the source's dtype, labels ``(N,)`` or None, and
    the source's own split as ``(name, start, stop)`` row ranges (None when it has none)."""

    images: np.ndarray
    labels: Optional[np.ndarray] = None
    splits: Optional[Tuple[Tuple[str, int, int], ...]] = None

    def split_range(self, name: str) -> Tuple[int, int]:
        for split, start, stop in self.splits or ():
            if split == name:
                return start, stop
        raise ConfigError(f"split {name!r} is not in this source (splits: "
                          f"{', '.join(s[0] for s in self.splits or ()) or 'none'})")


@dataclasses.dataclass
class Rejection:
    """An input that could not be used: its uri and why (one line of rejected.jsonl)."""

    source: str
    reason: str


def to_unit_range(array: np.ndarray) -> np.ndarray:
    """Pixel values as float32: uint8 / 255, uint16 / 65535, bool as 0/1, anything else unchanged."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / np.float32(65535.0)
    return array.astype(np.float32)


def to_color(images: np.ndarray, color: str) -> np.ndarray:
    """``(n, H, W, C)`` images (C in 1-4; alpha dropped) as 1 gray or 3 RGB channels."""
    channels = images.shape[-1]
    if channels in (2, 4):
        images, channels = images[..., :channels - 1], channels - 1
    if color == "gray":
        return images if channels == 1 else (images @ LUMINANCE)[..., None]
    return np.repeat(images, 3, axis=-1) if channels == 1 else images


def check_layout(shape, where: str) -> None:
    """Raises ConfigError naming ``where`` unless ``shape`` is N x H x W or N x H x W x C (C = 1-4)."""
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 2, 3, 4))):
        raise ConfigError(f"array of shape {tuple(shape)} in {where} is not N x H x W or N x H x W x C "
                          "(C = 1, 3 or 4); pass an array of images")


def as_nhwc(images: np.ndarray, where: str) -> np.ndarray:
    """An N x H x W or N x H x W x C array as N x H x W x C; raises ConfigError naming ``where``."""
    check_layout(images.shape, where)
    return images[..., None] if images.ndim == 3 else images


class Source:
    """Base of the readers. Subclasses set ``has_labels`` and implement ``check``, ``units`` and ``read``."""

    has_labels = False
    #: Names of the source's own split (e.g. ``("train", "test")``), empty when it has none.
    split_names: Tuple[str, ...] = ()

    def __init__(self, spec: str, color: str):
        self.spec = spec
        self.color = color

    def check(self) -> None:
        """Raises ConfigError when the source cannot be read at all (missing file, empty glob...)."""

    def location(self) -> Optional[str]:
        """The file or folder path inside the spec (None for built-in and tfds sources)."""
        return None

    def image_key(self, uri: str) -> str:
        """``uri`` without the spelling of the source's location: ``npz:data/x.npz#00000007``,
        ``npz:./data/x.npz#00000007`` and ``npz:/home/me/data/x.npz#00000007`` all give
        ``npz:x.npz#00000007``, so the same files get the same split and patches from any working directory."""
        location = self.location()
        if not location:
            return uri
        return uri.replace(location, os.path.basename(location.rstrip("/")), 1)

    def units(self) -> list:
        raise NotImplementedError

    def read(self, unit) -> Iterator[Union[ImageBatch, Rejection]]:
        raise NotImplementedError

    def batch(self, uris: Sequence[str], images: np.ndarray, labels: Optional[np.ndarray],
              split: Optional[str] = None):
        """Color-converts a batch and moves images with NaN/Inf pixels into Rejections."""
        images = to_color(images, self.color)
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        for index in np.flatnonzero(~finite):
            yield Rejection(uris[index], "image contains NaN or Inf pixel values")
        if finite.all():
            yield ImageBatch(list(uris), images, labels, split, [self.image_key(uri) for uri in uris])
        elif finite.any():
            kept = [uri for uri, ok in zip(uris, finite) if ok]
            yield ImageBatch(kept, images[finite], None if labels is None else labels[finite], split,
                             [self.image_key(uri) for uri in kept])


class ArraySource(Source):
    """A source held as one N x H x W x C array (builtin digits/faces/mnist, npy, npz, mat, tfds)."""

    _cache: dict = {}

    def load(self) -> Union[Arrays, Tuple[np.ndarray, Optional[np.ndarray]]]:
        """``Arrays``, or ``(images N x H x W x C in the source's dtype, labels (N,) or None)``."""
        raise NotImplementedError

    def arrays(self) -> Arrays:
        key = (type(self).__name__, self.spec)
        if key not in ArraySource._cache:
            ArraySource._cache.clear()  # keep one source in memory per process
            loaded = self.load()
            ArraySource._cache[key] = loaded if isinstance(loaded, Arrays) else Arrays(*loaded)
        return ArraySource._cache[key]

    def check(self) -> None:
        arrays = self.arrays()
        self.has_labels = arrays.labels is not None
        self.split_names = tuple(name for name, _, _ in arrays.splits or ())
        if len(arrays.images) == 0:
            raise ConfigError(f"source {self.spec} holds no images; pass a non-empty array")
        check_layout(arrays.images.shape, self.spec)  # a wrong layout fails here, before any work

    def ranges(self) -> Tuple[Tuple[Optional[str], int, int], ...]:
        """The source's rows as ``(split or None, start, stop)`` ranges: its own split, or one range."""
        arrays = self.arrays()
        return arrays.splits or ((None, 0, len(arrays.images)),)

    def units(self) -> list:
        return [(begin, min(begin + ARRAY_CHUNK, stop)) for _, start, stop in self.ranges()
                for begin in range(start, stop, ARRAY_CHUNK)]

    def read(self, unit):
        start, stop = unit
        arrays = self.arrays()
        split, offset = next(((name, first) for name, first, last in self.ranges() if first <= start < last))
        prefix = self.spec if split is None else f"{self.spec}/{split}"
        uris = [f"{prefix}#{index - offset:08d}" for index in range(start, stop)]
        chunk = to_unit_range(as_nhwc(np.asarray(arrays.images[start:stop]), self.spec))
        labels = None if arrays.labels is None else np.asarray(arrays.labels[start:stop], np.int64)
        yield from self.batch(uris, chunk, labels, split)

    def all_images(self, split: Optional[str] = None):
        arrays = self.arrays()
        start, stop = (0, len(arrays.images)) if split is None else arrays.split_range(split)
        images = to_color(to_unit_range(as_nhwc(np.asarray(arrays.images[start:stop]), self.spec)), self.color)
        return images, None if arrays.labels is None else np.asarray(arrays.labels[start:stop], np.int64)


class BuiltinSource(ArraySource):
    def load(self):
        name = self.spec.split(":", 1)[1]
        if name in datasets.DATASETS:
            found = datasets.load(name)
            return Arrays(np.concatenate([found.x_train, found.x_test]),
                          np.concatenate([found.y_train, found.y_test]).astype(np.int64),
                          (("train", 0, len(found.x_train)),
                           ("test", len(found.x_train), len(found.x_train) + len(found.x_test))))
        if name == "digits":
            from sklearn.datasets import load_digits

            digits = load_digits()
            return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)
        if name == "faces":
            from skimage.data import lfw_subset

            return lfw_subset()[:100].astype(np.float32), None  # the first 100 of 200 are the faces
        if name == "mnist10k":
            import ufl

            with np.load(os.path.join(os.path.dirname(ufl.__file__), "data", "mnist10k.npz")) as data:
                return data["images"], data["labels"].astype(np.int64)
        raise ConfigError(f"builtin source {name!r} is invalid; use natural, digits, faces, mnist10k, mnist "
                          "or fashion-mnist")


class NaturalSource(Source):
    """``builtin:natural``: the scikit-image photos, one unit each (they differ in size)."""

    def units(self) -> list:
        return list(NATURAL_PHOTOS)

    def read(self, unit):
        import skimage.data

        image = to_unit_range(getattr(skimage.data, unit)())
        image = image[..., None] if image.ndim == 2 else image
        yield from self.batch([f"builtin:natural/{unit}"], image[None], None)

    def all_images(self):
        images = [batch.images[0] for unit in self.units() for batch in self.read(unit)]
        return images, None


class FileSource(Source):
    """``images:GLOB``: image files matched by Beam's FileSystems, one unit per file."""

    def glob(self) -> str:
        return self.spec.split(":", 1)[1]

    def image_key(self, uri: str) -> str:
        """The file's path below the glob's first wildcard-free folder (``photos/*.png`` and
        ``/home/me/photos/*.png`` both give ``a.png`` for ``photos/a.png``)."""
        glob = self.glob()
        cut = min((glob.find(c) for c in "*?[" if c in glob), default=len(glob))
        root = glob[:cut].rsplit("/", 1)[0] if "/" in glob[:cut] else ""
        root_path = os.path.abspath(root) if root and "://" not in root else root
        path = os.path.abspath(uri) if "://" not in uri else uri
        if root_path and path.startswith(root_path.rstrip("/") + "/"):
            return path[len(root_path.rstrip("/")) + 1:]
        return os.path.basename(uri)

    def check(self) -> None:
        if not self.units():
            raise ConfigError(f"glob {self.glob()!r} of source {self.spec} matches no files; check the "
                              "path and quote the glob so the shell does not expand it")

    def units(self) -> list:
        from apache_beam.io.filesystems import FileSystems

        if not hasattr(self, "_paths"):
            try:
                matched = FileSystems.match([self.glob()])[0].metadata_list
            except Exception:  # an empty or unreadable location matches nothing
                matched = []
            self._paths = sorted(item.path for item in matched if not item.path.endswith("/"))
        return self._paths

    def read(self, unit):
        try:
            image = decode_image_file(unit)
        except Exception as error:  # any decode failure is recorded, never fatal
            yield Rejection(unit, f"cannot decode image: {first_line(error)}")
            return
        yield from self.batch([unit], image[None], None)

    def all_images(self):
        images = [batch.images[0] for unit in self.units() for batch in self.read(unit)
                  if isinstance(batch, ImageBatch)]
        return images, None


def decode_image_file(path: str) -> np.ndarray:
    """A PNG/JPEG/BMP/GIF file (any Beam filesystem) as float32 ``(H, W, C)`` in [0, 1]."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from PIL import Image

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read()
    if not data:
        raise ValueError("empty file (0 bytes)")
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes now, so truncated files fail here
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            array = array / (65535.0 if array.max() > 255 or image.mode.startswith("I;16") else 255.0)
        elif image.mode == "F":
            array = np.asarray(image, dtype=np.float64)
        else:
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
            array = np.asarray(image, dtype=np.float64) / 255.0
    array = array.astype(np.float32)
    return array[..., None] if array.ndim == 2 else array


def open_source(spec: str, *, color: str = "gray", tfds_data_dir: Optional[str] = None) -> Source:
    """The reader of ``spec``; raises ConfigError on an unknown scheme."""
    scheme, _, arg = spec.partition(":")
    if scheme == "builtin":
        return NaturalSource(spec, color) if arg == "natural" else BuiltinSource(spec, color)
    if scheme == "images":
        return FileSource(spec, color)
    from ufl.pipeline import array_sources

    readers = {"npy": array_sources.NpySource, "npz": array_sources.NpzSource, "mat": array_sources.MatSource}
    if scheme in readers:
        return readers[scheme](spec, color)
    if scheme == "tfds":
        return array_sources.TfdsSource(spec, color, tfds_data_dir)
    raise ConfigError(f"source scheme {scheme!r} of {spec!r} is invalid; use one of builtin, images, npy, "
                      "npz, mat, tfds")


def load_images(spec: str, *, color: str = "gray", tfds_data_dir: Optional[str] = None,
                split: Optional[str] = None):
    """A source's raw images without Beam, for evaluation, feature extraction and tests.

    Args:
      spec: the source, as for ``ufl preprocess --source``.
      color: ``gray`` or ``rgb``.
      tfds_data_dir: where ``tfds:`` sources find prepared datasets.
      split: only this part of the source's own split (``train`` or ``test`` of ``builtin:mnist`` and
        ``builtin:fashion-mnist``); None for all images. Raises ConfigError for a source without that split.
    Returns:
      ``(images, labels)``: float32 ``(N, H, W, C)`` images in [0, 1] (C = 1 for gray, 3 for rgb) and int64
      ``(N,)`` labels or None. Images of differing sizes (``builtin:natural``, globs) are center-cropped to
      the smallest height and width among them; undecodable files are skipped.
    """
    source = open_source(spec, color=color, tfds_data_dir=tfds_data_dir)
    source.check()
    if split is None:
        images, labels = source.all_images()
    elif split in source.split_names:
        images, labels = source.all_images(split)
    else:
        raise ConfigError(f"source {spec} has no split {split!r} of its own (splits: "
                          f"{', '.join(source.split_names) or 'none'}); use a source with a train/test split "
                          "such as builtin:mnist or builtin:fashion-mnist")
    if isinstance(images, list):
        if not images:
            raise ConfigError(f"source {spec} has no readable images")
        rows = min(image.shape[0] for image in images)
        cols = min(image.shape[1] for image in images)
        images = np.stack([center_crop(image, rows, cols) for image in images])
    return images, labels


def center_crop(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The central ``rows x cols`` part of an ``(H, W, C)`` image."""
    top, left = (image.shape[0] - rows) // 2, (image.shape[1] - cols) // 2
    return image[top:top + rows, left:left + cols]
