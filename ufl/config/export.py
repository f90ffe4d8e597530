"""ExportConfig: which RUN/ to export, where, under which name and version."""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

from ufl.config.base import require


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Config of ``ufl export``.

    Attributes:
      run: the RUN/ directory written by ``ufl train``.
      model_base: MODELS/ root; versions go to MODELS/NAME/VERSION/.
      name: model name as served (letters, digits, ``-``, ``_``).
      version: explicit version (> 0); default: highest existing + 1.
      xla: save serving functions with ``jit_compile=True`` (experimental in TF-Serving).
      grid_stride: stride of the dense patch grid used by the ``encode_images`` signature.
      pool_grid: side of the pooling grid of ``encode_images`` (pooled features = pool_grid^2 x K).
      warmup_requests: number of real PredictRequests stored for TF-Serving warmup.
    """

    run: str
    model_base: str
    name: str
    version: Optional[int] = None
    xla: bool = False
    grid_stride: Optional[int] = None
    pool_grid: int = 2
    warmup_requests: int = 4

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        require(bool(re.fullmatch(r"[A-Za-z0-9_\-]+", self.name or "")), "name", self.name,
                "use letters, digits, '-' or '_' (it becomes the served model name)")
        require(self.version is None or self.version > 0, "version", self.version,
                "use --version with a positive integer, or omit it for highest + 1")
        require(self.grid_stride is None or self.grid_stride > 0, "grid_stride", self.grid_stride,
                "use a positive integer")
        require(self.pool_grid > 0, "pool_grid", self.pool_grid, "use a positive integer")
        require(self.warmup_requests >= 0, "warmup_requests", self.warmup_requests, "use >= 0")
