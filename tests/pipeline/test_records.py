"""Bulk Example encoding and GZIP TFRecord framing (records.py) as TensorFlow reads them."""
import numpy as np
import tensorflow as tf

from ufl.pipeline.records import serialize_examples, write_tfrecord_gz
from ufl.pipeline.tfrecord import encode_example


def test_serialized_examples_parse_like_tf_train_example():
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((5, 12)).astype(np.float32)
    sources = [b"images:/data/a.png", b"x" * 300, b"", b"b", b"b"]
    positions = np.array([[0, 0], [3, 200], [127, 128], [1 << 40, 5], [2, 2]])
    labels = np.array([0, 9, 1, 2, 300])
    for record, patch, source, position, label in zip(
            serialize_examples(patches, sources, positions, labels), patches, sources, positions, labels):
        ours = tf.train.Example.FromString(record)
        reference = tf.train.Example.FromString(encode_example(patch, source, position, label))
        assert ours == reference


def test_gzip_shard_is_read_by_tf_data(tmp_path):
    patches = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    records = serialize_examples(patches, [b"s"] * 3, np.zeros((3, 2), np.int64))
    path = str(tmp_path / "train-00000-of-00001.tfrecord.gz")
    write_tfrecord_gz(path, records)
    spec = {"patch": tf.io.FixedLenFeature([4], tf.float32), "position": tf.io.FixedLenFeature([2], tf.int64)}
    read = [tf.io.parse_single_example(r, spec)["patch"].numpy()
            for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    np.testing.assert_array_equal(np.stack(read), patches)
