"""REST API of ufl serve, called with plain HTTP (urllib) as a TF-Serving REST client would."""
import base64
import gzip
import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

import serving_testlib as lib
from ufl.export import signatures
from ufl.export.model_manager import ServingError
from ufl.export.json_tensor import format_predict_response, shortest_float32
from ufl.export.model_manager import ModelManager, single_model_config
from ufl.export.server import ModelServer


@pytest.fixture(scope="module")
def coder(tmp_path_factory):
    return lib.template(tmp_path_factory, 1.0)


@pytest.fixture(scope="module")
def url(tmp_path_factory, coder):
    base = str(tmp_path_factory.mktemp("rest") / "coder")
    lib.install_version(coder, base, 1)
    server = lib.start_server(base, rest=True, poll_wait_seconds=0, max_message_bytes=1 << 20)
    yield f"http://127.0.0.1:{server.rest_api_port}/v1/models/coder"
    server.stop()


def call(address, body=None, *, raw=None):
    """(HTTP status, decoded JSON) of a GET (no body) or POST."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(urllib.request.Request(address, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_model_status(url):
    assert call(url) == (200, {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert call(url + "/versions/1")[0] == 200


def test_metadata_lists_signature_defs(url):
    status, body = call(url + "/metadata")
    assert status == 200 and body["model_spec"] == {"name": "coder", "signature_name": "", "version": "1"}
    serving = body["metadata"]["signature_def"]["signature_def"][signatures.SERVING_DEFAULT]
    assert [dim["size"] for dim in serving["inputs"]["patches"]["tensor_shape"]["dim"]] == ["-1", str(lib.PATCH_DIM)]
    assert serving["outputs"]["codes"]["dtype"] == "DT_FLOAT"


def test_row_and_columnar_predict_equal_the_savedmodel_in_process(url, coder):
    patches = lib.patches(3)
    expected = lib.in_process(coder, signatures.SERVING_DEFAULT, patches=patches)
    status, rows = call(url + ":predict", {"instances": patches.tolist()})
    assert status == 200
    np.testing.assert_allclose(np.asarray(rows["predictions"], np.float32), expected, rtol=1e-6, atol=1e-7)
    status, columns = call(url + "/versions/1:predict", {"inputs": {"patches": patches.tolist()}})
    assert status == 200
    np.testing.assert_allclose(np.asarray(columns["outputs"], np.float32), expected, rtol=1e-6, atol=1e-7)
    status, named = call(url + ":predict", {"instances": [{"patches": row} for row in patches.tolist()]})
    assert status == 200 and np.asarray(named["predictions"]).shape == expected.shape


def test_predict_other_signature(url, coder):
    images = np.random.default_rng(4).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    status, body = call(url + ":predict", {"signature_name": signatures.ENCODE_IMAGES, "inputs": images.tolist()})
    assert status == 200
    np.testing.assert_allclose(np.asarray(body["outputs"], np.float32),
                               lib.in_process(coder, signatures.ENCODE_IMAGES, images=images), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("path, body, code, message", [
    ("/v1/models/nope:predict", {"instances": [[0.0] * 16]}, 404, r"Latest\(nope\)"),
    ("/v1/models/coder/versions/3", None, 404, "Could not find version 3 of model coder"),
    ("/v1/models/coder:predict", {"signature_name": "x", "instances": [[0.0] * 16]}, 400, "'x' not found"),
    ("/v1/models/coder:predict", {"instances": [[0.0] * 15]}, 400, r"expects shape \[\?, 16\], got \[1, 15\]"),
    ("/v1/models/coder:predict", {"instances": [[0.0] * 16, [0.0]]}, 400, "ragged list or wrong type"),
    ("/v1/models/coder:predict", {"inputs": {"pixels": [[0.0] * 16]}}, 400, r"expected \['patches'\]"),
    ("/v1/models/coder:predict", {"instances": [], "inputs": []}, 400, "exactly one of 'instances'"),
    ("/v1/models/coder:predict", [1, 2], 400, "must be an object"),
    ("/v1/models/coder:predict", "{not json", 400, "JSON Parse error"),
    ("/v1/models/coder:classify", {"instances": []}, 501, "not supported"),
    ("/v2/whatever", None, 404, "Malformed request"),
    ("/v1/models/coder:predict", {"instances": np.zeros((300, 1000)).tolist()}, 429, "larger than the limit"),
])
def test_errors_are_json_with_tf_serving_http_codes_and_server_survives(url, path, body, code, message):
    address = url.split("/v1/")[0] + path
    raw = body.encode() if isinstance(body, str) else None
    status, answer = call(address, body if raw is None else None, raw=raw)
    assert status == code and list(answer) == ["error"]
    assert re.search(message, answer["error"])
    assert call(url + ":predict", {"instances": lib.patches(1).tolist()})[0] == 200


def test_row_format_with_several_outputs_gives_one_object_per_row():
    outputs = {"codes": np.arange(4.0).reshape(2, 2), "norm": np.array([1.0, 2.0])}
    assert format_predict_response(outputs, row_format=True) == {"predictions": [
        {"codes": [0.0, 1.0], "norm": 1.0}, {"codes": [2.0, 3.0], "norm": 2.0}]}
    assert format_predict_response(outputs, row_format=False) == {"outputs": {
        "codes": [[0.0, 1.0], [2.0, 3.0]], "norm": [1.0, 2.0]}}
    with pytest.raises(ServingError, match="different batch sizes"):
        format_predict_response({"a": np.zeros((2, 1)), "b": np.zeros(3)}, row_format=True)


def post(address, raw, headers=None):
    request = urllib.request.Request(address, data=raw, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def significant_digits(token):
    mantissa = token.lower().split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) or 1


def test_float32_outputs_are_written_as_their_shortest_round_trip_text(url, coder):
    patches = lib.patches(4, seed=9)
    status, text = post(url + ":predict", json.dumps({"instances": patches.tolist()}).encode())
    assert status == 200
    tokens = re.findall(r"-?\d[\d.]*(?:e[-+]?\d+)?", text)
    served = np.asarray([float(token) for token in tokens], np.float32)
    expected = lib.in_process(coder, signatures.SERVING_DEFAULT, patches=patches).ravel()
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)
    for token, value in zip(tokens, served):
        assert np.float32(float(token)) == value
        shortest = np.format_float_scientific(value, unique=True)  # numpy's shortest round-trip digits
        assert significant_digits(token) == significant_digits(shortest), (token, shortest)
    assert json.dumps(format_predict_response({"x": np.float32([0.2, 1.0, 3e-8])}, False)) == \
        '{"outputs": [0.2, 1.0, 3e-08]}'


def test_gzip_encoded_request_bodies(url, coder):
    patches = lib.patches(2, seed=4)
    body = gzip.compress(json.dumps({"inputs": patches.tolist()}).encode())
    status, text = post(url + ":predict", body, {"Content-Encoding": "gzip"})
    assert status == 200
    np.testing.assert_allclose(np.asarray(json.loads(text)["outputs"], np.float32),
                               lib.in_process(coder, signatures.SERVING_DEFAULT, patches=patches), rtol=1e-6, atol=1e-7)
    status, text = post(url + ":predict", b"not gzip", {"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip" in json.loads(text)["error"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, coder):
    """REST of a config with two versions of 'coder', label 'stable' = 1, and the string model 'echo'."""
    root = tmp_path_factory.mktemp("labelled")
    for version in (1, 2):
        lib.install_version(coder, str(root / "coder"), version)
    lib.save_echo(str(root / "echo" / "1"))
    config = single_model_config("coder", str(root / "coder"))
    entry = config.model_config_list.config[0]
    entry.model_version_policy.all.SetInParent()
    entry.version_labels["stable"] = 1
    config.model_config_list.config.add(name="echo", base_path=str(root / "echo"), model_platform="tensorflow")
    server = ModelServer(ModelManager(config, poll_wait_seconds=0), port=0, rest_api_port=0).start()
    yield f"http://127.0.0.1:{server.rest_api_port}/v1/models"
    server.stop()


def test_versions_and_labels_routes(labelled):
    assert call(labelled + "/coder/labels/stable")[1]["model_version_status"][0]["version"] == "1"
    assert call(labelled + "/coder/versions/2/metadata")[1]["model_spec"]["version"] == "2"
    assert call(labelled + "/coder/labels/stable/metadata")[1]["model_spec"]["version"] == "1"
    body = {"instances": lib.patches(1).tolist()}
    assert call(labelled + "/coder/labels/stable:predict", body)[0] == 200
    assert call(labelled + "/coder/versions/2:predict", body)[0] == 200
    status, answer = call(labelled + "/coder/labels/canary:predict", body)
    assert status == 404 and "Label(coder, canary)" in answer["error"]


def test_b64_strings_in_and_out(labelled):
    raw = b"\x00\xffbinary"
    status, answer = call(labelled + "/echo:predict",
                          {"instances": [{"b64": base64.b64encode(raw).decode()}, "text"]})
    assert status == 200
    assert answer["predictions"] == [{"length": len(raw), "echo_bytes": {"b64": base64.b64encode(raw).decode()}},
                                     {"length": 4, "echo_bytes": {"b64": base64.b64encode(b"text").decode()}}]
    status, answer = call(labelled + "/echo:predict", {"inputs": {"text": [{"b64": "***"}]}})
    assert status == 400 and "not base64" in answer["error"]


def test_rest_api_timeout_answers_504(tmp_path, coder):
    base = str(tmp_path / "coder")
    lib.install_version(coder, base, 1)
    with lib.start_server(base, rest=True, poll_wait_seconds=0, rest_timeout_seconds=0.0) as server:
        status, answer = call(f"http://127.0.0.1:{server.rest_api_port}/v1/models/coder:predict",
                              {"instances": lib.patches(1).tolist()})
    assert status == 504 and "Deadline exceeded" in answer["error"]


def test_shortest_float32_text_round_trips_every_kind_of_float():
    bits = np.random.default_rng(0).integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([bits.view(np.float32), np.float32([0.0, -0.0, 1e-45, 3.4028235e38, -0.2, 7.0])])
    finite = values[np.isfinite(values)]
    written = json.loads(json.dumps(shortest_float32(finite).tolist()))
    np.testing.assert_array_equal(np.asarray(written, np.float32), finite)
    for value, text in zip(finite[::50], json.dumps(shortest_float32(finite[::50]).tolist())[1:-1].split(", ")):
        assert significant_digits(text) == significant_digits(np.format_float_scientific(value, unique=True))
    special = shortest_float32(np.float32([np.nan, np.inf, -np.inf]))
    assert np.isnan(special[0]) and list(special[1:]) == [np.inf, -np.inf]
