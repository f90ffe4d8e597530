"""Running ufl serve as an operator does: the standard gRPC health service, Prometheus metrics, the access
log, and faults of the model folders while requests flow."""
import json
import logging
import os
import shutil
import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

import serving_testlib as lib
from ufl.export import signatures
from ufl.export.batching import BatchingOptions
from ufl.export.tensor_codec import fill_tensor_proto

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
METRICS_PATH = "/monitoring/prometheus/metrics"


def predict_request(rows, name="coder", seed=0):
    message = predict_pb2.PredictRequest()
    message.model_spec.name = name
    fill_tensor_proto(message.inputs[signatures.PATCHES_INPUT], lib.patches(rows, seed=seed))
    return message


def health_status(port, service=""):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=10).status


@pytest.fixture(scope="module")
def operated(tmp_path_factory):
    """A server with health, metrics, batching and an access log, after known traffic."""
    root = tmp_path_factory.mktemp("operated")
    base = str(root / "coder")
    lib.install_version(lib.template(tmp_path_factory), base, 1)
    access_log = root / "access.jsonl"
    server = lib.start_server(base, rest=True, poll_wait_seconds=0, health_service=True, metrics_path=METRICS_PATH,
                              access_log=str(access_log),
                              batching=BatchingOptions(max_batch_size=64, batch_timeout_micros=0, num_batch_threads=1))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for rows in (1, 2, 3):
            stub.Predict(predict_request(rows), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request(1, name="nope"), timeout=30)
    for rows in (4, 5):
        body = json.dumps({"instances": lib.patches(rows).tolist()}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{server.rest_api_port}/v1/models/coder:predict", data=body), timeout=30).close()
    yield server, access_log, base
    server.stop()


def metric_samples(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_api_port}{METRICS_PATH}", timeout=30) as response:
        text = response.read().decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families, name, suffix="", **labels):
    matches = [sample.value for sample in families[name].samples
               if sample.name in (name + suffix, name + "_total") and labels.items() <= sample.labels.items()]
    return sum(matches)


def test_health_is_serving_with_every_model_available(operated):
    server, _, _ = operated
    for service in ("", "tensorflow.serving.PredictionService"):
        assert health_status(server.port, service) == SERVING


def test_health_is_not_serving_until_every_model_has_a_version_and_while_shutting_down(tmp_path, tmp_path_factory):
    base = str(tmp_path / "coder")
    os.makedirs(base)
    server = lib.start_server(base, poll_wait_seconds=0.1, health_service=True)
    try:
        assert health_status(server.port) == NOT_SERVING  # no version exported yet
        lib.install_version(lib.template(tmp_path_factory), base, 1)
        lib.wait_for(lambda: health_status(server.port) == SERVING)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == SERVING
    finally:
        server.stop(grace=1.0)
    assert next(watch).status == NOT_SERVING  # what the probe sees when shutdown begins
    channel.close()


