"""Bulk writing of DATA/ shards without TensorFlow: tf.train.Example bytes, TFRecord framing, GZIP.

Beam workers write shards with this module so that they never import TensorFlow (seconds per worker) and
never build one protobuf object per patch. The bytes are the standard wire formats:

- ``tf.train.Example`` (features ``patch`` float list, ``source`` bytes, ``position`` int64 [row, col],
  optional ``label`` int64 and ``source_split`` bytes), encoded field by field (the only encoder of DATA/
  records: in-memory writers use it too); ``tf.train.Example.FromString`` and
  ``tf.io.parse_example`` read them (tests check both);
- TFRecord framing: ``uint64 length, masked crc32c(length), data, masked crc32c(data)``;
- one GZIP stream per shard with a zero timestamp, so the same records give byte-identical files. Float
  patches leave little for LZ77 to find: Huffman coding alone (``Z_HUFFMAN_ONLY``) compresses about 3.5x
  faster than zlib level 1 or 6, for files about 7% larger (whitened 16x16 patches: 94% of the raw bytes
  against 87%).
"""
from __future__ import annotations

import struct
import zlib
from typing import List, Optional, Sequence

import google_crc32c
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_LEN = 0x0A        # field 1, length-delimited
_LEN_2 = 0x12      # field 2, length-delimited
_LEN_3 = 0x1A      # field 3, length-delimited
_MASK_DELTA = 0xA282EAD8
_EXAMPLE_TAG = bytes((_LEN,))
_PACK_LENGTH = struct.Struct("<Q").pack
_PACK_CRC = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values take 10 bytes, as protobuf encodes them
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _map_entry(name: str, feature: bytes) -> bytes:
    """One ``Features.feature`` map entry (key, Feature) wrapped as field 1 of Features."""
    return _field(_LEN, _field(_LEN, name.encode()) + _field(_LEN_2, feature))


def _int64_feature(name: str, values: Sequence[int]) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _map_entry(name, _field(_LEN_3, _field(_LEN, packed)))


def _bytes_feature(name: str, value: bytes) -> bytes:
    return _map_entry(name, _field(_LEN, _field(_LEN, value)))


def serialize_examples(patches: np.ndarray, sources: Sequence[bytes], positions: np.ndarray,
                       labels: Optional[np.ndarray] = None, source_split: Optional[bytes] = None) -> List[bytes]:
    """Serialized ``tf.train.Example``s of the DATA/ contract, one per row.

    Args:
      patches: float32 ``(n, patch_dim)`` patches, row-major (H, W, C).
      sources: ``n`` byte strings, the uri of each patch's image.
      positions: int ``(n, 2)`` [row, col] of each patch's top-left corner.
      labels: optional int ``(n,)`` labels.
      source_split: optional split of the source the images belong to (``b"train"``, ``b"test"``), the
        same for all rows.
    Returns:
      ``n`` byte strings.
    """
    patches = np.ascontiguousarray(patches, dtype="<f4")
    count, dim = patches.shape
    float_bytes = patches.tobytes()
    width = 4 * dim
    float_list = bytes((_LEN,)) + _varint(width)
    # The patch entry has the same length for every row: build its prefix once.
    feature_len = len(float_list) + width
    feature_prefix = bytes((_LEN_2,)) + _varint(feature_len) + float_list
    value_len = len(feature_prefix) + width
    entry_body = _field(_LEN, b"patch") + bytes((_LEN_2,)) + _varint(value_len)
    patch_prefix = bytes((_LEN,)) + _varint(len(entry_body) + value_len) + entry_body + feature_prefix
    source_cache: dict = {}
    records = []
    rows, cols = np.asarray(positions, dtype=np.int64).T.tolist() if count else ([], [])
    label_list = None if labels is None else np.asarray(labels, dtype=np.int64).tolist()
    floats = memoryview(float_bytes)
    split_entry = b"" if source_split is None else _bytes_feature("source_split", source_split)
    fixed = len(patch_prefix) + width + len(split_entry)
    for index in range(count):
        source = sources[index]
        source_entry = source_cache.get(source)
        if source_entry is None:
            source_entry = source_cache.setdefault(source, _bytes_feature("source", source))
        position_entry = _int64_pair_entry(b"position", rows[index], cols[index])
        label_entry = b"" if label_list is None else _int64_feature("label", (label_list[index],))
        length = fixed + len(source_entry) + len(position_entry) + len(label_entry)
        records.append(b"".join((_EXAMPLE_TAG, _SMALL_VARINTS[length] if length < 1 << 14 else _varint(length),
                                 patch_prefix, floats[index * width:(index + 1) * width], source_entry,
                                 position_entry, label_entry, split_entry)))
    return records


#: varint bytes of small non-negative integers (pixel positions), the common case of the hot loop.
_SMALL_VARINTS = [_varint(value) for value in range(1 << 14)]


def _int64_pair_entry(name: bytes, first: int, second: int) -> bytes:
    """``_int64_feature(name, (first, second))`` without the general-purpose helpers (hot loop)."""
    if not (0 <= first < 1 << 14 and 0 <= second < 1 << 14) or len(name) > 60:
        return _int64_feature(name.decode(), (first, second))
    packed = _SMALL_VARINTS[first] + _SMALL_VARINTS[second]
    size = len(packed)  # <= 4, so every length below fits in one byte
    key = bytes((_LEN, len(name))) + name
    body = key + bytes((_LEN_2, size + 4, _LEN_3, size + 2, _LEN, size)) + packed
    return bytes((_LEN, len(body))) + body


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_records(records: Sequence[bytes]) -> bytes:
    """The TFRecord file bytes (uncompressed) of ``records``."""
    parts = []
    append = parts.append
    for record in records:
        length = _PACK_LENGTH(len(record))
        append(length)
        append(_PACK_CRC(_masked_crc(length)))
        append(record)
        append(_PACK_CRC(_masked_crc(record)))
    return b"".join(parts)


def gzip_compressor():
    """A zlib compressor writing one GZIP stream (zero timestamp) with Huffman coding only."""
    return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_HUFFMAN_ONLY)


def write_tfrecord_gz(path: str, records: Sequence[bytes]) -> int:
    """Writes ``records`` as one GZIP TFRecord file at ``path`` (any Beam filesystem); returns bytes written."""
    compressor = gzip_compressor()
    data = compressor.compress(frame_records(records)) + compressor.flush()
    handle = FileSystems.create(path, mime_type="application/octet-stream",
                                compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        handle.write(data)
    finally:
        handle.close()
    return len(data)
