"""Bulk Example encoding and GZIP TFRecord framing (records.py) as TensorFlow reads them."""
import numpy as np
import tensorflow as tf

from ufl.pipeline.records import serialize_examples, write_tfrecord_gz


def reference_example(patch, source, position, label=None, source_split=None):
    """The same record built with TensorFlow's own protobuf classes."""
    feature = {
        "patch": tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(patch).astype(np.float32))),
        "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source])),
        "position": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(p) for p in position])),
    }
    if label is not None:
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    if source_split is not None:
        feature["source_split"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_split]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def test_serialized_examples_parse_like_tf_train_example():
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((5, 12)).astype(np.float32)
    sources = [b"images:/data/a.png", b"x" * 300, b"", b"b", b"b"]
    positions = np.array([[0, 0], [3, 200], [127, 128], [1 << 40, 5], [2, 2]])
    labels = np.array([0, 9, 1, 2, 300])
    for record, patch, source, position, label in zip(
            serialize_examples(patches, sources, positions, labels), patches, sources, positions, labels):
        assert tf.train.Example.FromString(record) == reference_example(patch, source, position, label)
    for record, patch, source, position in zip(
            serialize_examples(patches, sources, positions, None, b"test"), patches, sources, positions):
        assert tf.train.Example.FromString(record) == reference_example(patch, source, position, None, b"test")


def test_gzip_shard_is_read_by_tf_data(tmp_path):
    patches = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    records = serialize_examples(patches, [b"s"] * 3, np.zeros((3, 2), np.int64))
    path = str(tmp_path / "train-00000-of-00001.tfrecord.gz")
    write_tfrecord_gz(path, records)
    spec = {"patch": tf.io.FixedLenFeature([4], tf.float32), "position": tf.io.FixedLenFeature([2], tf.int64)}
    read = [tf.io.parse_single_example(r, spec)["patch"].numpy()
            for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    np.testing.assert_array_equal(np.stack(read), patches)
