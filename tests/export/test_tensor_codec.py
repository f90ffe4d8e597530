"""ufl.export.tensor_codec: both TensorProto forms (tensor_content and typed fields) agree with TensorFlow."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from ufl.export.tensor_codec import ndarray_from_tensor_proto, tensor_proto_from_ndarray

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7, np.array([[1.5, -2.0]], np.float64),
    np.arange(6, dtype=np.int64).reshape(2, 3, 1) - 3, np.array([True, False]), np.zeros((0, 16), np.float32),
    np.array(3.25, np.float32), np.array([b"ab", b"c"], dtype=object), np.array([-1, 2], np.int8),
    np.array([1, 65535], np.uint16), np.array([1.5, -2.25], np.float16), np.array([1 + 2j, 3], np.complex64),
    np.array([1 - 2j, 3], np.complex128), np.array([7, 2 ** 40], np.uint64), np.array([7, 2 ** 31], np.uint32),
    np.array([1, -2 ** 31], np.int32), np.array([1, 200], np.uint8), np.array([-300, 2], np.int16),
]


@pytest.mark.parametrize("tensor_content", [True, False], ids=["tensor_content", "typed"])
@pytest.mark.parametrize("array", ARRAYS, ids=[f"{a.dtype}{list(a.shape)}" for a in ARRAYS])
def test_round_trip_agrees_with_tensorflow_in_both_forms(array, tensor_content):
    proto = tensor_proto_from_ndarray(array, tensor_content=tensor_content)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    decoded = ndarray_from_tensor_proto(proto)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    if array.dtype != object and array.size:
        assert bool(proto.tensor_content) == tensor_content
    np.testing.assert_array_equal(ndarray_from_tensor_proto(tf.make_tensor_proto(array)), array)


def test_typed_float_fields_are_what_a_client_reads_as_float_val():
    codes = np.array([[0.2, -1.5], [3.0, 1e-8]], np.float32)
    proto = tensor_proto_from_ndarray(codes, tensor_content=False)
    assert list(proto.float_val) == codes.ravel().tolist() and not proto.tensor_content
    assert [dim.size for dim in proto.tensor_shape.dim] == [2, 2] and proto.dtype == types_pb2.DT_FLOAT


def test_short_value_lists_are_padded_with_the_last_value_as_tensorflow_does():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    np.testing.assert_array_equal(ndarray_from_tensor_proto(proto), tf.make_ndarray(proto))
    np.testing.assert_array_equal(ndarray_from_tensor_proto(proto), [[1.0, 2.0], [2.0, 2.0]])
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    empty.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(ndarray_from_tensor_proto(empty), [0, 0, 0])


def test_corrupt_content_and_unsupported_dtypes_are_value_errors():
    corrupt = tensor_proto_from_ndarray(np.zeros((2, 3), np.float32))
    corrupt.tensor_content = corrupt.tensor_content[:-4]
    with pytest.raises(ValueError, match=r"has 20 bytes but dtype float32 and shape \[2, 3\] need 24"):
        ndarray_from_tensor_proto(corrupt)
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0])
    too_many.tensor_shape.dim.add(size=2)
    with pytest.raises(ValueError, match=r"float_val has 3 values but shape \[2\] holds 2"):
        ndarray_from_tensor_proto(too_many)
    with pytest.raises(ValueError, match="DT_RESOURCE is not supported"):
        ndarray_from_tensor_proto(tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE))
    with pytest.raises(ValueError, match="cannot be sent as a TensorProto"):
        tensor_proto_from_ndarray(np.array(["2020-01-01"], "datetime64[D]"))
