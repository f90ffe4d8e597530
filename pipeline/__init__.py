"""ufl.pipeline: the Beam preprocessing stage (images -> normalized patch TFRecords) and its reader."""
from ufl.pipeline.tfrecord import DataError, load_metadata, load_stats, read_patches

__all__ = ["DataError", "load_metadata", "load_stats", "read_patches"]
