"""What every Predict of ``ufl serve`` goes through, over gRPC or REST: find the served version, check the
request against its signature, run it (through the shared batch scheduler when batching), honour the
request's deadline, and record the request for the metrics and the access log.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ufl.export.access_log import AccessLog
from ufl.export.batching import BatchingOptions, BatchQueue, SharedBatchScheduler
from ufl.export.metrics import ServingMetrics
from ufl.export.model_manager import ModelManager
from ufl.export.servable import ServableVersion, ServingError

DEADLINE_EXCEEDED_MESSAGE = "Deadline exceeded before the request ran"


class Recorder:
    """Sends each finished request to the metrics and the access log (whichever are on)."""

    def __init__(self, metrics: Optional[ServingMetrics], access_log: Optional[AccessLog]):
        self.metrics, self.access_log = metrics, access_log

    def __call__(self, *, api: str, entrypoint: str, model: str, servable: Optional[ServableVersion],
                 signature: Optional[str], rows: Optional[int], status: str, started: float) -> None:
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.request(model, api, entrypoint, status, seconds)
        if self.access_log is not None:
            self.access_log.write(api=api, entrypoint=entrypoint, model=model,
                                  version=servable.version if servable else None, signature=signature,
                                  rows=rows, status=status, seconds=seconds)


def batch_rows(inputs: Dict[str, np.ndarray]) -> Optional[int]:
    """The common batch size of the inputs; None when they have none (scalars or different sizes)."""
    rows = {value.shape[0] if value.ndim else -1 for value in inputs.values()}
    return rows.pop() if len(rows) == 1 and -1 not in rows else None


class Predictor:
    """Resolves the servable, validates the request and runs it (through a batch queue when batching).

    Args:
      manager: the served models.
      batching: batch concurrent requests with these options (None: each request runs on its own thread).
      metrics: record run latencies and batch sizes here (None: not recorded).
    """

    def __init__(self, manager: ModelManager, batching: Optional[BatchingOptions] = None,
                 metrics: Optional[ServingMetrics] = None):
        self.manager = manager
        self.batching = batching
        self.metrics = metrics
        self.scheduler = SharedBatchScheduler(batching, metrics) if batching is not None else None
        self._queues: Dict[tuple, BatchQueue] = {}
        self._unloaded: "weakref.WeakSet[ServableVersion]" = weakref.WeakSet()
        self._lock = threading.Lock()

    def predict(self, name: str, version: Optional[int], label: str, signature_name: str,
                inputs: Dict[str, np.ndarray], output_filter: Sequence[str] = (), *,
                deadline: Optional[float] = None,
                on_cancel: Optional[Callable[[Callable[[], None]], object]] = None
                ) -> Tuple[ServableVersion, str, Dict[str, np.ndarray]]:
        """Returns (servable, signature name, outputs); raises ServingError like TF-Serving.

        Args:
          deadline: ``time.monotonic()`` after which the request is answered DEADLINE_EXCEEDED, not run.
          on_cancel: registers a callback run when the client goes away (frees a queued request's rows).
        """
        servable = self.manager.resolve(name, version, label)
        signature_name, outputs = servable.validate(inputs, signature_name, output_filter)
        rows = batch_rows(inputs)
        queue = None
        if self.scheduler is not None and rows is not None and 0 < rows <= self.batching.max_batch_size:
            queue = self._queue(servable, signature_name, inputs)
        if queue is not None:
            results = queue.submit(inputs, rows, deadline=deadline, on_cancel=on_cancel)
        else:
            if deadline is not None and deadline <= time.monotonic():
                raise ServingError("DEADLINE_EXCEEDED", DEADLINE_EXCEEDED_MESSAGE)
            results = self._run(servable, signature_name, inputs)
        return servable, signature_name, {key: results[key] for key in outputs}

    def _run(self, servable: ServableVersion, signature_name: str,
             inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.metrics is None:
            return servable.run(signature_name, inputs)
        started = time.perf_counter()
        try:
            return servable.run(signature_name, inputs)
        finally:
            self.metrics.runtime(servable.name, "predict", time.perf_counter() - started)

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
                queue = self._queues[key] = self.scheduler.queue(servable, signature_name)
            return queue

    def drop(self, servable: ServableVersion) -> None:
        """Closes the batch queues of an unloaded version (their waiting requests still run)."""
        with self._lock:
            self._unloaded.add(servable)
            for key in [key for key in self._queues if key[0] == id(servable)]:
                self._queues.pop(key).close()

    def close(self) -> None:
        with self._lock:
            self._queues.clear()
        if self.scheduler is not None:
            self.scheduler.stop()
