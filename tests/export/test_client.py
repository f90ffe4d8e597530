"""ufl.export.client: predict and wait_until_available against ufl serve."""
import grpc
import numpy as np
import pytest

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
