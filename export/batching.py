"""Batching of concurrent requests, as TF-Serving's ``--enable_batching`` with a BatchingParameters file.

Concurrent requests for the same model version, signature and input shapes wait in one queue; a batch
thread takes up to ``max_batch_size`` rows (waiting at most ``batch_timeout_micros`` for more after the
first), concatenates them along the batch axis, runs the signature once and hands each request its rows.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from ufl.config import ConfigError
from ufl.export.model_manager import ServableVersion, ServingError

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


class BatchQueue:
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
        """Runs batches until the queue is closed and drained (``_next_batch`` then returns [])."""
        batch = self._next_batch()
        while batch:
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
            batch = self._next_batch()

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
