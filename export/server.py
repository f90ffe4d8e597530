"""The TF-Serving gRPC API of ``ufl serve``: PredictionService, ModelService, request batching, the server.

Servicers are built on the official ``tensorflow_serving.apis`` stubs, so any TF-Serving client works
unchanged. Requests are decoded straight from ``tensor_content`` bytes and run through the SavedModel's
signature functions (traced at export, never retraced); with ``enable_batching`` concurrent requests to
the same model version and signature are concatenated along the batch axis and run once, as TF-Serving's
``--enable_batching`` does with a ``BatchingParameters`` file.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from ufl.config import ConfigError
from ufl.export.client import MAX_MESSAGE_BYTES, fill_tensor_proto, ndarray_from_tensor_proto
from ufl.export.model_manager import ModelManager, ServableVersion, ServingError

log = logging.getLogger("ufl.serve")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF-Serving's ``BatchingParameters`` (the fields ufl serve honours; defaults as TF-Serving's)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: Tuple[int, ...] = ()


def _batching_parameters_message():
    """A message class with BatchingParameters' schema (its proto is not shipped by tensorflow-serving-api)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="ufl/batching_parameters.proto", package="tensorflow.serving",
                                              dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    wrapped = [("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
               ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
               ("thread_pool_name", 5, "StringValue"), ("max_execution_batch_size", 9, "Int64Value")]
    for name, number, type_name in wrapped:
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{type_name}")
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    for name, number in (("pad_variable_length_inputs", 7), ("enable_large_batch_splitting", 8)):
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL, type=field.TYPE_BOOL)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def read_batching_parameters(path: Optional[str]) -> BatchingOptions:
    """Reads a ``BatchingParameters`` text proto (``--batching_parameters_file``); None gives the defaults."""
    if not path:
        return BatchingOptions()
    if not os.path.exists(path):
        raise ConfigError(f"batching_parameters_file {path!r} does not exist; 'ufl export' writes "
                          "MODELS/batching.config, or omit the flag for TF-Serving's defaults")
    proto = _batching_parameters_message()()
    with open(path, encoding="utf-8") as handle:
        try:
            text_format.Parse(handle.read(), proto, allow_unknown_field=True)
        except text_format.ParseError as error:
            raise ConfigError(f"batching_parameters_file {path!r} is not a BatchingParameters text proto: {error}")
    defaults = BatchingOptions()
    values = {name: getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)
              for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")}
    options = BatchingOptions(**values, allowed_batch_sizes=tuple(sorted(proto.allowed_batch_sizes)))
    if min(options.max_batch_size, options.max_enqueued_batches, options.num_batch_threads) <= 0:
        raise ConfigError(f"batching_parameters_file {path!r}: max_batch_size, max_enqueued_batches and "
                          f"num_batch_threads must be positive, got {options}")
    if options.allowed_batch_sizes and options.allowed_batch_sizes[-1] != options.max_batch_size:
        raise ConfigError(f"batching_parameters_file {path!r}: the largest allowed_batch_sizes "
                          f"{options.allowed_batch_sizes[-1]} must equal max_batch_size {options.max_batch_size}")
    return options


class _Task:
    __slots__ = ("inputs", "rows", "enqueued", "done", "result", "error")

    def __init__(self, inputs: Dict[str, np.ndarray], rows: int):
        self.inputs, self.rows, self.enqueued = inputs, rows, time.monotonic()
        self.done = threading.Event()
        self.result: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[ServingError] = None


