"""Names and constants of the DATA/ layout, importable without TensorFlow (Beam workers use them).

DATA/ holds ``{split}-SSSSS-of-NNNNN.tfrecord.gz`` shards, ``metadata.json`` (written last: a DATA/ without
it is incomplete), ``stats.npz`` and ``rejected.jsonl``. See docs/contracts.md.
"""
from __future__ import annotations

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
