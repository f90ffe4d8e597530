"""The TF-Serving gRPC API of ``ufl serve``: PredictionService, ModelService, request batching, the server.

Servicers are built on the official ``tensorflow_serving.apis`` stubs, so any TF-Serving client works
unchanged. Requests are decoded straight from ``tensor_content`` bytes and run through the served version's
TensorFlow session (``ufl.export.model_manager``) on the gRPC worker thread that went idle last
(``ufl.export.worker_pool``); with ``enable_batching`` concurrent requests are batched by
``ufl.export.batching``.
"""
from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Dict, Optional, Sequence, Tuple

import grpc
import numpy as np
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from ufl.config import ConfigError
from ufl.export.client import MAX_MESSAGE_BYTES, fill_tensor_proto, ndarray_from_tensor_proto
from ufl.export.batching import BatchingOptions, BatchQueue
from ufl.export.model_manager import ModelManager, ServableVersion, ServingError
from ufl.export.worker_pool import HotThreadPool

log = logging.getLogger("ufl.serve")


class Predictor:
    """Resolves the servable, validates the request and runs it (through a batch queue when batching)."""

    def __init__(self, manager: ModelManager, batching: Optional[BatchingOptions] = None):
        self.manager = manager
        self.batching = batching
        self._queues: Dict[tuple, BatchQueue] = {}
        self._unloaded: "weakref.WeakSet[ServableVersion]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def predict(self, name: str, version: Optional[int], label: str, signature_name: str,
                inputs: Dict[str, np.ndarray], output_filter: Sequence[str] = ()
                ) -> Tuple[ServableVersion, str, Dict[str, np.ndarray]]:
        """Returns (servable, signature name, outputs); raises ServingError like TF-Serving."""
        servable = self.manager.resolve(name, version, label)
        signature_name, outputs = servable.validate(inputs, signature_name, output_filter)
        rows = {value.shape[0] if value.ndim else -1 for value in inputs.values()}
        queue = None
        if self.batching is not None and len(rows) == 1 and 0 < min(rows) <= self.batching.max_batch_size:
            queue = self._queue(servable, signature_name, inputs)
        if queue is None:
            results = servable.run(signature_name, inputs)
        else:
            results = queue.submit(inputs, rows.pop())
        return servable, signature_name, {key: results[key] for key in outputs}

    def _queue(self, servable: ServableVersion, signature_name: str,
               inputs: Dict[str, np.ndarray]) -> Optional[BatchQueue]:
        """The batch queue for these inputs; None for a version unloaded since the request resolved it."""
        key = (id(servable), signature_name,
               tuple(sorted((name, value.dtype.str, value.shape[1:]) for name, value in inputs.items())))
        with self._lock:
            if servable in self._unloaded:
                return None
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = BatchQueue(servable, signature_name, self.batching)
            return queue

    def drop(self, servable: ServableVersion) -> None:
        """Closes the batch queues of an unloaded version."""
        with self._lock:
            self._unloaded.add(servable)
            for key in [key for key in self._queues if key[0] == id(servable)]:
                self._queues.pop(key).close()

    def close(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.close()
            self._queues.clear()


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(grpc.StatusCode[error.code], error.message)


def _version(model_spec) -> Optional[int]:
    return model_spec.version.value if model_spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata (others: UNIMPLEMENTED)."""

    def __init__(self, predictor: Predictor):
        self._predictor = predictor

    def Predict(self, request, context):
        spec = request.model_spec
        try:
            try:
                inputs = {key: ndarray_from_tensor_proto(value) for key, value in request.inputs.items()}
            except (ValueError, TypeError) as error:
                raise ServingError("INVALID_ARGUMENT", f"input tensor could not be decoded: {error}")
            servable, signature_name, outputs = self._predictor.predict(
                spec.name, _version(spec), spec.version_label, spec.signature_name, inputs,
                list(request.output_filter))
        except ServingError as error:
            _abort(context, error)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key, value in outputs.items():
            fill_tensor_proto(response.outputs[key], value)
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
      port: gRPC port (0 = any free port; the bound port is ``self.port`` after :meth:`start`).
      rest_api_port: REST port (0 = any free port, None = no REST API).
      batching: batch concurrent requests with these options (None = run each request on its own).
      max_threads: gRPC worker threads (concurrent requests in flight).
      max_message_bytes: largest request or response; larger requests fail with RESOURCE_EXHAUSTED.
      channel_arguments: extra gRPC server arguments, e.g. ``[("grpc.max_connection_age_ms", 2000)]``.
    """

    def __init__(self, manager: ModelManager, *, host: str = "127.0.0.1", port: int = 8500,
                 rest_api_port: Optional[int] = 8501, batching: Optional[BatchingOptions] = None,
                 max_threads: Optional[int] = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 channel_arguments: Sequence[Tuple[str, object]] = ()):
        self.manager = manager
        self.predictor = Predictor(manager, batching)
        manager.on_unload = self.predictor.drop
        self.host = host
        self.port = port
        self.rest_api_port = rest_api_port
        self.max_message_bytes = max_message_bytes
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.so_reuseport", 0)] + list(channel_arguments)
        workers = max_threads or max(16, 4 * (os.cpu_count() or 1))
        self._workers = HotThreadPool(max_workers=workers, thread_name_prefix="ufl-grpc")
        self._grpc = grpc.server(self._workers, options=options, maximum_concurrent_rpcs=None)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(self.predictor),
                                                                           self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), self._grpc)
        self._rest = None
        self._rest_thread: Optional[threading.Thread] = None
        self._started = False

    def start(self) -> "ModelServer":
        """Binds the ports and starts serving (and polling); calling it again does nothing."""
        if self._started:
            return self
        self._started = True
        address = f"[{self.host}]" if ":" in self.host else self.host
        try:
            bound = self._grpc.add_insecure_port(f"{address}:{self.port}")
        except RuntimeError as error:
            bound, reason = 0, error
        else:
            reason = "the port is in use or the host is not a local address"
        if not bound:
            raise ConfigError(f"cannot bind the gRPC API to {address}:{self.port} ({reason}); choose another "
                              "--port (0 = any free port) or --host")
        self.port = bound
        if self.rest_api_port is not None:
            from ufl.export.rest import make_rest_server
            self._rest = make_rest_server(self.host, self.rest_api_port, self.predictor,
                                          max_body_bytes=self.max_message_bytes)
            self.rest_api_port = self._rest.server_address[1]
            self._rest_thread = threading.Thread(target=self._rest.serve_forever, kwargs={"poll_interval": 0.2},
                                                 name="ufl-rest", daemon=True)
            self._rest_thread.start()
        self._grpc.start()
        self.manager.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stops accepting requests, lets in-flight ones finish for ``grace`` seconds, stops polling."""
        self._grpc.stop(grace).wait()
        self._workers.shutdown(wait=False)
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest_thread.join()
            self._rest = None
        self.manager.stop()
        self.predictor.close()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._grpc.wait_for_termination(timeout)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