def test_prometheus_page_counts_the_known_traffic_under_tf_serving_names(operated):
    server, _, base = operated
    families = metric_samples(server)
    count = ":tensorflow:serving:request_count"
    assert sample_value(families, count, model_name="coder", status="OK") == 5
    assert sample_value(families, count, model_name="nope", status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency"
    assert sample_value(families, latency, "_count", model_name="coder", API="predict", entrypoint="GRPC") == 3
    assert sample_value(families, latency, "_count", model_name="coder", API="predict", entrypoint="REST") == 2
    assert sample_value(families, ":tensorflow:serving:runtime_latency", "_count", model_name="coder") == 5
    batch_size = ":tensorflow:serving:batching_session:input_batch_size"
    assert sample_value(families, batch_size, "_sum", model_name="coder") == 1 + 2 + 3 + 4 + 5
    assert sample_value(families, ":tensorflow:serving:batching_session:queuing_latency", "_count") == 5
    version_path = os.path.join(base, "1")
    assert sample_value(families, ":tensorflow:cc:saved_model:load_attempt_count", model_path=version_path,
                        status="success") == 1
    assert sample_value(families, ":tensorflow:cc:saved_model:load_latency", model_path=version_path) > 0
    assert sample_value(families, ":ufl:serving:model_version_state", model_name="coder", version="1",
                        state="AVAILABLE") == 1


def test_access_log_has_one_json_line_per_request(operated):
    _, access_log, _ = operated
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [(line["entrypoint"], line["model"], line["version"], line["rows"], line["status"]) for line in lines] == [
        ("GRPC", "coder", 1, 1, "OK"), ("GRPC", "coder", 1, 2, "OK"), ("GRPC", "coder", 1, 3, "OK"),
        ("GRPC", "nope", None, 1, "NOT_FOUND"), ("REST", "coder", 1, 4, "OK"), ("REST", "coder", 1, 5, "OK")]
    assert all(line["ms"] > 0 and line["time"].endswith("Z") for line in lines)
    assert lines[0]["signature"] == signatures.SERVING_DEFAULT


def test_faults_in_the_model_folder_never_fail_a_request(tmp_path, tmp_path_factory, caplog):
    """Corrupt, half-written, new good and deleted versions while a client sends requests without pause."""
    template = lib.template(tmp_path_factory)
    doubled = lib.template(tmp_path_factory, 2.0)
    base = str(tmp_path / "coder")
    lib.install_version(template, base, 1)
    server = lib.start_server(base, poll_wait_seconds=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    stop, failures, versions = threading.Event(), [], []

    def client():
        while not stop.is_set():
            try:
                versions.append(stub.Predict(predict_request(2), timeout=30).model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    def states():
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "coder"
        return {status.version: (status.state, status.status.error_message)
                for status in models.GetModelStatus(request, timeout=30).model_version_status}

    worker = threading.Thread(target=client)
    worker.start()
    try:
        corrupt = os.path.join(base, "2")
        os.makedirs(corrupt)
        with open(os.path.join(corrupt, "saved_model.pb"), "wb") as handle:
            handle.write(b"this is not a SavedModel")
        lib.wait_for(lambda: states().get(2, (0, ""))[1] != "")
        half_written = os.path.join(base, "3")
        shutil.copytree(template, half_written)
        with open(os.path.join(half_written, "saved_model.pb"), "r+b") as handle:
            handle.truncate(100)
        lib.wait_for(lambda: states().get(3, (0, ""))[1] != "")
        assert states()[1][0] == AVAILABLE
        lib.install_version(doubled, base, 4)
        lib.wait_for(lambda: states().get(4, (0, ""))[0] == AVAILABLE and 4 in versions[-3:])
        shutil.rmtree(os.path.join(base, "4"))  # the newest version deleted: keep answering from memory
        count = len(versions)
        lib.wait_for(lambda: len(versions) > count + 20)
    finally:
        stop.set()
        worker.join(30)
        server.stop()
        channel.close()
    assert failures == []
    assert set(versions) == {1, 4} and versions[-1] == 4
    assert "loading model coder version 2" in caplog.text and "Traceback" not in caplog.text


def test_a_vanished_base_path_is_said_once_and_the_loaded_version_keeps_serving(tmp_path, tmp_path_factory, caplog):
    base = str(tmp_path / "coder")
    lib.install_version(lib.template(tmp_path_factory), base, 1)
    server = lib.start_server(base, poll_wait_seconds=0.05)
    moved = str(tmp_path / "moved")
    try:
        with caplog.at_level(logging.INFO, logger="ufl.serve"):
            os.rename(base, moved)
            lib.wait_for(lambda: "Could not find base path" in caplog.text)
            polls = server.manager  # let several more polls pass
            lib.wait_for(lambda: caplog.text.count("Could not find base path") == 1 and polls.available_versions("coder"))
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request(1),
                                                                                              timeout=30)
            assert response.model_spec.version.value == 1
            os.rename(moved, base)
            lib.wait_for(lambda: "is back" in caplog.text)
    finally:
        server.stop()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert f"Could not find base path {base} for servable coder; still serving versions [1]" in errors[0].getMessage()
