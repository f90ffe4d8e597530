"""The DATA/ contract read with TensorFlow: metadata, statistics, the tf.data reader, and a small writer.

DATA/ holds ``{split}-SSSSS-of-NNNNN.tfrecord.gz`` (GZIP TFRecords of tf.train.Example with ``patch``
float list of length P*P*C, ``source`` bytes, ``position`` int64 [row, col], optional ``label`` int64),
``metadata.json``, ``stats.npz`` and ``rejected.jsonl``. See docs/contracts.md.
"""
from __future__ import annotations

import io
import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from ufl.pipeline.layout import (COMPRESSION, METADATA_FILE, REJECTED_FILE, SCHEMA_VERSION, SPLITS,  # noqa: F401
                                 STATS_FILE, data_metadata, shard_name)


from ufl.errors import DataError  # noqa: F401,E402  (re-exported: the reader raises it)


def load_metadata(data_dir: str) -> dict:
    """Reads DATA/metadata.json; raises DataError naming the directory when it is missing (incomplete run)."""
    path = os.path.join(data_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise DataError(f"{data_dir} has no {METADATA_FILE}: it is not a complete ufl DATA/ directory; "
                        f"run 'ufl preprocess --out {data_dir} ...' first")
    with tf.io.gfile.GFile(path, "r") as handle:
        metadata = json.load(handle)
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path} has schema_version {metadata.get('schema_version')!r}; this ufl reads "
                        f"{SCHEMA_VERSION}; rerun 'ufl preprocess' with this version")
    return metadata


def load_stats(data_dir: str) -> Dict[str, np.ndarray]:
    """The normalization statistics of DATA/stats.npz as a dict of arrays (empty when there are none)."""
    path = os.path.join(data_dir, STATS_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path, "rb") as handle:
        content = io.BytesIO(handle.read())  # GFile cannot seek before the start of a tiny archive
    with np.load(content) as stats:
        return {key: stats[key] for key in stats.files}


def patch_dim(metadata: dict) -> int:
    rows, cols = metadata["patch_size"]
    return int(rows) * int(cols) * int(metadata["channels"])


def shard_files(data_dir: str, split: str) -> list:
    if split not in SPLITS:
        raise DataError(f"split {split!r} is invalid; use one of {', '.join(SPLITS)}")
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord.gz")))


def _split_shards(data_dir: str, split: str) -> list:
    """The shard files of one split; DataError naming the fix when there are none."""
    files = shard_files(data_dir, split)
    if not files:
        raise DataError(f"{data_dir} has no {split} shards ({split}-*-of-*.tfrecord.gz); "
                        + ("rerun 'ufl preprocess' with --eval-fraction > 0" if split == "eval"
                           else "rerun 'ufl preprocess'"))
    return files


def example_spec(dim: int, *, with_labels: bool = False, with_positions: bool = False) -> dict:
    """The ``tf.io.parse_example`` spec of DATA/ records with patches of ``dim`` values."""
    spec = {"patch": tf.io.FixedLenFeature([dim], tf.float32)}
    if with_labels:
        spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    if with_positions:
        spec["source"] = tf.io.FixedLenFeature([], tf.string)
        spec["position"] = tf.io.FixedLenFeature([2], tf.int64)
    return spec


