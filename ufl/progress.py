"""Progress a person can read: a bar on a terminal, plain lines in logs.

``progress(total, desc=..., unit=...)`` returns a context manager with ``update(n)``. On a terminal it is a
tqdm bar (count, rate, time left); when the stream is not a terminal (CI, a log file, a pipe) it prints one
plain line at most every ``interval`` seconds and a last line at the end, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Optional


class _PlainProgress:
    """Plain-line progress for streams that are not terminals."""

    def __init__(self, total: Optional[int], desc: str, unit: str, stream: IO[str], interval: float):
        self.total, self.desc, self.unit, self.stream, self.interval = total, desc, unit, stream, interval
        self.count = self.printed_count = 0
        self.started = self.last_print = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last_print >= self.interval:
            self.last_print = now
            self._print(now)

    def _print(self, now: float) -> None:
        self.printed_count = self.count
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        of_total = f"/{self.total:,}" if self.total else ""
        left = ""
        if self.total and rate > 0 and self.count < self.total:
            left = f", {(self.total - self.count) / rate:.0f} s left"
        print(f"{self.desc}: {self.count:,}{of_total} {self.unit} ({rate:,.0f} {self.unit}/s{left})",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.count != self.printed_count and time.monotonic() - self.started >= self.interval:
            self._print(time.monotonic())

    def __enter__(self) -> "_PlainProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Disabled:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Disabled":
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def progress(total: Optional[int] = None, *, desc: str, unit: str = "it", enabled: bool = True,
             stream: Optional[IO[str]] = None, interval: float = 10.0):
    """A progress reporter for ``total`` units of work.

    Args:
      total: how many units the work has (None when unknown).
      desc: what is being done, shown first ("features", "epoch 2/10").
      unit: the unit counted ("img", "step", "patch").
      enabled: False gives a reporter that prints nothing.
      stream: where to print; stderr by default.
      interval: seconds between plain lines when ``stream`` is not a terminal.

    Example:
      >>> with progress(3, desc="demo", unit="img", enabled=False) as bar:
      ...     bar.update(3)
    """
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return _Disabled()
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, leave=False)
    return _PlainProgress(total, desc, unit, stream, interval)
