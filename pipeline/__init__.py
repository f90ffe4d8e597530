"""ufl.pipeline: the Beam preprocessing stage (images -> normalized patch TFRecords) and its reader.

Names are imported lazily, so that Beam workers importing ``ufl.pipeline.<module>`` never load TensorFlow
(only the tf.data reader in ``tfrecord.py`` needs it).
"""
import importlib

_EXPORTS = {
    "DataError": "ufl.pipeline.tfrecord",
    "load_metadata": "ufl.pipeline.tfrecord",
    "load_stats": "ufl.pipeline.tfrecord",
    "read_patches": "ufl.pipeline.tfrecord",
    "write_data_dir": "ufl.pipeline.tfrecord",
    "apply_normalization": "ufl.pipeline.normalize",
    "fit_statistics": "ufl.pipeline.normalize",
    "load_images": "ufl.pipeline.sources",
    "preprocess": "ufl.pipeline.preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ufl.pipeline' has no attribute {name!r}")


def __dir__():
    return __all__
