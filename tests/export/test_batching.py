"""Batching of concurrent requests (ufl.export.batching), without a server: shared scheduler, padding,
limits, deadlines, cancellation, the parameters file."""
import threading
import time

import numpy as np
import pytest

from ufl.config import ConfigError
from ufl.export.batching import BatchingOptions, SharedBatchScheduler, read_batching_parameters
from ufl.export.model_manager import ServingError


class RecordingServable:
    """Stands in for a ServableVersion: doubles its input and records the batch sizes it ran."""

    version = 1

    def __init__(self, release=None, name="fake"):
        self.batch_sizes = []
        self.release = release
        self.name = name

    def run(self, signature_name, inputs):
        if self.release is not None:
            self.release.wait(30)
        self.batch_sizes.append(len(inputs["patches"]))
        return {"codes": inputs["patches"] * 2.0}


def make_queue(servable, **options):
    """A queue of its own scheduler (stopped with ``queue.scheduler.stop()``)."""
    scheduler = SharedBatchScheduler(BatchingOptions(**options))
    queue = scheduler.queue(servable, "serving_default")
    queue.scheduler = scheduler
    return queue


def submit_concurrently(queue, arrays, **submit_options):
    results = [None] * len(arrays)
    errors = [None] * len(arrays)

    def call(index):
        try:
            results[index] = queue.submit({"patches": arrays[index]}, len(arrays[index]), **submit_options)
        except ServingError as error:
            errors[index] = error

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(arrays))]
    for thread in threads:
        thread.start()
    return threads, results, errors


def test_concurrent_requests_run_as_one_batch_and_get_their_own_rows():
    servable = RecordingServable()
    # A full batch (4 + 4 + 8 rows) starts at once; the long timeout only bounds a stuck test.
    queue = make_queue(servable, max_batch_size=16, batch_timeout_micros=10_000_000, num_batch_threads=1)
    arrays = [np.full((size, 2), float(index), np.float32) for index, size in enumerate((4, 4, 8))]
    threads, results, errors = submit_concurrently(queue, arrays)
    for thread in threads:
        thread.join(30)
    queue.scheduler.stop()
    assert errors == [None] * 3 and servable.batch_sizes == [16]
    for array, result in zip(arrays, results):
        np.testing.assert_array_equal(result["codes"], array * 2.0)


def test_a_batch_is_padded_to_the_next_allowed_size():
    servable = RecordingServable()
    queue = make_queue(servable, max_batch_size=16, batch_timeout_micros=0, num_batch_threads=1,
                       allowed_batch_sizes=(8, 16))
    patches = np.arange(10, dtype=np.float32).reshape(5, 2)
    result = queue.submit({"patches": patches}, 5)
    queue.scheduler.stop()
    assert servable.batch_sizes == [8]
    np.testing.assert_array_equal(result["codes"], patches * 2.0)


def test_a_full_queue_answers_unavailable():
    release = threading.Event()
    queue = make_queue(RecordingServable(release), max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1,
                       max_enqueued_batches=1)
    threads, _, errors = submit_concurrently(queue, [np.zeros((4, 2), np.float32)] * 3)
    for thread in threads[1:]:
        thread.join(0.5)
    release.set()
    for thread in threads:
        thread.join(30)
    queue.close()
    assert any(error is not None and error.code == "UNAVAILABLE" and "queue" in error.message for error in errors)
    with pytest.raises(ServingError, match="being unloaded"):
        queue.submit({"patches": np.zeros((1, 2), np.float32)}, 1)
    queue.scheduler.stop()


def test_one_set_of_batch_threads_serves_every_model_signature_and_shape():
    scheduler = SharedBatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=2))
    before = threading.active_count()
    servables = [RecordingServable(name=f"model{index}") for index in range(5)]
    queues = [scheduler.queue(servable, signature) for servable in servables
              for signature in ("serving_default", "reconstruct")]
    results = []
    for width in range(1, 9):  # a queue per input shape, as the server keys them
        for queue in queues:
            results.append((width, queue.submit({"patches": np.full((2, width), width, np.float32)}, 2)))
    assert threading.active_count() == before and scheduler.thread_count == 2
    assert all(np.array_equal(result["codes"], np.full((2, width), 2.0 * width)) for width, result in results)
    scheduler.stop()


def test_a_request_whose_deadline_passes_while_queued_is_not_run_and_frees_its_rows():
    release = threading.Event()
    servable = RecordingServable(release)
    queue = make_queue(servable, max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1,
                       max_enqueued_batches=1)
    blocker, _, blocker_errors = submit_concurrently(queue, [np.zeros((2, 2), np.float32)])
    while queue.tasks:  # wait until the first batch runs (and blocks the only batch thread)
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(ServingError) as caught:
        queue.submit({"patches": np.ones((2, 2), np.float32)}, 2, deadline=time.monotonic() + 0.2)
    assert caught.value.code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 20
    assert queue.queued_rows == 0  # the slot is free again: a new request fits the one-batch queue
    waiting, results, errors = submit_concurrently(queue, [np.full((2, 2), 3.0, np.float32)])
    release.set()
    for thread in blocker + waiting:
        thread.join(30)
    queue.scheduler.stop()
    assert servable.batch_sizes == [2, 2] and blocker_errors == [None] and errors == [None]
    np.testing.assert_array_equal(results[0]["codes"], np.full((2, 2), 6.0))


def test_a_cancelled_request_leaves_the_queue_at_once():
    release = threading.Event()
    servable = RecordingServable(release)
    queue = make_queue(servable, max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1)
    blocker, _, _ = submit_concurrently(queue, [np.zeros((2, 2), np.float32)])
    while queue.tasks:
        time.sleep(0.01)
    callbacks = []
    cancelled, _, errors = submit_concurrently(queue, [np.ones((2, 2), np.float32)], on_cancel=callbacks.append)
    while not callbacks:
        time.sleep(0.01)
    assert queue.queued_rows == 2
    callbacks[0]()  # what gRPC does when the client cancels or disconnects
    cancelled[0].join(30)
    assert errors[0].code == "CANCELLED" and queue.queued_rows == 0
    release.set()
    blocker[0].join(30)
    queue.scheduler.stop()
    assert servable.batch_sizes == [2]


def test_batching_parameters_file_as_ufl_export_writes_it(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 256 }\nbatch_timeout_micros { value: 1000 }\n"
                    "num_batch_threads { value: 2 }\nallowed_batch_sizes: 64\nallowed_batch_sizes: 256\n"
                    "some_newer_field { value: 1 }\n")
    options = read_batching_parameters(str(path))
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.allowed_batch_sizes) == (256, 1000, 2, (64, 256))
    path.write_text("max_batch_size { value: 0 }\n")
    with pytest.raises(ConfigError, match="must be positive"):
        read_batching_parameters(str(path))
    path.write_text("max_batch_size: {{ oops\n")
    with pytest.raises(ConfigError, match="is not a BatchingParameters text proto"):
        read_batching_parameters(str(path))
    path.write_text("max_batch_size { value: 256 }\nallowed_batch_sizes: 64\n")
    with pytest.raises(ConfigError, match="largest allowed_batch_sizes 64 must equal max_batch_size 256"):
        read_batching_parameters(str(path))
    with pytest.raises(ConfigError, match="batching_parameters_file .* does not exist"):
        read_batching_parameters(str(tmp_path / "missing.config"))