def read_patches(data_dir: str, split: str = "train", *, batch_size: int = 256, shuffle: bool = False,
                 seed: int = 0, repeat: bool = False, drop_remainder: bool = False,
                 with_labels: bool = False, with_positions: bool = False,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 shuffle_buffer: int = 10_000, record_limits: Optional[Dict[str, int]] = None) -> tf.data.Dataset:
    """A tf.data.Dataset of batches from a DATA/ split.

    Args:
      data_dir: the DATA/ directory.
      split: ``train`` or ``eval``.
      batch_size: examples per batch (per replica when used inside ``distribute_datasets_from_function``).
      shuffle: shuffle shard order and examples (seeded: the same ``seed`` gives the same order).
      seed: shuffle seed.
      repeat: repeat forever.
      drop_remainder: drop the last partial batch (training under tf.distribute wants equal batches).
      with_labels: also yield ``label`` (int64 ``(batch,)``); raises DataError when DATA/ has no labels.
      with_positions: also yield ``source`` (string ``(batch,)``) and ``position`` (int64 ``(batch, 2)``).
      input_context: shard the files across input pipelines (multi-worker training).
      shuffle_buffer: examples in the shuffle buffer.
      record_limits: read at most this many records of the shards it names (path -> count), e.g. the
        readable records before a corrupt one.
    Returns:
      Dataset of dicts: ``patch`` float32 ``(batch, P*P*C)`` plus the optional keys above.

    Example (DATA/ of 4x4 patches, as made in the example of ``ufl.pipeline.preprocess``):
      >>> batch = next(iter(read_patches("work/digits-data", "train", batch_size=8)))
      >>> batch["patch"].shape
      TensorShape([8, 16])
    """
    metadata = load_metadata(data_dir)
    if with_labels and not metadata.get("has_labels", False):
        raise DataError(f"{data_dir} has no labels (source {metadata.get('source')!r}); use a labelled "
                        "source such as builtin:digits or builtin:mnist")
    files = _split_shards(data_dir, split)
    spec = example_spec(patch_dim(metadata), with_labels=with_labels, with_positions=with_positions)
    limits = [int((record_limits or {}).get(path, -1)) for path in files]  # -1: the whole shard
    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(limits, tf.int64)))
    if input_context is not None and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda path, limit: tf.data.TFRecordDataset(path, compression_type=COMPRESSION,
                                                    buffer_size=1 << 20).take(limit),
        # deterministic: the records of parallel reads come in a fixed order, so a seed gives one order
        cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(lambda records: tf.io.parse_example(records, spec),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def write_data_dir(data_dir: str, patches: Dict[str, np.ndarray], *, patch_size: Sequence[int],
                   channels: int, labels: Optional[Dict[str, np.ndarray]] = None,
                   normalization: Optional[dict] = None, stats: Optional[Dict[str, np.ndarray]] = None,
                   source: str = "array", num_shards: int = 1) -> None:
    """Writes a small DATA/ directly from in-memory arrays, without Beam.

    For tests and benchmarks of later stages that need DATA/ of known content (e.g. patches drawn from a
    known dictionary). ``patches`` maps split -> ``(n, P*P*C)`` float array; ``labels`` split -> ``(n,)``.
    The records are encoded by the same code as ``ufl preprocess``'s (records.py).
    """
    from ufl.pipeline.records import serialize_examples, write_tfrecord_gz

    tf.io.gfile.makedirs(data_dir)
    counts = {}
    for split, array in patches.items():
        array = np.asarray(array, dtype=np.float32).reshape(len(array), -1)
        split_labels = None if labels is None else np.asarray(labels[split], np.int64)
        counts[split] = int(len(array))
        for shard in range(num_shards):
            rows = np.arange(shard, len(array), num_shards)
            records = serialize_examples(array[rows], [f"{source}#{index}".encode() for index in rows],
                                         np.zeros((len(rows), 2), np.int64),
                                         None if split_labels is None else split_labels[rows])
            write_tfrecord_gz(os.path.join(data_dir, shard_name(split, shard, num_shards)), records)
    np.savez(os.path.join(data_dir, STATS_FILE), **(stats or {}))
    num_classes = None if labels is None else int(max(int(np.max(v)) for v in labels.values()) + 1)
    metadata = data_metadata(patch_size=patch_size, channels=channels,
                             counts={"images_read": sum(counts.values()), "images_rejected": 0, "patches": counts},
                             normalization=normalization or {"steps": []}, source=source, num_classes=num_classes)
    with tf.io.gfile.GFile(os.path.join(data_dir, METADATA_FILE), "w") as handle:
        json.dump(metadata, handle, indent=2)
