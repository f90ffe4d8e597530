"""Names and constants of the DATA/ layout, importable without TensorFlow (Beam workers use them).

DATA/ holds ``{split}-SSSSS-of-NNNNN.tfrecord.gz`` shards, ``metadata.json`` (written last: a DATA/ without
it is incomplete), ``stats.npz`` and ``rejected.jsonl``. See docs/contracts.md.
"""
from __future__ import annotations

from typing import Optional, Sequence

SCHEMA_VERSION = 1
SPLITS = ("train", "eval")
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.npz"
REJECTED_FILE = "rejected.jsonl"
CONFIG_FILE = "preprocess_config.json"
COMPRESSION = "GZIP"


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``train-00001-of-00004.tfrecord.gz`` for split ``train``, shard 1 of 4."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord.gz"


def data_metadata(*, patch_size: Sequence[int], channels: int, counts: dict, normalization: dict, source: str,
                  num_classes: Optional[int] = None, **details) -> dict:
    """The content of DATA/metadata.json (the one place it is built; docs/contracts.md lists the fields).

    Args:
      patch_size: (rows, cols) of the samples.
      channels: 1 (gray) or 3 (rgb).
      counts: ``images_read``, ``images_rejected``, ``patches`` per split, and what else the writer counts.
      normalization: ``steps`` and their parameters.
      source: the source spec the patches came from.
      num_classes: for labelled data, the number of classes; None when DATA/ has no labels.
      details: further fields (how the samples were cut, versions, times), stored as given.
    """
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "patch_size": [int(patch_size[0]), int(patch_size[1])],
        "channels": int(channels),
        "has_labels": num_classes is not None,
        "counts": counts,
        "normalization": normalization,
        "source": source,
        **details,
    }
    if num_classes is not None:
        metadata["num_classes"] = int(num_classes)
    return metadata
