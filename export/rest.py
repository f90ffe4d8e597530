"""The TF-Serving REST API of ``ufl serve`` (``--rest_api_port``, default 8501).

    GET  /v1/models/NAME[/versions/V | /labels/L]            model version status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata   signature_def of the served version
    POST /v1/models/NAME[/versions/V | /labels/L]:predict    {"instances": [...]} (row format) or
                                                             {"inputs": ...} (columnar format)

Answers and errors have TF-Serving's shapes: ``{"predictions": ...}``, ``{"outputs": ...}``,
``{"model_version_status": [...]}``, ``{"error": "..."}`` with the HTTP code TF-Serving maps each
gRPC status to (NOT_FOUND 404, INVALID_ARGUMENT 400, RESOURCE_EXHAUSTED 429, ...).
"""
from __future__ import annotations

import http.server
import json
import logging
import re
import socket
from typing import Any, Dict, Tuple

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_status_pb2

from ufl.export.model_manager import ServingError

log = logging.getLogger("ufl.serve")

#: gRPC status -> HTTP status, as TF-Serving's http_server maps them.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 412, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?/?$")


def _state_name(state: int) -> str:
    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


def _to_array(value: Any, key: str, dtype: np.dtype) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise ServingError("INVALID_ARGUMENT", f"input {key!r} cannot be read as a {dtype.name} tensor "
                                               f"(ragged list or wrong type?): {error}")


def parse_predict_body(body: Dict[str, Any], input_dtypes: Dict[str, np.dtype]) -> Tuple[Dict[str, np.ndarray], bool]:
    """Reads the inputs of a ``:predict`` body; returns (inputs, row_format).

    Row format: ``instances`` is a list with one entry per example: the value of the only input, or an
    object naming every input. Columnar: ``inputs`` is the value of the only input or an object of inputs.
    """
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", "JSON request must have exactly one of 'instances' (row format) "
                                               "or 'inputs' (columnar format)")
    names = sorted(input_dtypes)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServingError("INVALID_ARGUMENT", "'instances' must be a list with one entry per example")
        if instances and all(isinstance(row, dict) for row in instances):
            keys = set(instances[0])
            if any(set(row) != keys for row in instances):
                raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs; expected "
                                                       f"{names}")
            return {key: _to_array([row[key] for row in instances], key, input_dtypes.get(key, np.float32))
                    for key in keys}, True
        if len(names) != 1:
            raise ServingError("INVALID_ARGUMENT", f"the signature has inputs {names}; send each instance as "
                                                   "an object naming them")
        return {names[0]: _to_array(instances, names[0], input_dtypes[names[0]])}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        return {key: _to_array(value, key, input_dtypes.get(key, np.float32)) for key, value in inputs.items()}, False
    if len(names) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature has inputs {names}; send 'inputs' as an object "
                                               "naming them")
    return {names[0]: _to_array(inputs, names[0], input_dtypes[names[0]])}, False


def format_predict_response(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
    """``{"predictions": ...}`` (rows) or ``{"outputs": ...}`` (columns); one output is not wrapped in a dict."""
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {key: value.tolist() for key, value in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    sizes = {value.shape[0] if value.ndim else -1 for value in outputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError("INVALID_ARGUMENT", "outputs have different batch sizes and cannot be returned as "
                                               "rows; use the columnar format ('inputs')")
    columns = {key: value.tolist() for key, value in outputs.items()}
    return {"predictions": [{key: column[row] for key, column in columns.items()} for row in range(sizes.pop())]}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ufl-serve"
    predictor = None        # set by make_rest_server
    max_body_bytes = 0

    def log_message(self, format: str, *args) -> None:
        log.debug("REST %s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _discard_body(self, length: int) -> None:
        """Reads an oversized body in chunks without keeping it, so the client gets the error answer."""
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _error(self, error: ServingError) -> None:
        self._send(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def _route(self, method: str):
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {self.path}; expected "
                                            "/v1/models/NAME[/versions/V][/metadata|:predict]")
        version = int(match["version"]) if match["version"] else None
        return match, version, match["label"] or ""

    def do_GET(self) -> None:
        try:
            match, version, label = self._route("GET")
            if match["verb"]:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: GET {self.path}; "
                                                       f":{match['verb']} needs POST")
            manager = self.predictor.manager
            if match["metadata"]:
                servable = manager.resolve(match["name"], version, label)
                signature_defs = json_format.MessageToDict(servable.signature_def_map(),
                                                           preserving_proto_field_name=True)
                self._send(200, {"model_spec": {"name": servable.name, "signature_name": "",
                                                "version": str(servable.version)},
                                 "metadata": {"signature_def": signature_defs}})
                return
            if label:
                version = manager.resolve(match["name"], None, label).version
            statuses = manager.status(match["name"], version)
            self._send(200, {"model_version_status": [
                {"version": str(number), "state": _state_name(state),
                 "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
                for number, state, error in statuses]})
        except ServingError as error:
            self._error(error)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > self.max_body_bytes:
                self._discard_body(length)
                raise ServingError("RESOURCE_EXHAUSTED", f"request body of {length} bytes is larger than the "
                                                         f"limit of {self.max_body_bytes} bytes; send smaller batches")
            raw = self.rfile.read(length)
            match, version, label = self._route("POST")
            if match["metadata"] or match["verb"] != "predict":
                if match["verb"] in ("classify", "regress"):
                    raise ServingError("UNIMPLEMENTED", f":{match['verb']} is not supported by ufl serve; "
                                                        "use :predict")
                raise ServingError("NOT_FOUND", f"Malformed request: POST {self.path}; expected "
                                                "/v1/models/NAME[/versions/V]:predict")
            try:
                body = json.loads(raw or b"null")
            except ValueError as error:
                raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {error}")
            if not isinstance(body, dict):
                raise ServingError("INVALID_ARGUMENT", "JSON request must be an object with 'instances' or "
                                                       "'inputs'")
            signature_name = body.get("signature_name", "")
            servable = self.predictor.manager.resolve(match["name"], version, label)
            inputs, row_format = parse_predict_body(body, servable.input_dtypes(signature_name))
            _, _, outputs = self.predictor.predict(match["name"], servable.version, "", signature_name, inputs)
            self._send(200, format_predict_response(outputs, row_format))
        except ServingError as error:
            self._error(error)
        except Exception as error:  # a bad request must never take the server down
            log.exception("REST request failed")
            self._error(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))


def make_rest_server(host: str, port: int, predictor, *, max_body_bytes: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not started) answering the TF-Serving REST API through ``predictor``."""
    handler = type("RestHandler", (_Handler,), {"predictor": predictor, "max_body_bytes": max_body_bytes})
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:
        server_class = type("RestServer6", (server_class,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server
