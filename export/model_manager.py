"""Loads the versions of served models and keeps them current, as TF-Serving's ServerCore does.

Each model has a base path holding integer version folders (MODELS/NAME/VERSION/, a SavedModel each).
The manager serves the versions its version policy asks for (default: the newest one), polls the base
path every ``poll_wait_seconds`` for new versions, loads a new version (and runs its warmup requests)
before unloading the one it replaces, and remembers each version's state for ``GetModelStatus``.
Models come from ``--model_name``/``--model_base_path`` or from a ``--model_config_file`` (a
``ModelServerConfig`` text proto, as written by ``ufl export`` in MODELS/models.config).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from ufl.config import ConfigError
from ufl.errors import first_line
from ufl.export import signatures
from ufl.export.servable import ServableVersion, ServingError, session_config  # noqa: F401 (re-exported)
from ufl.export.versions import list_versions

State = get_model_status_pb2.ModelVersionStatus.State
log = logging.getLogger("ufl.serve")



@dataclasses.dataclass
class _VersionState:
    state: int
    error: str = ""
    servable: Optional[ServableVersion] = None
    failed_loads: int = 0


def aspired_versions(config: model_server_config_pb2.ModelConfig, available: List[int]) -> List[int]:
    """The versions the model's ``model_version_policy`` asks for, among those on disk."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return list(available)
    if kind == "specific":
        return sorted(set(policy.specific.versions) & set(available))
    keep = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return available[-keep:]


def single_model_config(model_name: str, model_base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config of ``--model_name``/``--model_base_path`` (one model, newest version)."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = model_name, model_base_path, "tensorflow"
    return config


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ``ModelServerConfig`` text proto (``--model_config_file``)."""
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"model_config_file {path!r} does not exist; run 'ufl export' (it writes "
                          f"MODELS/{signatures.MODEL_CONFIG_FILE}) or fix the path")
    with tf.io.gfile.GFile(path) as handle:
        text = handle.read()
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ConfigError(f"model_config_file {path!r} is not a ModelServerConfig text proto: {error}")
    return config


def check_model_config(config: model_server_config_pb2.ModelServerConfig, source: str) -> None:
    """Raises ConfigError for configs ufl serve cannot serve (names repeated, base paths missing, ...)."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: only model_config_list is supported (got "
                          f"{config.WhichOneof('config')}); list models as model_config_list {{ config {{ ... }} }}")
    names = [entry.name for entry in config.model_config_list.config]
    if not names:
        raise ConfigError(f"{source}: model_config_list has no models; add config {{ name: ... base_path: ... }}")
    for entry in config.model_config_list.config:
        if not entry.name or names.count(entry.name) > 1:
            raise ConfigError(f"{source}: model name {entry.name!r} is empty or repeated; give each model "
                              "a unique name")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {entry.name!r} has model_platform {entry.model_platform!r}; "
                              "ufl serve serves TensorFlow SavedModels only (model_platform: \"tensorflow\")")
        if not entry.base_path or not tf.io.gfile.isdir(entry.base_path):
            raise ConfigError(f"{source}: base_path {entry.base_path!r} of model {entry.name!r} is not a "
                              "directory; point it at MODELS/NAME as written by 'ufl export'")


