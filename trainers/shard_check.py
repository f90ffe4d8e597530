"""Finding the corrupt record of a DATA/ shard, so that training can name it (or train around it).

TensorFlow reports a truncated or corrupt TFRecord as ``DataLossError: truncated record at 8749`` without
the file. ``corrupt_data_error`` scans the shards of DATA/ and names the first unreadable one, the index of
its first unreadable record and the fix; ``readable_records`` gives the readable prefix of every shard, which
``ufl train --skip-corrupt-records`` trains on.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import tensorflow as tf

from ufl.errors import DataError
from ufl.pipeline.layout import COMPRESSION, SPLITS
from ufl.pipeline.tfrecord import shard_files


class ReadableRecords(NamedTuple):
    """The readable part of a split: ``limits`` (corrupt shard -> records before its corrupt one, for
    ``read_patches(record_limits=)``), their ``count``, the ``skipped`` records and one line per corrupt shard."""

    limits: Dict[str, int]
    count: int
    skipped: int
    problems: List[str]


class ShardScan(NamedTuple):
    """One shard read to its end or to its first unreadable record.

    Attributes:
      path: the shard file.
      readable: records read before the first unreadable one (all of them when ``error`` is None).
      error: TensorFlow's description of the first unreadable record, or None.
    """

    path: str
    readable: int
    error: Optional[str]


def scan_shard(path: str) -> ShardScan:
    """Reads every record of the shard ``path`` (GZIP TFRecords) and stops at the first unreadable one."""
    readable = 0
    try:
        for _ in tf.data.TFRecordDataset(path, compression_type=COMPRESSION):
            readable += 1
    except tf.errors.OpError as error:
        return ShardScan(path, readable, error.message.split("[Op:")[0].strip().rsplit("}}", 1)[-1].strip())
    return ShardScan(path, readable, None)


def scan_split(data_dir: str, split: str) -> List[ShardScan]:
    return [scan_shard(path) for path in shard_files(data_dir, split)]


def describe(scan: ShardScan) -> str:
    """``"DATA shard FILE is corrupt at record N (REASON)"``."""
    return f"DATA shard {scan.path} is corrupt at record {scan.readable} ({scan.error})"


def corrupt_data_error(data_dir: str, cause: Exception) -> Exception:
    """A one-line DataError naming the first corrupt shard of DATA/ and the fix; ``cause`` itself when every
    shard reads to its end (the fault was elsewhere)."""
    for split in SPLITS:
        for scan in scan_split(data_dir, split):
            if scan.error is not None:
                return DataError(f"{describe(scan)}; re-run 'ufl preprocess --out {data_dir} ...' to "
                                 "write DATA/ again, or pass --skip-corrupt-records to 'ufl train' to train on "
                                 "the records before it")
    return cause


def readable_records(data_dir: str, split: str, expected: Optional[int]) -> ReadableRecords:
    """The readable records of a split; ``skipped`` is ``expected`` (DATA/metadata's count) minus the
    readable records, at least one per corrupt shard."""
    scans = scan_split(data_dir, split)
    corrupt = [scan for scan in scans if scan.error is not None]
    limits = {scan.path: scan.readable for scan in corrupt}
    readable = sum(scan.readable for scan in scans)
    skipped = max(expected - readable, len(corrupt)) if expected is not None and corrupt else len(corrupt)
    return ReadableRecords(limits, readable, skipped, [describe(scan) for scan in corrupt])
