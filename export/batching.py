"""Batching of concurrent requests, as TF-Serving's ``--enable_batching`` with a BatchingParameters file.

Concurrent requests for the same model version, signature and input shapes wait in one queue
(:class:`BatchQueue`); one :class:`SharedBatchScheduler` per server owns ``num_batch_threads`` threads that
serve every queue in turn, as TF-Serving's shared batch scheduler does, so the thread count does not grow
with the number of models, versions, signatures or input shapes. A batch is formed once a queue holds
``max_batch_size`` rows or its oldest request has waited ``batch_timeout_micros``; its requests are
concatenated along the batch axis, run once, and each request gets its rows. A request whose deadline has
passed, or whose client has gone, while it waited is not run: it leaves the queue and frees its rows.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from ufl.config import ConfigError
from ufl.export.servable import ServableVersion, ServingError

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
    __slots__ = ("inputs", "rows", "enqueued", "deadline", "done", "result", "error")

    def __init__(self, inputs: Dict[str, np.ndarray], rows: int, deadline: Optional[float]):
        self.inputs, self.rows, self.deadline = inputs, rows, deadline
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.result: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[ServingError] = None

    def fail(self, error: ServingError) -> None:
        self.error = error
        self.done.set()


_DEADLINE_EXCEEDED = ServingError("DEADLINE_EXCEEDED", "Deadline exceeded while the request waited for its batch")
_CANCELLED = ServingError("CANCELLED", "the request was cancelled by its client while it waited for its batch")


class BatchQueue:
    """The waiting requests of one servable signature and input shape; run by a SharedBatchScheduler."""

    def __init__(self, scheduler: "SharedBatchScheduler", servable: ServableVersion, signature_name: str):
        self._scheduler, self.servable, self.signature_name = scheduler, servable, signature_name
        self.tasks: collections.deque = collections.deque()
        self.queued_rows = 0
        self.closed = False

    def submit(self, inputs: Dict[str, np.ndarray], rows: int, *, deadline: Optional[float] = None,
               on_cancel: Optional[Callable[[Callable[[], None]], object]] = None) -> Dict[str, np.ndarray]:
        """Queues a request of ``rows`` rows and waits for its outputs.

        Args:
          inputs: the request's inputs, each with ``rows`` rows.
          deadline: ``time.monotonic()`` after which the request is answered DEADLINE_EXCEEDED, not run.
          on_cancel: registers a callback to run when the client goes away (``grpc`` ``add_callback``).

        Raises:
          ServingError: UNAVAILABLE when the queue is full or closed, DEADLINE_EXCEEDED, CANCELLED, or the
            error of the batch's run.
        """
        task = _Task(inputs, rows, deadline)
        self._scheduler.enqueue(self, task)
        if on_cancel is not None:
            on_cancel(lambda: self._scheduler.withdraw(self, task, _CANCELLED))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            self._scheduler.withdraw(self, task, _DEADLINE_EXCEEDED)
            task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Refuses new requests; the waiting ones still run."""
        self._scheduler.close_queue(self)


