"""gRPC API of ufl serve, called with the official tensorflow_serving.apis stubs as any TF-Serving client."""
import os
import re
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

import serving_testlib as lib
from ufl.config import ConfigError
from ufl.export import signatures
from ufl.export.batching import BatchingOptions, read_batching_parameters
from ufl.export.model_manager import (ModelManager, ServableVersion, ServingError, read_model_config_file,
                                       session_config, single_model_config)
from ufl.export.server import ModelServer
from ufl.export.tensor_codec import TENSOR_CONTENT_METADATA, tensor_proto_from_ndarray

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="module")
def coder(tmp_path_factory):
    return lib.template(tmp_path_factory, 1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory, coder):
    base = str(tmp_path_factory.mktemp("served") / "coder")
    lib.install_version(coder, base, 1)
    server = lib.start_server(base, poll_wait_seconds=0, max_message_bytes=1 << 20)
    yield server
    server.stop()


def stubs(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def request(array, name="coder", signature="", key=signatures.PATCHES_INPUT, version=None, output_filter=()):
    message = predict_pb2.PredictRequest()
    message.model_spec.name = name
    message.model_spec.signature_name = signature
    if version is not None:
        message.model_spec.version.value = version
    message.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    message.output_filter.extend(output_filter)
    return message


@pytest.mark.parametrize("signature, key, make_input", [
    (signatures.SERVING_DEFAULT, signatures.PATCHES_INPUT, lambda: lib.patches(5)),
    (signatures.RECONSTRUCT, signatures.PATCHES_INPUT, lambda: lib.patches(1, seed=3)),
    (signatures.ENCODE_IMAGES, signatures.IMAGES_INPUT,
     lambda: np.random.default_rng(2).uniform(size=(3, 8, 8, 1)).astype(np.float32)),
])
def test_predict_equals_the_savedmodel_called_in_process(server, coder, signature, key, make_input):
    inputs = make_input()
    predict, _ = stubs(server.port)
    response = predict.Predict(request(inputs, signature=signature, key=key), timeout=30)
    (output_key, served), = response.outputs.items()
    expected = lib.in_process(coder, signature, **{key: inputs})
    np.testing.assert_allclose(tf.make_ndarray(served), expected, rtol=1e-6, atol=1e-7)
    assert np.count_nonzero(expected) > 0
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("coder", 1, signature)


def test_empty_signature_name_means_serving_default_and_output_filter_is_honoured(server):
    predict, _ = stubs(server.port)
    response = predict.Predict(request(lib.patches(2), output_filter=[signatures.CODES_OUTPUT]), timeout=30)
    assert list(response.outputs) == [signatures.CODES_OUTPUT]
    assert response.model_spec.signature_name == signatures.SERVING_DEFAULT
    assert tf.make_ndarray(response.outputs[signatures.CODES_OUTPUT]).shape == (2, lib.N_CODES)


@pytest.mark.parametrize("bad_request, code, message", [
    (lambda: request(lib.patches(2), name="nope"), grpc.StatusCode.NOT_FOUND, r"Latest\(nope\)"),
    (lambda: request(lib.patches(2), version=7), grpc.StatusCode.NOT_FOUND, r"Specific\(coder, 7\)"),
    (lambda: request(lib.patches(2), signature="classify"), grpc.StatusCode.INVALID_ARGUMENT,
     r"'classify' not found .*encode_images, reconstruct, serving_default"),
    (lambda: request(lib.patches(2), key="pixels"), grpc.StatusCode.INVALID_ARGUMENT,
     r"expected \['patches'\], got \['pixels'\]"),
    (lambda: request(lib.patches(2).astype(np.float64)), grpc.StatusCode.INVALID_ARGUMENT,
     r"expects dtype float32, got float64"),
    (lambda: request(np.zeros((2, 15), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
     r"expects shape \[\?, 16\], got \[2, 15\]"),
    (lambda: request(lib.patches(2), output_filter=["features"]), grpc.StatusCode.INVALID_ARGUMENT,
     r"output_filter 'features' .* expected one of \['codes'\]"),
    (lambda: request(np.zeros((600, 1024), np.float32)), grpc.StatusCode.RESOURCE_EXHAUSTED, r"larger than max"),
])
def test_bad_request_gets_tf_serving_error_and_server_keeps_serving(server, bad_request, code, message):
    predict, _ = stubs(server.port)
    with pytest.raises(grpc.RpcError) as caught:
        predict.Predict(bad_request(), timeout=30)
    assert caught.value.code() == code
    assert re.search(message, caught.value.details() or "")
    assert predict.Predict(request(lib.patches(1)), timeout=30).outputs[signatures.CODES_OUTPUT].tensor_shape.dim


def test_corrupt_tensor_content_is_invalid_argument(server):
    predict, _ = stubs(server.port)
    message = request(lib.patches(2))
    message.inputs[signatures.PATCHES_INPUT].tensor_content = b"\0" * 10
    with pytest.raises(grpc.RpcError) as caught:
        predict.Predict(message, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10 bytes" in caught.value.details()


def test_get_model_metadata_returns_every_signature_def(server):
    predict, _ = stubs(server.port)
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = "coder"
    response = predict.GetModelMetadata(metadata_request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    serving = signature_map.signature_def[signatures.SERVING_DEFAULT]
    assert [dim.size for dim in serving.inputs[signatures.PATCHES_INPUT].tensor_shape.dim] == [-1, lib.PATCH_DIM]
    assert [dim.size for dim in serving.outputs[signatures.CODES_OUTPUT].tensor_shape.dim] == [-1, lib.N_CODES]
    assert {signatures.RECONSTRUCT, signatures.ENCODE_IMAGES} <= set(signature_map.signature_def)
    assert response.model_spec.version.value == 1
    metadata_request.metadata_field[:] = ["graph"]
    with pytest.raises(grpc.RpcError) as caught:
        predict.GetModelMetadata(metadata_request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "graph" in caught.value.details()


def test_get_model_status_reports_available_version_and_not_found(server):
    _, models = stubs(server.port)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "coder"
    (status,) = models.GetModelStatus(status_request, timeout=30).model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, AVAILABLE, 0)
    status_request.model_spec.name = "unknown"
    with pytest.raises(grpc.RpcError) as caught:
        models.GetModelStatus(status_request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_new_version_is_served_after_the_poll_and_the_old_one_unloaded(tmp_path_factory, coder):
    doubled = lib.template(tmp_path_factory, 2.0)
    base = str(tmp_path_factory.mktemp("polled") / "coder")
    lib.install_version(coder, base, 1)
    inputs = lib.patches(4)
    with lib.start_server(base, poll_wait_seconds=0.2) as server:
        predict, models = stubs(server.port)
        first = tf.make_ndarray(predict.Predict(request(inputs), timeout=30).outputs["codes"])
        lib.install_version(doubled, base, 2)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "coder"

        def states():
            return {status.version: status.state
                    for status in models.GetModelStatus(status_request, timeout=30).model_version_status}

        lib.wait_for(lambda: states() == {2: AVAILABLE, 1: END})
        response = predict.Predict(request(inputs), timeout=30)
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["codes"]),
                                   lib.in_process(doubled, "serving_default", patches=inputs), rtol=1e-6, atol=1e-7)
        assert not np.allclose(first, tf.make_ndarray(response.outputs["codes"]))
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request(inputs, version=1), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_batching_runs_concurrent_requests_together_with_the_same_answers(tmp_path, coder, monkeypatch):
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    batching_file = tmp_path / "batching.config"
    # 8 requests x 3 rows fill one batch of 24; the long timeout only bounds a stuck test.
    batching_file.write_text("max_batch_size { value: 24 }\nbatch_timeout_micros { value: 10000000 }\n"
                             "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 10 }\n")
    runs = []
    original_run = ServableVersion.run
    monkeypatch.setattr(ServableVersion, "run",
                        lambda self, name, inputs: runs.append(len(inputs["patches"])) or original_run(self, name, inputs))
    inputs = [lib.patches(3, seed=seed) for seed in range(8)]
    answers = [None] * len(inputs)
    with lib.start_server(base, poll_wait_seconds=0, batching=read_batching_parameters(str(batching_file))) as server:
        predict, _ = stubs(server.port)

        def call(index):
            answers[index] = tf.make_ndarray(predict.Predict(request(inputs[index]), timeout=30).outputs["codes"])

        threads = [threading.Thread(target=call, args=(index,)) for index in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    expected = lib.in_process(coder, "serving_default", patches=np.concatenate(inputs))
    np.testing.assert_allclose(np.concatenate(answers), expected, rtol=1e-6, atol=1e-7)
    assert runs == [3 * len(inputs)]


def test_concurrent_requests_each_run_on_their_grpc_thread_with_one_tensorflow_thread(tmp_path, coder):
    """Requests run on their gRPC threads (not queued behind a one-thread TensorFlow pool) and stay correct."""
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    manager = ModelManager(single_model_config("coder", base), poll_wait_seconds=0,
                           session_config=session_config(intra_op_threads=1, inter_op_threads=1))
    inputs = [lib.patches(2 + seed, seed=seed) for seed in range(8)]
    answers = [None] * len(inputs)
    with ModelServer(manager, port=0, rest_api_port=None) as server:
        predict, _ = stubs(server.port)
        barrier = threading.Barrier(len(inputs))

        def call(index):
            barrier.wait(timeout=30)
            for signature in (signatures.SERVING_DEFAULT, signatures.RECONSTRUCT):
                response = predict.Predict(request(inputs[index], signature=signature), timeout=30)
                answers[index] = (answers[index] or ()) + (tf.make_ndarray(next(iter(response.outputs.values()))),)

        threads = [threading.Thread(target=call, args=(index,)) for index in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    everything = np.concatenate(inputs)  # one in-process call per signature; rows agree to float rounding
    np.testing.assert_allclose(np.concatenate([codes for codes, _ in answers]),
                               lib.in_process(coder, "serving_default", patches=everything), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([reconstruction for _, reconstruction in answers]),
                               lib.in_process(coder, "reconstruct", patches=everything), rtol=1e-5, atol=1e-6)


def test_model_config_file_with_version_policy_and_labels(tmp_path_factory, coder):
    doubled = lib.template(tmp_path_factory, 2.0)
    root = tmp_path_factory.mktemp("config")
    for version, template in ((1, coder), (2, doubled)):
        lib.install_version(template, str(root / "both"), version)
    lib.install_version(coder, str(root / "latest"), 3)
    config_file = root / "models.config"
    config_file.write_text(f"""model_config_list {{
      config {{ name: "both" base_path: "{root / 'both'}" model_platform: "tensorflow"
               model_version_policy {{ all {{}} }} version_labels {{ key: "stable" value: 1 }} }}
      config {{ name: "latest" base_path: "{root / 'latest'}" model_platform: "tensorflow" }}
    }}""")
    manager = ModelManager(read_model_config_file(str(config_file)), poll_wait_seconds=0)
    assert manager.available_versions("both") == [1, 2] and manager.available_versions("latest") == [3]
    inputs = lib.patches(2)
    with ModelServer(manager, port=0, rest_api_port=None) as server:
        predict, _ = stubs(server.port)
        message = request(inputs, name="both")
        message.model_spec.version_label = "stable"
        response = predict.Predict(message, timeout=30)
        assert response.model_spec.version.value == 1
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["codes"]),
                                   lib.in_process(coder, "serving_default", patches=inputs), rtol=1e-6, atol=1e-7)
        assert predict.Predict(request(inputs, name="both"), timeout=30).model_spec.version.value == 2


def test_model_config_errors_name_the_problem(tmp_path):
    config_file = tmp_path / "models.config"
    with pytest.raises(ConfigError, match="does not exist; run 'ufl export'"):
        read_model_config_file(str(config_file))
    config_file.write_text("model_config_list { config { name: 'a' base_path: ")
    with pytest.raises(ConfigError, match="is not a ModelServerConfig text proto"):
        read_model_config_file(str(config_file))
    config_file.write_text(f"model_config_list {{ config {{ name: 'a' base_path: '{tmp_path}/missing' }} }}")
    with pytest.raises(ConfigError, match="base_path .*missing' of model 'a' is not a directory"):
        ModelManager(read_model_config_file(str(config_file)))
    config_file.write_text(f"model_config_list {{ config {{ name: 'a' base_path: '{tmp_path}' }}"
                           f" config {{ name: 'a' base_path: '{tmp_path}' }} }}")
    with pytest.raises(ConfigError, match="model name 'a' is empty or repeated"):
        ModelManager(read_model_config_file(str(config_file)))
    config_file.write_text(f"model_config_list {{ config {{ name: 'a' base_path: '{tmp_path}' "
                           "model_platform: 'pytorch' }}")
    with pytest.raises(ConfigError, match="model_platform 'pytorch'; ufl serve serves TensorFlow"):
        ModelManager(read_model_config_file(str(config_file)))
    config_file.write_text("model_config_list { }")
    with pytest.raises(ConfigError, match="model_config_list has no models"):
        ModelManager(read_model_config_file(str(config_file)))
    config_file.write_text("custom_model_config { }")
    with pytest.raises(ConfigError, match="only model_config_list is supported"):
        ModelManager(read_model_config_file(str(config_file)))


def test_warmup_requests_run_before_serving_and_a_failing_warmup_fails_the_load(tmp_path, coder):
    base = str(tmp_path / "coder")
    good = lib.install_version(coder, base, 1)
    lib.write_warmup(good, [{"patches": lib.patches(2)}, {"patches": lib.patches(1)}])
    manager = ModelManager(single_model_config("coder", base), poll_wait_seconds=0)
    assert manager.resolve("coder").warmup() == 2
    bad = lib.install_version(coder, base, 2)
    lib.write_warmup(bad, [{"pixels": lib.patches(2)}])
    manager.poll()
    version, state, error = manager.status("coder", 2)[0]
    assert state == END and "expected ['patches'], got ['pixels']" in error
    assert manager.resolve("coder").version == 1


def test_reload_config_request_swaps_the_served_models(tmp_path, coder):
    from tensorflow_serving.apis import model_management_pb2

    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    with lib.start_server(base, poll_wait_seconds=0) as server:
        predict, models = stubs(server.port)
        reload_request = model_management_pb2.ReloadConfigRequest()
        reload_request.config.CopyFrom(single_model_config("renamed", base))
        assert models.HandleReloadConfigRequest(reload_request, timeout=30).status.error_code == 0
        assert predict.Predict(request(lib.patches(1), name="renamed"), timeout=30).model_spec.version.value == 1
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request(lib.patches(1)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reload_request.config.model_config_list.config[0].base_path = str(tmp_path / "missing")
        status = models.HandleReloadConfigRequest(reload_request, timeout=30).status
        assert status.error_code == 3 and "is not a directory" in status.error_message
        assert predict.Predict(request(lib.patches(1), name="renamed"), timeout=30).outputs["codes"].tensor_shape.dim


def test_binds_loopback_only_by_default(tmp_path, coder):
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # UDP: no packet is sent, it only picks the outward interface
        outward = probe.getsockname()[0]
    except OSError:
        outward = "127.0.0.1"
    finally:
        probe.close()
    if outward.startswith("127."):
        pytest.skip("this machine has no non-loopback interface to probe")
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    with lib.start_server(base, rest=True, poll_wait_seconds=0) as server:
        for port in (server.port, server.rest_api_port):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=5).close()


def test_answers_fill_the_typed_fields_by_default_as_tensorflow_model_server(server, coder):
    inputs = lib.patches(3)
    predict, _ = stubs(server.port)
    response = predict.Predict(request(inputs), timeout=30)
    codes = response.outputs[signatures.CODES_OUTPUT]
    assert not codes.tensor_content  # a client reading float_val (Python, Java, Go) gets every value
    served = np.asarray(codes.float_val, np.float32).reshape([dim.size for dim in codes.tensor_shape.dim])
    np.testing.assert_allclose(served, lib.in_process(coder, "serving_default", patches=inputs), rtol=1e-6, atol=1e-7)
    # ufl's own client asks for tensor_content with its metadata; other clients are not affected by it.
    asked = predict.Predict(request(inputs), timeout=30, metadata=(TENSOR_CONTENT_METADATA,))
    assert asked.outputs[signatures.CODES_OUTPUT].tensor_content and not asked.outputs[signatures.CODES_OUTPUT].float_val
    np.testing.assert_array_equal(tf.make_ndarray(asked.outputs[signatures.CODES_OUTPUT]), served)


def test_inputs_in_typed_fields_are_accepted(server, coder):
    inputs = lib.patches(2, seed=5)
    message = request(inputs)
    message.inputs[signatures.PATCHES_INPUT].CopyFrom(tensor_proto_from_ndarray(inputs, tensor_content=False))
    assert message.inputs[signatures.PATCHES_INPUT].float_val
    predict, _ = stubs(server.port)
    np.testing.assert_allclose(tf.make_ndarray(predict.Predict(message, timeout=30).outputs["codes"]),
                               lib.in_process(coder, "serving_default", patches=inputs), rtol=1e-6, atol=1e-7)


def test_tensor_content_answers_over_a_unix_socket_only(tmp_path, coder):
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    socket_path = str(tmp_path / "grpc.sock")
    manager = ModelManager(single_model_config("coder", base), poll_wait_seconds=0)
    with ModelServer(manager, port=None, grpc_socket_path=socket_path, rest_api_port=None,
                     tensor_content=True) as server:
        assert server.port is None
        channel = grpc.insecure_channel(f"unix:{socket_path}")
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request(lib.patches(2)),
                                                                                       timeout=30)
        codes = response.outputs[signatures.CODES_OUTPUT]
        assert codes.tensor_content and not codes.float_val
        channel.close()
    assert not os.path.exists(socket_path)


def test_version_labels_must_name_available_versions_unless_allowed(tmp_path, coder):
    for version in (1, 2):
        lib.install_version(coder, str(tmp_path / "m"), version)
    config = single_model_config("m", str(tmp_path / "m"))
    config.model_config_list.config[0].version_labels["stable"] = 1  # the default policy serves only 2
    with pytest.raises(ConfigError, match="version label 'stable' of model 'm' names version 1, which is not "
                                          "currently available .*--allow_version_labels_for_unavailable_models"):
        ModelManager(config, poll_wait_seconds=0)
    manager = ModelManager(config, poll_wait_seconds=0, allow_version_labels_for_unavailable_models=True)
    with pytest.raises(ServingError, match=r"Specific\(m, 1\)"):
        manager.resolve("m", label="stable")
    config.model_config_list.config[0].version_labels["stable"] = 2
    manager.reload_config(config, source="test")
    assert manager.resolve("m", label="stable").version == 2


def test_specific_and_latest_version_policies(tmp_path, coder):
    for version in (1, 2, 3):
        lib.install_version(coder, str(tmp_path / "m"), version)
    config = single_model_config("m", str(tmp_path / "m"))
    policy = config.model_config_list.config[0].model_version_policy
    policy.specific.versions.extend([1, 3, 7])
    assert ModelManager(config, poll_wait_seconds=0).available_versions("m") == [1, 3]
    policy.latest.num_versions = 2
    assert ModelManager(config, poll_wait_seconds=0).available_versions("m") == [2, 3]


def test_the_config_file_is_reread_and_applied_when_it_changes(tmp_path, coder, caplog):
    lib.install_version(coder, str(tmp_path / "a"), 1)
    lib.install_version(coder, str(tmp_path / "b"), 4)
    config_file = tmp_path / "models.config"
    entry = "config {{ name: '{0}' base_path: '{1}' model_platform: 'tensorflow' }}"
    config_file.write_text(f"model_config_list {{ {entry.format('a', tmp_path / 'a')} }}")
    manager = ModelManager(read_model_config_file(str(config_file)), poll_wait_seconds=0,
                           config_file=str(config_file), config_poll_wait_seconds=0.1)
    manager.start()
    try:
        config_file.write_text("model_config_list { config { name: 'a' ")  # a half-saved edit: kept out
        lib.wait_for(lambda: "is not a ModelServerConfig text proto" in caplog.text)
        assert manager.model_names() == ["a"]
        config_file.write_text(f"model_config_list {{ {entry.format('a', tmp_path / 'a')} "
                               f"{entry.format('b', tmp_path / 'b')} }}")
        lib.wait_for(lambda: manager.available_versions("b") == [4])
        assert manager.available_versions("a") == [1]
    finally:
        manager.stop()


def test_with_batching_one_set_of_batch_threads_serves_every_model_version_and_signature(tmp_path, coder):
    for version in (1, 2):
        lib.install_version(coder, str(tmp_path / "m"), version)
    config = single_model_config("m", str(tmp_path / "m"))
    config.model_config_list.config[0].model_version_policy.all.SetInParent()
    manager = ModelManager(config, poll_wait_seconds=0)
    batching = BatchingOptions(max_batch_size=32, batch_timeout_micros=0, num_batch_threads=3)
    images = np.zeros((2, 8, 8, 1), np.float32)
    with ModelServer(manager, port=0, rest_api_port=None, batching=batching) as server:
        predict, _ = stubs(server.port)
        for version in (1, 2):
            for signature, key, inputs in ((signatures.SERVING_DEFAULT, "patches", lib.patches(2)),
                                           (signatures.RECONSTRUCT, "patches", lib.patches(3)),
                                           (signatures.ENCODE_IMAGES, "images", images)):
                predict.Predict(request(inputs, name="m", signature=signature, key=key, version=version), timeout=30)
        assert len(server.predictor._queues) == 6
        batch_threads = [thread for thread in threading.enumerate() if thread.name.startswith("ufl-batch")]
        assert len(batch_threads) == 3


def test_a_request_whose_deadline_passes_in_the_batch_queue_is_not_run(tmp_path, coder, monkeypatch):
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    runs = []
    original_run = ServableVersion.run
    monkeypatch.setattr(ServableVersion, "run", lambda self, name, inputs: runs.append(len(inputs["patches"]))
                        or original_run(self, name, inputs))
    # A batch waits 30 s for 1000 rows: only the deadline can end the wait.
    batching = BatchingOptions(max_batch_size=1000, batch_timeout_micros=30_000_000, num_batch_threads=1)
    with lib.start_server(base, poll_wait_seconds=0, batching=batching) as server:
        predict, _ = stubs(server.port)
        with pytest.raises(grpc.RpcError) as caught:
            predict.Predict(request(lib.patches(2)), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        (queue,) = server.predictor._queues.values()
        lib.wait_for(lambda: queue.queued_rows == 0, timeout=10)
        cancelled = predict.Predict.future(request(lib.patches(3)), timeout=60)
        lib.wait_for(lambda: queue.queued_rows == 3, timeout=10)
        cancelled.cancel()
        lib.wait_for(lambda: queue.queued_rows == 0, timeout=10)  # the slot is freed at once
    assert runs == []