class _BatchQueue:
    """Concatenates concurrent requests for one servable signature and runs them as one batch."""

    def __init__(self, servable: ServableVersion, signature_name: str, options: BatchingOptions):
        self._servable, self._signature_name, self._options = servable, signature_name, options
        self._tasks: collections.deque = collections.deque()
        self._queued_rows = 0
        self._closed = False
        self._condition = threading.Condition()
        self._threads = [threading.Thread(target=self._work, name=f"ufl-batch-{servable.name}", daemon=True)
                         for _ in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Dict[str, np.ndarray], rows: int) -> Dict[str, np.ndarray]:
        task = _Task(inputs, rows)
        limit = self._options.max_enqueued_batches * self._options.max_batch_size
        with self._condition:
            if self._closed:
                raise ServingError("UNAVAILABLE", f"model {self._servable.name!r} version "
                                                  f"{self._servable.version} is being unloaded; retry")
            if self._queued_rows + rows > limit:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted "
                                                  f"is full ({self._queued_rows} rows queued); retry later")
            self._tasks.append(task)
            self._queued_rows += rows
            self._condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _next_batch(self) -> List[_Task]:
        """Waits for tasks, then for a full batch or the batch timeout; empty list when closed."""
        options = self._options
        with self._condition:
            while not self._tasks and not self._closed:
                self._condition.wait()
            if not self._tasks:
                return []
            deadline = self._tasks[0].enqueued + options.batch_timeout_micros / 1e6
            while self._tasks and self._queued_rows < options.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            batch, rows = [], 0
            while self._tasks and rows + self._tasks[0].rows <= options.max_batch_size:
                task = self._tasks.popleft()
                batch.append(task)
                rows += task.rows
            self._queued_rows -= rows
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                self._run(batch)
            except ServingError as error:
                for task in batch:
                    task.error = error
            except Exception as error:  # never leave a client waiting
                log.exception("batched request failed")
                for task in batch:
                    task.error = ServingError("INTERNAL", f"batched request failed: {error}")
            for task in batch:
                task.done.set()

    def _run(self, batch: List[_Task]) -> None:
        if len(batch) == 1 and not self._options.allowed_batch_sizes:
            batch[0].result = self._servable.run(self._signature_name, batch[0].inputs)
            return
        rows = sum(task.rows for task in batch)
        padded = next((size for size in self._options.allowed_batch_sizes if size >= rows), rows)
        merged = {}
        for key in batch[0].inputs:
            parts = [task.inputs[key] for task in batch]
            if padded > rows:  # pad with copies of the first row, as TF-Serving does
                parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
            merged[key] = np.concatenate(parts)
        results = self._servable.run(self._signature_name, merged)
        start = 0
        for task in batch:
            task.result = {key: value[start:start + task.rows] for key, value in results.items()}
            start += task.rows


class Predictor:
    """Resolves the servable, validates the request and runs it (through a batch queue when batching)."""

    def __init__(self, manager: ModelManager, batching: Optional[BatchingOptions] = None):
        self.manager = manager
        self.batching = batching
        self._queues: Dict[tuple, _BatchQueue] = {}
        self._lock = threading.Lock()

    def predict(self, name: str, version: Optional[int], label: str, signature_name: str,
                inputs: Dict[str, np.ndarray], output_filter: Sequence[str] = ()
                ) -> Tuple[ServableVersion, str, Dict[str, np.ndarray]]:
        """Returns (servable, signature name, outputs); raises ServingError like TF-Serving."""
        servable = self.manager.resolve(name, version, label)
        signature_name, outputs = servable.validate(inputs, signature_name, output_filter)
        rows = {value.shape[0] if value.ndim else -1 for value in inputs.values()}
        if self.batching is None or len(rows) != 1 or not 0 < min(rows) <= self.batching.max_batch_size:
            results = servable.run(signature_name, inputs)
        else:
            results = self._queue(servable, signature_name, inputs).submit(inputs, rows.pop())
        return servable, signature_name, {key: results[key] for key in outputs}

    def _queue(self, servable: ServableVersion, signature_name: str, inputs: Dict[str, np.ndarray]) -> _BatchQueue:
        key = (id(servable), signature_name,
               tuple(sorted((name, value.dtype.str, value.shape[1:]) for name, value in inputs.items())))
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _BatchQueue(servable, signature_name, self.batching)
            return queue

    def drop(self, servable: ServableVersion) -> None:
        """Closes the batch queues of an unloaded version."""
        with self._lock:
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
        self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                                        thread_name_prefix="ufl-grpc"),
                                 options=options, maximum_concurrent_rpcs=None)
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
