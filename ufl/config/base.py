"""Helpers shared by the stage configs: validation errors, JSON conversion and atomic writes."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from typing import IO, Any, Iterable, Iterator

from ufl.errors import ConfigError  # noqa: F401  (re-exported: configs raise it)


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raises ConfigError("<field> <value!r> is invalid; <allowed>") unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field} {value!r} is invalid; {allowed}")


def require_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, field, value, "use one of: " + ", ".join(map(str, choices)))


def to_jsonable(config: Any) -> dict:
    """A dataclass (possibly nested, with tuples) as a plain JSON-serializable dict."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """A handle on a temporary sibling of ``path``, renamed to ``path`` when the block ends without error
    (and deleted otherwise), so a reader never sees half a file. ``mode``: ``"w"`` (UTF-8 text) or ``"wb"``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary sibling, so a reader never sees half a file."""
    with atomic_open(path, "w") as handle:
        handle.write(text)

