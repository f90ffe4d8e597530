"""The gRPC worker pool of ufl serve: a steady client stays on one warm thread, concurrent ones get a thread each."""
import threading

import pytest

from ufl.export.worker_pool import HotThreadPool


def test_one_request_at_a_time_always_runs_on_the_same_thread():
    pool = HotThreadPool(max_workers=8, thread_name_prefix="test")
    try:
        # A few concurrent tasks first, so several idle threads exist to rotate over.
        release = threading.Event()
        blocked = [pool.submit(release.wait, 10) for _ in range(4)]
        release.set()
        assert all(future.result(timeout=10) for future in blocked)
        names = {pool.submit(lambda: threading.current_thread().name).result(timeout=10) for _ in range(50)}
    finally:
        pool.shutdown()
    assert len(names) == 1


def test_concurrent_tasks_get_their_own_threads_up_to_max_workers_then_wait_in_order():
    pool = HotThreadPool(max_workers=3, thread_name_prefix="test")
    started, release, order = threading.Barrier(4), threading.Event(), []

    def blocking(index):
        started.wait(timeout=10)  # all three workers must be running at once to pass this barrier
        release.wait(timeout=10)
        return index

    try:
        running = [pool.submit(blocking, index) for index in range(3)]
        queued = [pool.submit(order.append, index) for index in range(5)]
        started.wait(timeout=10)
        assert order == []  # every worker is busy: the extra tasks wait
        release.set()
        assert [future.result(timeout=10) for future in running] == [0, 1, 2]
        for future in queued:
            future.result(timeout=10)
    finally:
        pool.shutdown()
    assert order == [0, 1, 2, 3, 4]


def test_errors_reach_the_caller_and_shutdown_refuses_new_tasks():
    pool = HotThreadPool(max_workers=2)
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=10)
    assert pool.submit(sum, [1, 2]).result(timeout=10) == 3
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(sum, [1])
    with pytest.raises(ValueError, match="max_workers must be >= 1, got 0"):
        HotThreadPool(max_workers=0)
