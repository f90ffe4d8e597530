"""The TF-Serving gRPC API of ``ufl serve``: PredictionService, ModelService, the health service, the server.

Servicers are built on the official ``tensorflow_serving.apis`` stubs, so any TF-Serving client works
unchanged. Requests are decoded from either TensorProto form (``ufl.export.tensor_codec``) and run through
``ufl.export.predictor`` on the gRPC worker thread that went idle last (``ufl.export.worker_pool``).
Answers fill the typed fields (``float_val``, ...) as ``tensorflow_model_server`` does, or
``tensor_content`` with ``serialize_as_tensor_content`` or when the client sends ufl's
``ufl-tensor-content`` metadata.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Optional, Sequence, Tuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from ufl.config import ConfigError
from ufl.export.access_log import AccessLog
from ufl.export.batching import BatchingOptions
from ufl.export.metrics import ServingMetrics
from ufl.export.model_manager import ModelManager
from ufl.export.predictor import Predictor, Recorder, batch_rows
from ufl.export.servable import ServingError
from ufl.export.tensor_codec import TENSOR_CONTENT_METADATA, fill_tensor_proto, ndarrays_from_tensor_protos
from ufl.export.worker_pool import HotThreadPool

#: TF-Serving's gRPC message limit (ServerBuilder::SetMaxMessageSize(kint32max)).
MAX_MESSAGE_BYTES = 2 ** 31 - 1
#: Services whose health the health service reports ("" = the whole server).
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(grpc.StatusCode[error.code], error.message)


def _version(model_spec) -> Optional[int]:
    return model_spec.version.value if model_spec.HasField("version") else None


def _deadline(context: grpc.ServicerContext) -> Optional[float]:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata (others: UNIMPLEMENTED)."""

    def __init__(self, predictor: Predictor, *, tensor_content: bool = False, recorder: Optional[Recorder] = None):
        self._predictor = predictor
        self._tensor_content = tensor_content
        self._record = recorder

    def Predict(self, request, context):
        started = time.perf_counter()
        spec = request.model_spec
        servable = signature_name = rows = None
        try:
            try:
                inputs = ndarrays_from_tensor_protos(request.inputs)
            except (ValueError, TypeError) as error:
                raise ServingError("INVALID_ARGUMENT", f"input tensor could not be decoded: {error}")
            rows = batch_rows(inputs)
            servable, signature_name, outputs = self._predictor.predict(
                spec.name, _version(spec), spec.version_label, spec.signature_name, inputs,
                request.output_filter, deadline=_deadline(context), on_cancel=context.add_callback)
        except ServingError as error:
            if self._record:
                self._record(api="predict", entrypoint="GRPC", model=spec.name, servable=servable,
                             signature=signature_name, rows=rows, status=error.code, started=started)
            _abort(context, error)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        tensor_content = self._tensor_content or TENSOR_CONTENT_METADATA in context.invocation_metadata()
        for key, value in outputs.items():
            fill_tensor_proto(response.outputs[key], value, tensor_content=tensor_content)
        if self._record:
            self._record(api="predict", entrypoint="GRPC", model=spec.name, servable=servable,
                         signature=signature_name, rows=rows, status="OK", started=started)
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise ServingError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one "
                                                       "metadata_field; use 'signature_def'")
            unsupported = [field for field in fields if field != "signature_def"]
            if unsupported:
                raise ServingError("INVALID_ARGUMENT", f"Metadata field {unsupported[0]} is not supported; "
                                                       "use 'signature_def'")
            servable = self._predictor.manager.resolve(spec.name, _version(spec), spec.version_label)
        except ServingError as error:
            _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        try:
            version = _version(spec)
            if spec.version_label:
                version = self._manager.resolve(spec.name, None, spec.version_label).version
            statuses = self._manager.status(spec.name, version)
        except ServingError as error:
            _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in statuses:
            entry = response.model_version_status.add(version=version, state=state)
            entry.status.error_code = 2 if error else 0  # UNKNOWN / OK, as tensorflow.error.Code
            entry.status.error_message = error
        return response

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._manager.reload_config(request.config, source="ReloadConfigRequest")
        except ConfigError as error:
            response.status.error_code = 3  # INVALID_ARGUMENT
            response.status.error_message = str(error)
        return response


