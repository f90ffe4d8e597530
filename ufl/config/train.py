"""TrainConfig: a named preset plus ``--set key=value`` overrides, fully resolved and validated."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from ufl.config.base import ConfigError, require, require_choice

STRATEGIES = ("auto", "default", "mirrored", "multiworker")

#: tf_keras optimizer names accepted in ``optimizer.name`` (lower case; class names also work).
OPTIMIZERS = ("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "ftrl", "lion", "nadam",
              "rmsprop", "sgd")

#: TrainConfig fields that describe where the run reads and writes; not settable with ``--set``.
LOCATION_FIELDS = ("preset", "data", "out")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Config of ``ufl train``.

    Attributes:
      preset: name of the preset the run started from (see ``ufl train --list-presets``).
      data: the DATA/ directory written by ``ufl preprocess``.
      out: the RUN/ directory to write.
      model: the model's constructor arguments (preset values with overrides applied), including
        ``kind`` (the registered model name).
      epochs: passes over the training split (> 0).
      batch_size: global batch size, split evenly across replicas (> 0; divisible by the replicas).
      optimizer: outer optimizer spec, e.g. ``{"name": "adam", "learning_rate": 1e-3}``; the other keys
        are the tf_keras optimizer's constructor arguments (unused by models that learn without one, such
        as online dictionary learning, for which ``ufl train`` refuses ``--set optimizer.*``).
      strategy: ``auto`` (MultiWorker from TF_CONFIG, Mirrored with >1 GPU, else default) or a name.
      checkpoint_every: steps between checkpoints (> 0); a checkpoint is also written at the end.
      steps_per_execution: training steps run per call of the compiled step function (> 0); metrics
        reach the host once per call.
      jit_compile: compile the model's step with XLA: ``auto`` (default: on a GPU, and on a CPU for the
        model families where XLA is faster than TensorFlow's oneDNN kernels, measured by
        benchmarks/presets.py; config.json records what it became), true or false. Honoured when the
        model supports it and one replica trains.
      seed: seed of initialization and shuffling (epoch e is shuffled with seed + e).
      restart: discard RUN/'s checkpoints, logs, plots and metrics and start over.
      keep_checkpoints: how many of the newest checkpoints RUN/ keeps (> 0; default 2, so that training
        resumes from the one before when the newest cannot be read).
      skip_corrupt_records: train on the readable records of a DATA/ shard that is truncated or corrupt
        (the skipped ones are counted in metrics.json) instead of stopping with an error.
      max_steps: stop after this many training steps in total (default: epochs x steps per epoch).
    """

    preset: str
    data: str
    out: str
    model: Dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    strategy: str = "auto"
    checkpoint_every: int = 500
    steps_per_execution: int = 50
    jit_compile: Union[bool, str] = "auto"
    seed: int = 0
    restart: bool = False
    max_steps: Optional[int] = None
    keep_checkpoints: int = 2
    skip_corrupt_records: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        require(_is_int(self.epochs) and self.epochs > 0, "epochs", self.epochs,
                "use --epochs with a positive integer")
        require(_is_int(self.batch_size) and self.batch_size > 0, "batch_size", self.batch_size,
                "use --batch-size with a positive integer")
        require_choice("strategy", self.strategy, STRATEGIES)
        require(_is_int(self.checkpoint_every) and self.checkpoint_every > 0, "checkpoint_every",
                self.checkpoint_every, "use a positive integer")
        require(_is_int(self.steps_per_execution) and self.steps_per_execution > 0, "steps_per_execution",
                self.steps_per_execution, "use a positive integer")
        require(isinstance(self.jit_compile, bool) or self.jit_compile == "auto", "jit_compile", self.jit_compile,
                "use auto, true or false")
        require(_is_int(self.keep_checkpoints) and self.keep_checkpoints > 0, "keep_checkpoints",
                self.keep_checkpoints, "use a positive integer such as 2")
        require(isinstance(self.skip_corrupt_records, bool), "skip_corrupt_records", self.skip_corrupt_records,
                "use true or false")
        require(_is_int(self.seed), "seed", self.seed, "use an integer")
        require(self.max_steps is None or (_is_int(self.max_steps) and self.max_steps > 0), "max_steps",
                self.max_steps, "use a positive integer or leave it unset")
        require(isinstance(self.model, dict) and "kind" in self.model, "model", self.model,
                "the model spec needs a 'kind'")
        require(isinstance(self.optimizer, dict) and "name" in self.optimizer, "optimizer", self.optimizer,
                "give a dict with a 'name', e.g. {\"name\": \"adam\", \"learning_rate\": 0.001}")
        require_choice("optimizer.name", str(self.optimizer["name"]).lower(), OPTIMIZERS)
        rate = self.optimizer.get("learning_rate", 1e-3)
        require(isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0,
                "optimizer.learning_rate", rate, "use a positive number such as 0.001")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (``64``, ``0.1``, ``true``, ``[1, 2]``, ``null``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> Tuple[str, Any]:
    """``"model.n_atoms=64"`` -> ``("model.n_atoms", 64)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} is invalid; use key=value such as model.n_atoms=64 or epochs=2")
    return key.strip(), parse_value(value.strip())


def settable_keys(*, model_keys: Iterable[str], optimizer_keys: Iterable[str]) -> list:
    """Every key ``--set`` accepts: TrainConfig fields, ``model.<arg>`` and ``optimizer.<arg>`` (no
    ``optimizer`` field when ``optimizer_keys`` is empty: a model that learns without one)."""
    optimizer_keys = list(optimizer_keys)
    fields = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name not in LOCATION_FIELDS and (optimizer_keys or f.name != "optimizer")]
    return sorted(fields) + [f"model.{key}" for key in sorted(set(model_keys))] + \
        [f"optimizer.{key}" for key in sorted(set(optimizer_keys))]


def apply_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any], *,
                    model_keys: Iterable[str], optimizer_keys: Iterable[str]) -> Dict[str, Any]:
    """TrainConfig fields (``settings``, with nested ``model`` and ``optimizer`` dicts) with ``overrides``
    (``{"model.n_atoms": 64, "epochs": 2}``) applied; raises ConfigError listing the valid keys.
    ``optimizer_keys`` is empty for a model that learns without an outer optimizer."""
    result = dict(settings)
    result["model"] = dict(settings.get("model", {}))
    result["optimizer"] = dict(settings.get("optimizer", {}))
    optimizer_keys = list(optimizer_keys)
    valid = settable_keys(model_keys=model_keys, optimizer_keys=optimizer_keys)
    for key, value in overrides.items():
        if key not in valid and not optimizer_keys and key.partition(".")[0] == "optimizer":
            raise ConfigError(f"--set key {key!r} is invalid; this model ({result['model'].get('kind')}) learns "
                              f"without an outer optimizer, so it uses only: {', '.join(valid)}")
        if key not in valid:
            raise ConfigError(f"--set key {key!r} is invalid; use one of: {', '.join(valid)}")
        section, _, name = key.partition(".")
        if name:
            result[section][name] = value
        else:
            result[key] = value
    return result
