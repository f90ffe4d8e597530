"""The TF-Serving REST API of ``ufl serve`` (``--rest_api_port``, default 8501).

    GET  /v1/models/NAME[/versions/V | /labels/L]            model version status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata   signature_def of the served version
    POST /v1/models/NAME[/versions/V | /labels/L]:predict    {"instances": [...]} (row format) or
                                                             {"inputs": ...} (columnar format); the
                                                             body may be gzip-encoded
    GET  /monitoring/prometheus/metrics (or the configured path)  Prometheus text, with monitoring on

Answers and errors have TF-Serving's shapes: ``{"predictions": ...}``, ``{"outputs": ...}``,
``{"model_version_status": [...]}``, ``{"error": "..."}`` with the HTTP code TF-Serving maps each
gRPC status to (NOT_FOUND 404, INVALID_ARGUMENT 400, RESOURCE_EXHAUSTED 429, ...).
"""
from __future__ import annotations

import gzip
import http.server
import io
import json
import logging
import re
import socket
import time
import zlib
from typing import Any, Dict, Optional

from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST
from tensorflow_serving.apis import get_model_status_pb2

from ufl.export.json_tensor import format_predict_response, parse_predict_body
from ufl.export.predictor import Recorder, batch_rows
from ufl.export.servable import ServingError

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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ufl-serve"
    # Set by make_rest_server:
    predictor = None
    max_body_bytes = 0
    metrics_path: Optional[str] = None
    recorder: Optional[Recorder] = None
    timeout_seconds = 30.0

    def log_message(self, format: str, *args) -> None:
        log.debug("REST %s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Dict[str, Any]) -> None:
        self._send_bytes(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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
            if self.metrics_path is not None and self.path.split("?", 1)[0] == self.metrics_path:
                self._send_bytes(200, self.predictor.metrics.render(), CONTENT_TYPE_LATEST)
                return
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

    def _read_body(self) -> bytes:
        """The request body, gunzipped when sent with ``Content-Encoding: gzip``; at most max_body_bytes."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body_bytes:
            self._discard_body(length)
            raise ServingError("RESOURCE_EXHAUSTED", f"request body of {length} bytes is larger than the "
                                                     f"limit of {self.max_body_bytes} bytes; send smaller batches")
        raw = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").strip().lower() != "gzip":
            return raw
        try:
            body = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(self.max_body_bytes + 1)
        except (OSError, EOFError, zlib.error) as error:
            raise ServingError("INVALID_ARGUMENT", f"request body is not valid gzip: {error}")
        if len(body) > self.max_body_bytes:
            raise ServingError("RESOURCE_EXHAUSTED", f"gunzipped request body is larger than the limit of "
                                                     f"{self.max_body_bytes} bytes; send smaller batches")
        return body

    def do_POST(self) -> None:
        started, deadline = time.perf_counter(), time.monotonic() + self.timeout_seconds
        model, servable, signature_name, rows = "", None, None, None
        try:
            raw = self._read_body()
            match, version, label = self._route("POST")
            model = match["name"]
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
            servable = self.predictor.manager.resolve(model, version, label)
            inputs, row_format = parse_predict_body(body, servable.input_dtypes(signature_name))
            rows = batch_rows(inputs)
            _, signature_name, outputs = self.predictor.predict(model, servable.version, "", signature_name,
                                                                inputs, deadline=deadline)
            self._send(200, format_predict_response(outputs, row_format))
            status = "OK"
        except ServingError as error:
            self._error(error)
            status = error.code
        except Exception as error:  # a bad request must never take the server down
            log.exception("REST request failed")
            self._error(ServingError("INTERNAL", f"{type(error).__name__}: {error}"))
            status = "INTERNAL"
        if self.recorder is not None and model:
            self.recorder(api="predict", entrypoint="REST", model=model, servable=servable,
                          signature=signature_name or None, rows=rows, status=status, started=started)


def make_rest_server(host: str, port: int, predictor, *, max_body_bytes: int, metrics_path: Optional[str] = None,
                     recorder: Optional[Recorder] = None, timeout_seconds: float = 30.0) -> http.server.ThreadingHTTPServer:
    """An HTTP server (bound, not started) answering the TF-Serving REST API through ``predictor``.

    Args:
      metrics_path: serve ``predictor.metrics`` as Prometheus text at this path (None: no metrics page).
      recorder: told about each ``:predict`` request (metrics, access log).
      timeout_seconds: a request not run within this time is answered DEADLINE_EXCEEDED (HTTP 504).
    """
    handler = type("RestHandler", (_Handler,), {
        "predictor": predictor, "max_body_bytes": max_body_bytes, "metrics_path": metrics_path,
        "recorder": recorder, "timeout_seconds": timeout_seconds})
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:
        server_class = type("RestServer6", (server_class,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server
