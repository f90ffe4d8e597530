"""One JSON line per request served by ``ufl serve --access_log FILE|-`` (off by default).

    {"time": "2026-12-01T15:12:21.123Z", "api": "predict", "entrypoint": "GRPC", "model": "patches",
     "version": 3, "signature": "serving_default", "rows": 256, "status": "OK", "ms": 7.412}

``version`` and ``signature`` are null when the request failed before they were known, ``rows`` when the
request had no batch dimension.
"""
from __future__ import annotations

import datetime
import json
import sys
import threading
from typing import Optional, TextIO

from ufl.errors import ConfigError


class AccessLog:
    """Appends one JSON line per request to a file (line-buffered) or, for ``-``, to stdout."""

    def __init__(self, path: str):
        self.path = path
        if path == "-":
            self._stream: TextIO = sys.stdout
        else:
            try:
                self._stream = open(path, "a", encoding="utf-8", buffering=1)
            except OSError as error:
                raise ConfigError(f"access_log {path!r} cannot be opened for appending ({error.strerror}); "
                                  "give a writable file or '-' for stdout")
        self._lock = threading.Lock()

    def write(self, *, api: str, entrypoint: str, model: str, version: Optional[int], signature: Optional[str],
              rows: Optional[int], status: str, seconds: float) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        line = json.dumps({"time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                           "api": api, "entrypoint": entrypoint, "model": model, "version": version,
                           "signature": signature, "rows": rows, "status": status,
                           "ms": round(seconds * 1e3, 3)})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
