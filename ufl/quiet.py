"""What reaches the terminal: ufl's own lines, not the start-up chatter of TensorFlow and Beam.

TensorFlow's C++ code writes notices to file descriptor 2 while it is imported (absl's "All log messages
before absl::InitializeLog()", oneDNN, "Could not find cuda drivers") and when it first looks for a GPU
(``failed call to cuInit``), before ``TF_CPP_MIN_LOG_LEVEL`` applies; Beam's DirectRunner worker processes
log their start-up on their own stderr and again through the runner ("Worker: severity: WARN ...").
``terminal()`` hides them for one ``ufl`` command:

- ``TF_CPP_MIN_LOG_LEVEL=2`` (TensorFlow's own errors only), inherited by every process ufl starts;
- ``import tensorflow`` and its device probe run with file descriptor 2 silenced;
- Python logging: ufl's loggers (``ufl.serve`` -> "ufl serve: ...") at INFO, other libraries' warnings,
  absl's and TensorFlow's only from ERROR up, Beam's only when critical (its errors end the pipeline with
  an exception, which ufl reports in one line); a warning a user must act on (options Beam could not
  parse that the user typed) is shown once, in one line;
- for commands that start Beam worker processes, file descriptor 2 points at /dev/null while ``sys.stderr``
  keeps writing to the terminal, so the workers (which inherit descriptor 2) start silent; their log records
  still reach this process through Beam's log service and the rules above.

With ``verbose`` nothing is hidden; neither is TensorFlow's C++ output when the user set
``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1, nor Python logging when the user configured it (handlers on the root
logger) before calling ufl. Processes ufl starts inherit ``TF_CPP_MIN_LOG_LEVEL=2`` and hide the same.
"""
from __future__ import annotations

import contextlib
import faulthandler
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Iterator

#: Loggers whose records below ERROR are start-up chatter for a ufl user.
LIBRARY_LOGGERS = ("apache_beam", "absl", "tensorflow", "tf_keras", "py.warnings", "grpc", "h5py")
#: Beam also logs at ERROR what then fails the pipeline with an exception, which ufl reports in one line.
BEAM_THRESHOLD = logging.CRITICAL
#: Options Beam's own DirectRunner hands its workers, which they then report as unparseable.
BEAM_INTERNAL_ARGS = ("--pipeline_type_check", "--direct_runner_use_stacked_bundle")


@contextlib.contextmanager
def silenced_fd2() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (C/C++ writes and ``sys.stderr`` alike)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def stderr_kept_fd2_silenced() -> Iterator[None]:
    """Descriptor 2 -> /dev/null (for child processes and C code); ``sys.stderr`` still reaches the terminal.

    Python's tracebacks, ufl's messages, logging and progress bars write to ``sys.stderr``, a copy of the
    terminal's descriptor; a hard crash (abort, segfault) still prints the Python stack there.
    """
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    previous = sys.stderr
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=getattr(previous, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    faulthandler.enable(file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.disable()
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr.close()
        sys.stderr = previous


class _SilentLoader(importlib.abc.Loader):
    """Runs TensorFlow's ``__init__`` and its first device probe with descriptor 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with silenced_fd2():
            self._loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # CUDA probing prints "failed call to cuInit" once

    def __getattr__(self, name):  # resources, source and file names of the package
        return getattr(self._loader, name)


class _SilentTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual and hands it to :class:`_SilentLoader`; removes itself on first use."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall_import_hook()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilentLoader(spec.loader)
        return spec


_IMPORT_HOOK = _SilentTensorFlowImport()


def install_import_hook() -> None:
    """The next ``import tensorflow`` (if TensorFlow is not loaded yet) runs with descriptor 2 silenced."""
    if "tensorflow" not in sys.modules and _IMPORT_HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _IMPORT_HOOK)


def uninstall_import_hook() -> None:
    if _IMPORT_HOOK in sys.meta_path:
        sys.meta_path.remove(_IMPORT_HOOK)


def is_library_record(record: logging.LogRecord) -> bool:
    """A record of TensorFlow, Beam, absl... (also one they log on the root logger, as Beam does)."""
    top = record.name.split(".")[0]
    return (top in LIBRARY_LOGGERS or record.name == "py.warnings"
            or f"{os.sep}apache_beam{os.sep}" in (record.pathname or ""))


def user_beam_args(record: logging.LogRecord) -> list:
    """The options of a "Discarding unparseable args" warning that are not Beam's own."""
    if record.name != "apache_beam.options.pipeline_options" or "unparseable args" not in str(record.msg):
        return []
    args = record.args[0] if isinstance(record.args, tuple) and record.args else []
    return [arg for arg in args if str(arg).split("=")[0] not in BEAM_INTERNAL_ARGS]


class TerminalFilter(logging.Filter):
    """ufl's own records, other libraries' warnings, the libraries above only from ERROR; each line once."""

    def __init__(self):
        super().__init__()
        self.shown = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "ufl" or record.name.startswith("ufl."):
            return True
        if record.levelno < logging.WARNING:
            return False
        threshold = BEAM_THRESHOLD if record.name.startswith("apache_beam") else logging.ERROR
        if is_library_record(record) and record.levelno < threshold:
            unknown = user_beam_args(record)
            if not unknown:
                return False
            record.msg, record.args = "Beam ignored options it does not know: %s", (" ".join(unknown),)
        line = record.getMessage()
        if line in self.shown:
            return False
        self.shown.add(line)
        return True


class TerminalFormatter(logging.Formatter):
    """``ufl serve: message`` for ufl's loggers; ``ufl VERB: warning: message`` for the others."""

    def __init__(self, verb: str):
        super().__init__()
        self.verb = verb

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "ufl" or record.name.startswith("ufl."):
            prefix = record.name.replace(".", " ")
            return f"{prefix}: {message}" if record.levelno < logging.WARNING else \
                f"{prefix}: {record.levelname.lower()}: {message}"
        return f"ufl {self.verb}: {record.levelname.lower()}: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (which ``stderr_kept_fd2_silenced`` may replace)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def quiet_logging(verb: str) -> Iterator[None]:
    """Python logging as described in the module docstring, restored on exit."""
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.addFilter(TerminalFilter())
    handler.setFormatter(TerminalFormatter(verb))
    saved_level = root.level
    saved_levels = {name: logging.getLogger(name).level for name in ("ufl", "apache_beam", "absl")}
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ufl").setLevel(logging.INFO)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # spares building INFO records
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def wants_tensorflow_notices() -> bool:
    """The user set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1: they want TensorFlow's C++ notices."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() in ("0", "1")


@contextlib.contextmanager
def terminal(verb: str, *, verbose: bool = False, own_process: bool = True,
             starts_workers: bool = False) -> Iterator[None]:
    """The terminal of one ``ufl VERB`` command: ufl's lines only, unless ``verbose``.

    Args:
      verb: the command, used in the prefix of library warnings ("ufl preprocess: warning: ...").
      verbose: hide nothing.
      own_process: ufl is the program (the ``ufl`` script or ``python -m ufl.cli``), so it may redirect
        file descriptor 2 and set environment variables; False when ``ufl.cli.main`` is called from Python.
      starts_workers: the command starts Beam worker processes (they inherit a silenced descriptor 2).
    """
    if verbose:
        yield
        return
    with contextlib.ExitStack() as stack:
        if own_process and not wants_tensorflow_notices():
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            install_import_hook()
            stack.callback(uninstall_import_hook)
            if starts_workers:
                stack.enter_context(stderr_kept_fd2_silenced())
        if not logging.getLogger().handlers:
            stack.enter_context(quiet_logging(verb))
        yield
