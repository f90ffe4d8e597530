"""ufl.export.client: predict and wait_until_available against ufl serve, and the TensorProto converters."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

import serving_testlib as lib
from ufl.export import client, signatures


@pytest.fixture(scope="module")
def coder(tmp_path_factory):
    return lib.template(tmp_path_factory, 1.0)


@pytest.fixture(scope="module")
def target(tmp_path_factory, coder):
    base = str(tmp_path_factory.mktemp("client") / "coder")
    lib.install_version(coder, base, 1)
    server = lib.start_server(base, poll_wait_seconds=0)
    yield f"127.0.0.1:{server.port}"
    server.stop()
    client.close_channels()


def test_predict_returns_the_default_output_of_each_signature(target, coder):
    patches = lib.patches(6)
    np.testing.assert_allclose(client.predict(target, "coder", patches),
                               lib.in_process(coder, signatures.SERVING_DEFAULT, patches=patches), rtol=1e-6, atol=1e-7)
    reconstruction = client.predict(target, "coder", patches, signature_name=signatures.RECONSTRUCT, version=1)
    assert reconstruction.shape == patches.shape
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    features = client.predict(target, "coder", images, signature_name=signatures.ENCODE_IMAGES,
                              input_key=signatures.IMAGES_INPUT, output_key=signatures.FEATURES_OUTPUT)
    np.testing.assert_allclose(features, lib.in_process(coder, signatures.ENCODE_IMAGES, images=images),
                               rtol=1e-6, atol=1e-7)


def test_predict_raises_the_servers_status(target):
    with pytest.raises(grpc.RpcError) as caught:
        client.predict(target, "coder", lib.patches(1), version=9)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        client.predict(target, "coder", lib.patches(1), signature_name=signatures.RECONSTRUCT, output_key="codes")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reconstruction" in caught.value.details()


def test_wait_until_available(target):
    assert client.wait_until_available(target, "coder", timeout=10) == 1
    with pytest.raises(TimeoutError, match="model 'other' is not available .*NOT_FOUND"):
        client.wait_until_available(target, "other", timeout=2)


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[1.5, -2.0]], np.float64),
    np.arange(6, dtype=np.int64).reshape(2, 3, 1), np.array([True, False]), np.zeros((0, 16), np.float32),
    np.array(3.25, np.float32), np.array([b"ab", b"c"], dtype=object),
])
def test_tensor_proto_round_trip_agrees_with_tensorflow(array):
    proto = client.tensor_proto_from_ndarray(array)
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    np.testing.assert_array_equal(client.ndarray_from_tensor_proto(tf.make_tensor_proto(array)), array)
    assert client.ndarray_from_tensor_proto(proto).dtype == array.dtype


def test_value_list_protos_and_corrupt_content():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0, 4.0])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    np.testing.assert_array_equal(client.ndarray_from_tensor_proto(proto), [[1.0, 2.0], [3.0, 4.0]])
    corrupt = client.tensor_proto_from_ndarray(np.zeros((2, 3), np.float32))
    corrupt.tensor_content = corrupt.tensor_content[:-4]
    with pytest.raises(ValueError, match=r"has 20 bytes but dtype float32 and shape \[2, 3\] need 24"):
        client.ndarray_from_tensor_proto(corrupt)