class ModelManager:
    """Serves the aspired versions of each configured model and keeps them current.

    Args:
      config: the models (``ModelServerConfig`` with a ``model_config_list``).
      poll_wait_seconds: seconds between scans of the base paths for new versions (0 = scan only at start).
      enable_warmup: replay each version's warmup requests before serving it.
      max_load_attempts: how many polls may retry a version that failed to load.
      on_unload: called with each ServableVersion after it stops being served.
      source: where the config came from, for error messages.
      session_config: TensorFlow session options of every loaded version (default: :func:`session_config`).
      load: load the models now (False: :meth:`load` does it, e.g. once the server's ports are bound).
      allow_version_labels_for_unavailable_models: let ``version_labels`` name versions not being served
        (TF-Serving's flag of that name); by default such a config is refused.
      config_file: re-read this ModelServerConfig file every ``config_poll_wait_seconds`` (> 0) and
        apply it when it changes (``--model_config_file_poll_wait_seconds``).

    Attributes ``on_change`` (called after each scan) and ``metrics`` (a ``ServingMetrics`` recording load
    and warmup latencies) may be set by the server.
    """

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, *, poll_wait_seconds: float = 1.0,
                 enable_warmup: bool = True, max_load_attempts: int = 5,
                 on_unload: Optional[Callable[[ServableVersion], None]] = None, source: str = "model config",
                 session_config: Optional[tf.compat.v1.ConfigProto] = None, load: bool = True,
                 allow_version_labels_for_unavailable_models: bool = False, config_file: Optional[str] = None,
                 config_poll_wait_seconds: float = 0.0):
        self.poll_wait_seconds = poll_wait_seconds
        self.session_config = session_config
        self.enable_warmup = enable_warmup
        self.max_load_attempts = max_load_attempts
        self.on_unload = on_unload
        self.on_change: Optional[Callable[[], None]] = None
        self.metrics = None
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.config_file, self.config_poll_wait_seconds = config_file, config_poll_wait_seconds
        self._lock = threading.Lock()          # guards _models, _labels, _states and _served
        self._poll_lock = threading.Lock()     # one scan at a time (poller thread or config reload)
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._models: Dict[str, model_server_config_pb2.ModelConfig] = {}
        self._labels: Dict[str, Dict[str, int]] = {}
        self._states: Dict[str, Dict[int, _VersionState]] = {}
        self._served: Dict[str, Dict[int, ServableVersion]] = {}
        self._missing_base_paths: set = set()
        self._config_text: Optional[str] = None
        self.loaded = False  # set by load(): the first scan happened
        self.source = source
        self.reload_config(config, source=source, load=load)

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig, *, source: str,
                      load: bool = True) -> None:
        """Replaces the served models (models no longer listed are unloaded) and scans at once.

        Raises:
          ConfigError: the config cannot be served, or a version label names a version that is not
            available (the models are still updated, the labels are not; as TF-Serving).
        """
        check_model_config(config, source)
        with self._lock:
            self._models = {entry.name: entry for entry in config.model_config_list.config}
        if load:
            self.load(source)

    def load(self, source: str = "model config") -> None:
        """Scans the base paths (loading the wanted versions), then applies the config's version labels."""
        self.loaded = True
        self.poll()
        with self._lock:
            labels = {name: dict(entry.version_labels) for name, entry in self._models.items()}
            for name, entry in labels.items():
                for label, version in sorted(entry.items()):
                    if not self.allow_unavailable_labels and version not in self._served.get(name, {}):
                        raise ConfigError(
                            f"{source}: version label {label!r} of model {name!r} names version {version}, which "
                            "is not currently available for inference; serve that version first or start with "
                            "--allow_version_labels_for_unavailable_models")
            self._labels = labels

    def start(self) -> "ModelManager":
        """Starts the background pollers of the base paths and of the config file (stopped by :meth:`stop`)."""
        if self._threads:
            return self
        if self.poll_wait_seconds > 0:
            self._threads.append(threading.Thread(target=self._repeat, args=(self.poll_wait_seconds, self.poll),
                                                  name="ufl-model-poller", daemon=True))
        if self.config_file and self.config_poll_wait_seconds > 0:
            with open(self.config_file, encoding="utf-8") as handle:
                self._config_text = handle.read()
            self._threads.append(threading.Thread(target=self._repeat, args=(self.config_poll_wait_seconds,
                                                                             self._reload_config_file),
                                                  name="ufl-config-poller", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _repeat(self, seconds: float, action: Callable[[], None]) -> None:
        while not self._stop.wait(seconds):
            try:
                action()
            except ConfigError as error:  # a bad edit of the config file: say so, keep serving
                log.error("%s", error)
            except Exception:  # a broken version folder must not stop the poller
                log.exception("scanning model base paths failed")

    def _reload_config_file(self) -> None:
        """Applies the config file when its text changed since it was last read."""
        try:
            with open(self.config_file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise ConfigError(f"model_config_file {self.config_file!r} cannot be read ({error.strerror}); "
                              "still serving its last version")
        if text == self._config_text:
            return
        self._config_text = text
        log.info("model_config_file %s changed; applying it", self.config_file)
        self.reload_config(read_model_config_file(self.config_file),
                           source=f"model_config_file {self.config_file!r}")

    def poll(self) -> None:
        """Scans every base path once: loads newly aspired versions, then unloads the others.

        A served version is unloaded only once a wanted version is served, so a broken new version
        leaves the previous one serving (its load error shows in GetModelStatus).
        """
        with self._poll_lock:
            with self._lock:
                models = dict(self._models)
                for name in list(self._served):
                    if name not in models:
                        for version in list(self._served[name]):
                            self._unload(name, version)
            for name, config in models.items():
                if not self._base_path_exists(name, config.base_path):
                    continue  # keep serving what is loaded, as TF-Serving does
                wanted = aspired_versions(config, list_versions(config.base_path, complete_only=True))
                for version in wanted:
                    self._load(name, version, os.path.join(config.base_path, str(version)))
                with self._lock:
                    served = self._served.get(name, {})
                    # Keep the old version when no wanted version loaded (a broken new export).
                    if any(version in served for version in wanted) or not wanted:
                        for version in [version for version in served if version not in wanted]:
                            self._unload(name, version)
        if self.on_change is not None:
            self.on_change()

    def _base_path_exists(self, name: str, base_path: str) -> bool:
        """False (said once, in one line) while a model's base path is missing."""
        if tf.io.gfile.isdir(base_path):
            if base_path in self._missing_base_paths:
                self._missing_base_paths.discard(base_path)
                log.info("base path %s of model %s is back", base_path, name)
            return True
        if base_path not in self._missing_base_paths:
            self._missing_base_paths.add(base_path)
            log.error("FileSystemStoragePathSource encountered a filesystem access error: Could not find base "
                      "path %s for servable %s; still serving versions %s", base_path, name,
                      self.available_versions(name) or "none")
        return False

    def _load(self, name: str, version: int, path: str) -> None:
        with self._lock:
            state = self._states.setdefault(name, {}).get(version)
            if state is not None and (state.state == State.AVAILABLE or
                                      state.failed_loads >= self.max_load_attempts):
                return
            failed = state.failed_loads if state else 0
            self._states[name][version] = _VersionState(State.LOADING, failed_loads=failed)
        try:
            servable = self._load_servable(name, version, path)
            warmed = self._warmup(servable)
        except Exception as error:  # any load failure is reported through GetModelStatus
            log.error("loading model %s version %d from %s failed: %s", name, version, path,
                      first_line(error))
            with self._lock:
                self._states[name][version] = _VersionState(State.END, error=str(error),
                                                            failed_loads=failed + 1)
            return
        log.info("serving model %s version %d from %s (%d warmup requests)", name, version, path, warmed)
        with self._lock:
            self._states[name][version] = _VersionState(State.AVAILABLE, servable=servable)
            self._served.setdefault(name, {})[version] = servable

    def _load_servable(self, name: str, version: int, path: str) -> ServableVersion:
        started = time.perf_counter()
        try:
            servable = ServableVersion(name, version, path, config=self.session_config)
        except Exception:
            if self.metrics is not None:
                self.metrics.load(path, time.perf_counter() - started, ok=False)
            raise
        if self.metrics is not None:
            self.metrics.load(path, time.perf_counter() - started, ok=True)
        return servable

    def _warmup(self, servable: ServableVersion) -> int:
        if not self.enable_warmup:
            return 0
        started = time.perf_counter()
        count = None
        try:
            count = servable.warmup()
            return count
        finally:
            if self.metrics is not None and count != 0:  # versions without warmup requests are not timed
                self.metrics.warmup(servable.path, time.perf_counter() - started, ok=count is not None)

    def _unload(self, name: str, version: int) -> None:
        """Stops serving a version (called with ``_lock`` held); in-flight requests keep their reference."""
        servable = self._served[name].pop(version)
        if not self._served[name]:
            del self._served[name]
        self._states[name][version] = _VersionState(State.END)
        log.info("unloaded model %s version %d", name, version)
        if self.on_unload is not None:
            self.on_unload(servable)

    def model_names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    def available_versions(self, name: str) -> List[int]:
        with self._lock:
            return sorted(self._served.get(name, {}))

    def resolve(self, name: str, version: Optional[int] = None, label: str = "") -> ServableVersion:
        """The served version asked for (newest when ``version`` and ``label`` are unset).

        Raises:
          ServingError: NOT_FOUND for an unknown model, version or label, as TF-Serving words it.
        """
        with self._lock:
            served = self._served.get(name, {})
            if label:
                labels = self._labels.get(name, {})
                if label not in labels:
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Label({name}, {label}); "
                                                    "no such model or version label")
                version = labels[label]
            if version is None:
                if not served:
                    known = ", ".join(sorted(self._served)) or "none"
                    raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name}); "
                                                    f"models served: {known}")
                return served[max(served)]
            if version not in served:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version}); "
                                                f"versions served: {sorted(served) or 'none'}")
            return served[version]

    def status(self, name: str, version: Optional[int] = None) -> List[Tuple[int, int, str]]:
        """(version, State, error message) of each known version of ``name``, newest first.

        Raises:
          ServingError: NOT_FOUND when the model or the version is unknown.
        """
        with self._lock:
            states = self._states.get(name) if name in self._models else None
            if not states:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if version is not None:
                if version not in states:
                    raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
                states = {version: states[version]}
            return [(number, states[number].state, states[number].error) for number in sorted(states, reverse=True)]

    def version_states(self) -> List[Tuple[str, int, str]]:
        """(model name, version, state name) of every known version (for the metrics page)."""
        with self._lock:
            return [(name, version, State.Name(entry.state)) for name, versions in sorted(self._states.items())
                    for version, entry in sorted(versions.items())]