class SharedBatchScheduler:
    """``num_batch_threads`` threads forming and running batches for every BatchQueue of a server.

    Args:
      options: the batching parameters (one set for every queue, as TF-Serving's global parameters).
      metrics: optional ``ServingMetrics``; records batch sizes and queueing latency.
    """

    def __init__(self, options: BatchingOptions, metrics=None):
        self.options, self._metrics = options, metrics
        self._condition = threading.Condition()
        self._queues: List[BatchQueue] = []
        self._next = 0  # round-robin position, so no queue starves
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"ufl-batch-{index}", daemon=True)
                         for index in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def queue(self, servable: ServableVersion, signature_name: str) -> BatchQueue:
        queue = BatchQueue(self, servable, signature_name)
        with self._condition:
            self._queues.append(queue)
        return queue

    def enqueue(self, queue: BatchQueue, task: _Task) -> None:
        limit = self.options.max_enqueued_batches * self.options.max_batch_size
        with self._condition:
            if queue.closed:
                raise ServingError("UNAVAILABLE", f"model {queue.servable.name!r} version "
                                                  f"{queue.servable.version} is being unloaded; retry")
            if queue.queued_rows + task.rows > limit:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted "
                                                  f"is full ({queue.queued_rows} rows queued); retry later")
            queue.tasks.append(task)
            queue.queued_rows += task.rows
            self._condition.notify()

    def withdraw(self, queue: BatchQueue, task: _Task, error: ServingError) -> None:
        """Takes a task that is still waiting out of its queue (its rows are freed) and fails it."""
        with self._condition:
            try:
                queue.tasks.remove(task)
            except ValueError:
                return  # already in a batch: it runs and gets its answer
            queue.queued_rows -= task.rows
        task.fail(error)

    def close_queue(self, queue: BatchQueue) -> None:
        with self._condition:
            queue.closed = True
            self._condition.notify_all()

    def stop(self) -> None:
        """Runs what is queued, then ends the batch threads."""
        with self._condition:
            self._stopped = True
            for queue in self._queues:
                queue.closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    @property
    def thread_count(self) -> int:
        return len(self._threads)

    def _ready_at(self, queue: BatchQueue) -> float:
        """When ``queue``'s next batch is due (``time.monotonic()``); infinity when it is empty."""
        if not queue.tasks:
            return float("inf")
        if queue.closed or queue.queued_rows >= self.options.max_batch_size:
            return 0.0
        return queue.tasks[0].enqueued + self.options.batch_timeout_micros / 1e6

    def _next_batch(self) -> Tuple[Optional[BatchQueue], List[_Task]]:
        """Waits for a due batch of any queue (taken round-robin); (None, []) once stopped and drained."""
        with self._condition:
            while True:
                now = time.monotonic()
                self._queues = [queue for queue in self._queues if not (queue.closed and not queue.tasks)]
                due = [self._ready_at(queue) for queue in self._queues]
                for offset in range(len(self._queues)):
                    index = (self._next + offset) % len(self._queues)
                    if due[index] <= now:
                        self._next = index + 1
                        batch = self._take(self._queues[index], now)
                        if batch:
                            return self._queues[index], batch
                if self._stopped and not any(queue.tasks for queue in self._queues):
                    return None, []
                wake = min(due, default=float("inf"))
                self._condition.wait(None if wake == float("inf") else max(0.0, wake - now))

    def _take(self, queue: BatchQueue, now: float) -> List[_Task]:
        """Up to ``max_batch_size`` rows of ``queue``'s tasks; expired tasks fail instead of running."""
        batch, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.options.max_batch_size:
            task = queue.tasks.popleft()
            queue.queued_rows -= task.rows
            if task.deadline is not None and task.deadline <= now:
                task.fail(_DEADLINE_EXCEEDED)
                continue
            batch.append(task)
            rows += task.rows
        return batch

    def _work(self) -> None:
        queue, batch = self._next_batch()
        while batch:
            try:
                self._run(queue, batch)
            except ServingError as error:
                for task in batch:
                    task.error = error
            except Exception as error:  # never leave a client waiting
                log.exception("batched request failed")
                for task in batch:
                    task.error = ServingError("INTERNAL", f"batched request failed: {error}")
            for task in batch:
                task.done.set()
            queue, batch = self._next_batch()

    def _run(self, queue: BatchQueue, batch: List[_Task]) -> None:
        rows = sum(task.rows for task in batch)
        padded = next((size for size in self.options.allowed_batch_sizes if size >= rows), rows)
        if self._metrics is not None:
            started = time.monotonic()
            for task in batch:
                self._metrics.batch_queued(started - task.enqueued)
            self._metrics.batch_run(queue.servable.name, rows, padded)
        if len(batch) == 1 and padded == rows:
            batch[0].result = self._run_servable(queue, batch[0].inputs)
            return
        merged = {}
        for key in batch[0].inputs:
            parts = [task.inputs[key] for task in batch]
            if padded > rows:  # pad with copies of the first row, as TF-Serving does
                parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
            merged[key] = np.concatenate(parts)
        results = self._run_servable(queue, merged)
        start = 0
        for task in batch:
            task.result = {key: value[start:start + task.rows] for key, value in results.items()}
            start += task.rows

    def _run_servable(self, queue: BatchQueue, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return queue.servable.run(queue.signature_name, inputs)
        finally:
            if self._metrics is not None:
                self._metrics.runtime(queue.servable.name, "predict", time.perf_counter() - started)