class ModelServer:
    """gRPC (and optionally REST) TF-Serving API over a ModelManager.

    Args:
      manager: the models to serve.
      host: interface to bind (loopback by default; ``0.0.0.0`` to serve other machines).
      port: gRPC TCP port (0 = any free port, None = no TCP port; the bound port is ``self.port`` after
        :meth:`bind`).
      grpc_socket_path: also (or only) serve gRPC on this Unix socket, for clients on the same machine.
      rest_api_port: REST port (0 = any free port, None = no REST API).
      batching: batch concurrent requests with these options (None = run each request on its own).
      max_threads: gRPC worker threads (concurrent requests in flight).
      max_message_bytes: largest request or response; larger requests fail with RESOURCE_EXHAUSTED.
      channel_arguments: extra gRPC server arguments, e.g. ``[("grpc.max_connection_age_ms", 2000)]``.
      tensor_content: answer in ``tensor_content`` instead of the typed fields (TF-Serving's
        ``--enable_serialization_as_tensor_content``).
      health_service: serve ``grpc.health.v1.Health`` (SERVING once every model has a version available).
      metrics_path: serve Prometheus metrics at this REST path (None = no metrics).
      access_log: one JSON line per request to this file, ``-`` for stdout (None = off).
      rest_timeout_seconds: REST requests not run by then get DEADLINE_EXCEEDED (HTTP 504).
    """

    def __init__(self, manager: ModelManager, *, host: str = "127.0.0.1", port: Optional[int] = 8500,
                 grpc_socket_path: Optional[str] = None, rest_api_port: Optional[int] = 8501,
                 batching: Optional[BatchingOptions] = None, max_threads: Optional[int] = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, channel_arguments: Sequence[Tuple[str, object]] = (),
                 tensor_content: bool = False, health_service: bool = False, metrics_path: Optional[str] = None,
                 access_log: Optional[str] = None, rest_timeout_seconds: float = 30.0):
        self.manager = manager
        self.metrics = ServingMetrics(manager.version_states) if metrics_path else None
        self._access_log = AccessLog(access_log) if access_log else None
        recorder = Recorder(self.metrics, self._access_log) if (self.metrics or self._access_log) else None
        self.predictor = Predictor(manager, batching, self.metrics)
        manager.on_unload = self.predictor.drop
        manager.metrics = self.metrics
        self.host, self.port, self.grpc_socket_path = host, port, grpc_socket_path
        self.rest_api_port = rest_api_port
        self.max_message_bytes = max_message_bytes
        self._rest_options = {"metrics_path": metrics_path, "recorder": recorder,
                              "timeout_seconds": rest_timeout_seconds}
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.so_reuseport", 0)] + list(channel_arguments)
        workers = max_threads or max(16, 4 * (os.cpu_count() or 1))
        self._workers = HotThreadPool(max_workers=workers, thread_name_prefix="ufl-grpc")
        self._grpc = grpc.server(self._workers, options=options, maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.predictor, tensor_content=tensor_content, recorder=recorder), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), self._grpc)
        self._health: Optional[health.HealthServicer] = None
        if health_service:
            self._health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
            manager.on_change = self._update_health
            self._update_health()
        self._rest = None
        self._rest_thread: Optional[threading.Thread] = None
        self._bound = self._started = self._socket_bound = False

    def _update_health(self) -> None:
        names = self.manager.model_names()
        serving = bool(names) and all(self.manager.available_versions(name) for name in names)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in HEALTH_SERVICES:
            self._health.set(service, status)

    def bind(self) -> "ModelServer":
        """Binds the gRPC and REST ports (before any model loads, so a busy port fails at once).

        Raises:
          ConfigError: a port or socket cannot be bound, or there is nothing to bind.
        """
        if self._bound:
            return self
        self._bound = True
        if self.port is None and not self.grpc_socket_path:
            raise ConfigError("no gRPC port and no gRPC socket path: give --port or --grpc_socket_path")
        address = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            self.port = self._add_port(f"{address}:{self.port}", "choose another --port or --host")
        if self.grpc_socket_path:
            self._add_port(f"unix:{os.path.abspath(self.grpc_socket_path)}",
                           "choose another --grpc_socket_path in a writable folder")
            self._socket_bound = True
        if self.rest_api_port is not None:
            from ufl.export.rest import make_rest_server
            try:
                self._rest = make_rest_server(self.host, self.rest_api_port, self.predictor,
                                              max_body_bytes=self.max_message_bytes, **self._rest_options)
            except OSError as error:
                raise ConfigError(f"cannot bind the REST API to {address}:{self.rest_api_port} "
                                  f"({error.strerror}); choose another --rest_api_port or --host")
            self.rest_api_port = self._rest.server_address[1]
        return self

    def _add_port(self, address: str, fix: str) -> int:
        try:
            bound = self._grpc.add_insecure_port(address)
        except RuntimeError as error:
            bound, reason = 0, str(error)
        else:
            reason = "in use, or not a local address"
        if not bound:
            raise ConfigError(f"cannot bind the gRPC API to {address} ({reason}); {fix}")
        return bound

    def start(self) -> "ModelServer":
        """Binds the ports, loads the models (unless the manager has), starts serving and polling.

        Calling it again does nothing.

        Raises:
          ConfigError: a port cannot be bound (before any model loads), or the config's version labels
            name versions that are not available.
        """
        if self._started:
            return self
        self.bind()
        if not self.manager.loaded:
            self.manager.load(self.manager.source)
        self._started = True
        if self._rest is not None:
            self._rest_thread = threading.Thread(target=self._rest.serve_forever, kwargs={"poll_interval": 0.2},
                                                 name="ufl-rest", daemon=True)
            self._rest_thread.start()
        self._grpc.start()
        self.manager.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Reports NOT_SERVING, stops accepting requests, lets in-flight ones finish for ``grace`` s."""
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        self._grpc.stop(grace).wait()
        self._workers.shutdown(wait=False)
        if self._rest is not None:
            if self._rest_thread is not None:
                self._rest.shutdown()
                self._rest_thread.join()
            self._rest.server_close()
            self._rest = None
        self.manager.stop()
        self.predictor.close()
        if self._access_log is not None:
            self._access_log.close()
        if self._socket_bound and os.path.exists(self.grpc_socket_path):
            os.remove(self.grpc_socket_path)

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._grpc.wait_for_termination(timeout)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
